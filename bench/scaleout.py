"""``python -m bench cluster`` (``make bench-cluster``): hubs and stock Rasa, one and several
processes, on the trained model, in one run.

Four set-ups, started and measured one after the other (the two stock Rasa servers are started
together; each set-up is stopped before the next starts, so idle processes hold no PostgreSQL
connections or memory) with the same scripted conversations (``bench.load.SCRIPTS``) at each
concurrency level, after a warm-up:

* ``rasa 1 proc``: stock ``rasa run`` (REST channel), one process, SQLite tracker store — the
  peer of ``make bench``;
* ``rasa 2 workers``: stock ``rasa run`` in Rasa's own multi-process set-up: ``SANIC_WORKERS=2``,
  ``RedisLockStore`` and the SQL tracker store on PostgreSQL;
* ``1 hub``: one hub (``python -m bot serve``) on PostgreSQL, no Redis;
* ``2 hubs``: two hubs on PostgreSQL + Redis behind HAProxy (round-robin).

The stock servers and the single hub share one action server, the pair has its own on its own
database. Then agent → customer delivery (the agent's message sent → the
customer's frame) on the single hub and across hubs (customer on hub 1, agent on hub 2), with
:func:`bench.cluster.delivery_latency`; while each level runs, the peak number of connections to
the PostgreSQL server (``pg_stat_activity``, every database and user) is sampled. PostgreSQL
databases are fresh ones dropped afterwards; Redis is a private ``redis-server`` on a free port
(the machine's Redis is left alone). Prints a table, writes ``bench/results/cluster-<time>.json``
and ``latest-cluster.json``, and a last line ``BENCH_CLUSTER …``. Every process shares this
machine's cores with the load generator.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from bench import load, servers

RESULTS = Path(__file__).resolve().parent / "results"
SKILLS = ["general", "service_supervision", "finance_compliance", "data_protection", "account_services"]
RASA_1 = "rasa 1 proc (SQLite)"
RASA_2 = "rasa 2 workers (PG + Redis lock)"
HUB_1 = "1 hub (PG)"
HUB_2 = "2 hubs + HAProxy (PG + Redis)"


def _progress(msg: str) -> None:
    print(f"[bench cluster {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def rasa_multi_stores(postgres_url: str, database: str, redis_port: int) -> str:
    """The ``tracker_store`` and ``lock_store`` sections of ``endpoints.yml`` for stock Rasa's
    multi-process set-up (Rasa refuses ``SANIC_WORKERS`` > 1 with its in-memory lock store)."""
    from sqlalchemy.engine import make_url

    pg = make_url(postgres_url)
    return (
        "tracker_store:\n  type: SQL\n  dialect: postgresql\n"
        f"  url: {pg.host or '127.0.0.1'}\n  port: {pg.port or 5432}\n  db: {database}\n"
        f"  username: {pg.username or 'postgres'}\n  password: \"{pg.password or ''}\"\n"
        f"lock_store:\n  type: redis\n  url: 127.0.0.1\n  port: {redis_port}\n  db: 1\n"
        "  key_prefix: benchrasa\n"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench cluster", description=__doc__.splitlines()[0])
    parser.add_argument("--levels", default="10,50", help="concurrency levels")
    parser.add_argument("--conversations", type=int, default=0, help="per level (default 2 × the level, ≥ 20)")
    parser.add_argument("--deliveries", type=int, default=200, help="agent → customer samples per set-up")
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--model", help="model archive (default: train or reuse the current one)")
    parser.add_argument("--smoke", action="store_true", help="tiny run for the test suite")
    args = parser.parse_args(argv)
    if args.smoke:
        args.levels, args.conversations, args.deliveries = "4", 4, 5

    from bench.cluster import delivery_latency
    from bot.cluster import render_haproxy_config, start_haproxy
    from bot.services.agents import AgentService
    from bot.store.db import Database
    from bot.training import ensure_model
    from tests.faultkit import fresh_postgres_database, http_status, wait_until
    from tests.test_cluster import RedisServer

    model = Path(args.model) if args.model else ensure_model()
    levels = [int(x) for x in args.levels.split(",") if x]
    servers.raise_file_limit()
    workdir = Path(tempfile.mkdtemp(prefix="humanline-bench-cluster-"))
    _progress(f"model {model.name}; logs in {workdir}")
    report: dict[str, Any] = {
        "model": model.name, "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "brain_workers_per_hub": os.environ.get("HUMANLINE_BRAIN_WORKERS") or f"auto ({os.cpu_count()} CPUs)",
        "loadavg_start": [round(x, 2) for x in os.getloadavg()], "levels": [], "delivery": [],
    }
    redis_server = RedisServer(workdir)
    redis_server.start()
    started: list[servers.Server] = []
    haproxy: list[subprocess.Popen[bytes]] = []

    def stop_all() -> None:
        for proc in haproxy:
            proc.terminate()
            proc.wait(10)
        for server in reversed(started):
            server.stop()

    try:
        with contextlib.ExitStack() as stack:
            # A database per hub set-up: the pair must not inherit the single hub's conversations
            # (a hub resumes the unfinished turns it finds in the store when it starts).
            hub_db = stack.enter_context(fresh_postgres_database(args.postgres))
            pair_db = stack.enter_context(fresh_postgres_database(args.postgres))
            rasa_db = stack.enter_context(fresh_postgres_database(args.postgres))
            for url, name in ((hub_db, "solo"), (pair_db, "right")):
                db = Database(url)
                db.migrate()
                info = AgentService(db).create(name, name.title(), "password-123", SKILLS, "agent")
                # Room for the conversations a set-up's warm-up may hand off before delivery is measured.
                AgentService(db).set_capacity(info.id, "bench", max_concurrent=100)
                db.dispose()
            stack.callback(stop_all)  # runs first on the way out: every process stops before the drops
            report["pg_max_connections"] = _pg_scalar(args.postgres, "SHOW max_connections")
            _progress("starting the action server")
            actions = servers.start_action_server(workdir, hub_db)
            started.append(actions)
            # One secret for every hub: outside the SQLite demo the hub requires one, and a visitor's
            # token must hold on whichever hub HAProxy picks.
            solo_env = {"HUMANLINE_SECRET": secrets.token_urlsafe(32)}
            redis_env = {**solo_env, "REDIS_URL": redis_server.url}
            multi = rasa_multi_stores(args.postgres, rasa_db.rsplit("/", 1)[1], redis_server.port)

            def start(name: str, fn: Callable[[], servers.Server]) -> Future[servers.Server]:
                f = pool.submit(fn)
                # Whichever starts is stopped by stop_all, even when another fails.
                f.add_done_callback(lambda f: None if f.exception() else started.append(f.result()))
                return f

            def measure(name: str, kind: str, url: str) -> None:
                warm = asyncio.run(load.run_level(kind, url, 4, 8))  # TensorFlow graphs, every worker
                _progress(f"{name} warm-up: {warm.messages} turns, {warm.errors} errors")
                for c in levels:
                    n = args.conversations or max(2 * c, 20)
                    with _ConnectionSampler(args.postgres) as pg:
                        res = asyncio.run(load.run_level(kind, url, c, n))
                    row = {**res.as_dict(), "target": name, "pg_connections_peak": pg.peak}
                    report["levels"].append(row)
                    _progress(f"{name}: {n} conversations, {c} at a time: {row['msgs_per_s']} msg/s, "
                              f"p99 {row['p99_ms']} ms, {row['errors']} errors, "
                              f"PostgreSQL connections (whole server) peak {pg.peak}")

            def deliver(name: str, cust: servers.Server, agent: servers.Server, user: str) -> None:
                _progress(f"{name}: agent → customer delivery, {args.deliveries} samples")
                row: dict[str, Any] = {"setup": name, "across_hubs": cust is not agent}
                try:
                    lat = asyncio.run(delivery_latency(
                        f"ws://127.0.0.1:{cust.port}/ws/chat", f"ws://127.0.0.1:{agent.port}/ws/agent",
                        _login(agent.port, user), args.deliveries))
                    row.update(load.summarise(lat))
                except Exception as exc:  # noqa: BLE001 - reported in the table, the run goes on
                    row.update({"samples": 0, "p50_ms": float("nan"), "p99_ms": float("nan"),
                                "error": f"{type(exc).__name__}: {exc}", "at": _where(exc)})
                report["delivery"].append(row)

            def rest(s: servers.Server) -> str:
                return f"http://127.0.0.1:{s.port}/webhooks/rest/webhook"

            # One set-up at a time: idle processes would hold PostgreSQL connections and memory.
            with ThreadPoolExecutor(2) as pool:
                _progress("starting stock rasa: one process, and SANIC_WORKERS=2")
                f1 = start(RASA_1, lambda: servers.start_stock_rasa(workdir, model, actions.port, hub_db))
                f2 = start(RASA_2, lambda: servers.start_stock_rasa(
                    workdir, model, actions.port, hub_db, multi, {"SANIC_WORKERS": "2"}, "rasa-multi"))
                rasa1, rasa2 = f1.result(), f2.result()
            measure(RASA_1, "rasa", rest(rasa1))
            measure(RASA_2, "rasa", rest(rasa2))
            rasa1.stop()
            rasa2.stop()

            _progress("starting one hub")
            solo = servers.start_hub(workdir, model, actions.port, hub_db, solo_env, "hub-solo")[0]
            started.append(solo)
            measure(HUB_1, "hub", f"ws://127.0.0.1:{solo.port}/ws/chat")
            deliver(HUB_1, solo, solo, "solo")
            solo.stop()

            actions.stop()
            _progress("starting an action server on the pair's database, two hubs and HAProxy")
            pair_actions = servers.start_action_server(workdir, pair_db, "actions-pair")
            started.append(pair_actions)
            with ThreadPoolExecutor(2) as pool:
                fa = start("hub1", lambda: servers.start_hub(workdir, model, pair_actions.port, pair_db, redis_env,
                                                             "hub1")[0])
                fb = start("hub2", lambda: servers.start_hub(workdir, model, pair_actions.port, pair_db, redis_env,
                                                             "hub2")[0])
                hub1, hub2 = fa.result(), fb.result()
            lb_port = servers.free_port()
            haproxy.append(start_haproxy(
                render_haproxy_config(f"127.0.0.1:{lb_port}", [(h.name, h.port) for h in (hub1, hub2)]), workdir))
            wait_until(lambda: http_status(f"http://127.0.0.1:{lb_port}/healthz") == 200, 20, "HAProxy answers")
            measure(HUB_2, "hub", f"ws://127.0.0.1:{lb_port}/ws/chat")
            deliver(HUB_2, hub1, hub2, "right")  # customer on hub 1, agent on hub 2
    finally:
        stop_all()
        redis_server.stop()
    report["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    report["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S")
    print(render(report), flush=True)
    RESULTS.mkdir(exist_ok=True)
    suffix = "-smoke" if args.smoke else ""
    for fname in (f"cluster-{time.strftime('%Y%m%d-%H%M%S')}{suffix}.json", f"latest-cluster{suffix}.json"):
        (RESULTS / fname).write_text(json.dumps(report, indent=2, ensure_ascii=False))
    print(bench_line(report), flush=True)
    return 0


def _pg_scalar(postgres_url: str, sql: str) -> str:
    from sqlalchemy import create_engine, text

    engine = create_engine(postgres_url, future=True)
    try:
        with engine.connect() as conn:
            return str(conn.execute(text(sql)).scalar_one())
    finally:
        engine.dispose()


class _ConnectionSampler:
    """The peak number of connections to the PostgreSQL server (all databases, other users' too),
    sampled every 0.2 s while a level runs."""

    def __init__(self, postgres_url: str) -> None:
        self.url = postgres_url
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        from sqlalchemy import create_engine, text

        engine = create_engine(self.url, future=True, pool_size=1, max_overflow=0)
        try:
            with engine.connect() as conn:
                while not self._stop.wait(0.2):
                    count = int(conn.execute(text("SELECT count(*) FROM pg_stat_activity")).scalar_one())
                    self.peak = max(self.peak, count)
                    conn.rollback()
        except Exception:  # noqa: BLE001 - no free connection left: the peak stays the last seen
            pass
        finally:
            engine.dispose()

    def __enter__(self) -> _ConnectionSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)


def _where(exc: BaseException) -> str:
    """The line of :func:`bench.cluster.delivery_latency` an exception came through."""
    import traceback

    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename.endswith("bench/cluster.py")]
    return f"bench/cluster.py:{frames[-1].lineno} {frames[-1].line}" if frames else "?"


def _login(port: int, username: str) -> str:
    import urllib.request

    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/api/agents/login",
        data=json.dumps({"username": username, "password": "password-123"}).encode(),
        headers={"Content-Type": "application/json"}, method="POST",
    )
    with urllib.request.urlopen(req, timeout=30) as r:
        return str(json.load(r)["token"])


def render(report: dict[str, Any]) -> str:
    """The levels as a Markdown table, then the delivery figures."""
    out = ["| set-up | concurrency | msgs/s | p50 ms | p99 ms | errors | handed off | PG connections peak |",
           "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in sorted(report["levels"], key=lambda r: (r["concurrency"], _order(r["target"]))):
        out.append(f"| {r['target']} | {r['concurrency']} | {r['msgs_per_s']} | {r['p50_ms']} | {r['p99_ms']} "
                   f"| {r['errors']} | {r['handed_off']} | {r['pg_connections_peak']} |")
    out += ["", "| agent → customer delivery | samples | p50 ms | p99 ms |", "| --- | ---: | ---: | ---: |"]
    for d in report["delivery"]:
        where = " (across hubs)" if d["across_hubs"] else ""
        failed = f" — failed: {d['error']} at {d.get('at')}" if d.get("error") else ""
        out.append(f"| {d['setup']}{where}{failed} | {d['samples']} | {d['p50_ms']} | {d['p99_ms']} |")
    out.append(f"\nload average (1/5/15 min) at start {report['loadavg_start']}, at end {report['loadavg_end']}; "
               f"brain workers per hub: {report['brain_workers_per_hub']}; PostgreSQL max_connections "
               f"{report.get('pg_max_connections')} (shared with the machine's other users)")
    return "\n".join(out)


def _order(target: str) -> int:
    return [RASA_1, RASA_2, HUB_1, HUB_2].index(target) if target in (RASA_1, RASA_2, HUB_1, HUB_2) else 9


def bench_line(report: dict[str, Any]) -> str:
    keys = {RASA_1: "rasa1", RASA_2: "rasa2", HUB_1: "hub1", HUB_2: "hub2"}
    parts = [f"{keys[r['target']]}_c{r['concurrency']}_msgs_per_s={r['msgs_per_s']} "
             f"{keys[r['target']]}_c{r['concurrency']}_p99_ms={r['p99_ms']}" for r in report["levels"]]
    parts += [f"{keys[d['setup']]}_delivery_p99_ms={d['p99_ms']}" for d in report["delivery"]]
    return "BENCH_CLUSTER " + " ".join(parts)


if __name__ == "__main__":
    raise SystemExit(main())
