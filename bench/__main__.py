"""``make bench``: the Humanline hub against stock ``rasa run`` on the same model, in one run.

Prints a table, writes ``bench/results/bench-<time>.json`` and ``latest.json``, a latency plot
``docs/bench-latency.png``, and a last line::

    BENCH ratio_throughput=… hub_p99_ms=… rasa_p99_ms=… handoff_notify_p99_ms=… kib_per_idle_conn=… cold_start_s=…

``python -m bench --smoke`` is the small run kept in ``make test`` so the harness cannot rot.
``python -m bench first-run`` times a fresh clone to a served demo instead (:mod:`bench.first_run`).
``python -m bench cluster`` compares stock Rasa (one process; ``SANIC_WORKERS=2`` with Redis and
PostgreSQL) with one hub and two hubs behind HAProxy (:mod:`bench.scaleout`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import load, servers

RESULTS = Path(__file__).resolve().parent / "results"
PLOT = Path(__file__).resolve().parent.parent / "docs" / "bench-latency.png"
TARGET_LEVEL = 50


def _progress(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def _table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=False)]
    line = lambda r: "  ".join(str(c).rjust(w) for c, w in zip(r, widths, strict=False))  # noqa: E731
    return "\n".join([line(header), line(["-" * w for w in widths]), *(line(r) for r in rows)])


def _plot(levels: list[dict[str, Any]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for target, style in (("hub", "o-"), ("rasa", "s--")):
        pts = [lv for lv in levels if lv["target"] == target]
        xs = [p["concurrency"] for p in pts]
        ax.plot(xs, [p["p50_ms"] for p in pts], style, label=f"{target} p50")
        ax.plot(xs, [p["p99_ms"] for p in pts], style, alpha=0.5, label=f"{target} p99")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("concurrent conversations")
    ax.set_ylabel("send → first reply (ms)")
    ax.set_title("Humanline hub vs stock rasa run, same model")
    ax.legend()
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    PLOT.parent.mkdir(exist_ok=True)
    fig.savefig(PLOT, dpi=110)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "first-run":
        from bench.first_run import main as first_run

        return first_run(argv[1:])
    if argv and argv[0] == "cluster":
        from bench.scaleout import main as cluster

        return cluster(argv[1:])
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny run for the test suite")
    parser.add_argument("--levels", default="1,10,50,200", help="concurrency levels")
    parser.add_argument("--conversations", type=int, default=0, help="conversations per level")
    parser.add_argument("--idle", default="2000,10000", help="idle connection counts")
    parser.add_argument("--handoffs", type=int, default=100, help="handoff latency samples")
    parser.add_argument("--parallel-start", action="store_true",
                        help="start stock rasa and the hub together (faster; cold start is then an upper bound)")
    parser.add_argument("--model", help="model archive (default: train or reuse the current one)")
    args = parser.parse_args(argv)
    if args.smoke:
        args.levels, args.idle, args.handoffs = "1,4", "50", 5

    from bot.training import ensure_model

    model = Path(args.model) if args.model else ensure_model()
    levels = [int(x) for x in args.levels.split(",") if x]
    idle_counts = [int(x) for x in args.idle.split(",") if x]
    limit = servers.raise_file_limit()
    _progress(f"model {model.name}; open-file limit {limit}")

    workdir = Path(tempfile.mkdtemp(prefix="humanline-bench-"))
    hub_db = f"sqlite:///{workdir / 'hub.db'}"
    started: list[servers.Server] = []
    report: dict[str, Any] = {
        "model": model.name, "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
        # The hub inherits the environment: HUMANLINE_BRAIN_WORKERS unset means one per CPU.
        "brain_workers": os.environ.get("HUMANLINE_BRAIN_WORKERS") or f"auto ({os.cpu_count()} CPUs)",
        "loadavg_start": [round(x, 2) for x in os.getloadavg()],
    }
    try:
        _progress("migrating the hub database and creating a bench agent")
        servers.run_cli(["migrate"], hub_db)
        servers.run_cli(
            ["create-agent", "--username", "bench", "--display-name", "Bench Agent",
             "--skills", "general,service_supervision,finance_compliance,data_protection,account_services",
             "--password", "bench-password-123"],
            hub_db,
        )
        _progress("starting the action server")
        actions = servers.start_action_server(workdir, hub_db)
        started.append(actions)
        if args.smoke or args.parallel_start:
            # Both at once to keep the smoke run short; the cold start is then an upper bound.
            _progress("starting stock rasa run (REST channel) and the hub together")
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(2) as pool:
                f_rasa = pool.submit(servers.start_stock_rasa, workdir, model, actions.port, hub_db)
                f_hub = pool.submit(servers.start_hub, workdir, model, actions.port, hub_db, {})
                # Whichever starts is stopped in `finally`, even when the other fails.
                f_rasa.add_done_callback(lambda f: None if f.exception() else started.append(f.result()))
                f_hub.add_done_callback(lambda f: None if f.exception() else started.append(f.result()[0]))
                rasa = f_rasa.result()
                hub, cold = f_hub.result()
        else:
            _progress("starting stock rasa run (REST channel)")
            rasa = servers.start_stock_rasa(workdir, model, actions.port, hub_db)
            started.append(rasa)
            _progress("starting the hub alone (cold start measured to /healthz)")
            hub, cold = servers.start_hub(workdir, model, actions.port, hub_db, {})
            started.append(hub)
        report["cold_start_s"] = round(cold, 2)
        _progress(f"hub ready in {cold:.1f} s")

        rest_url = f"http://127.0.0.1:{rasa.port}/webhooks/rest/webhook"
        ws_url = f"ws://127.0.0.1:{hub.port}/ws/chat"
        level_rows: list[dict[str, Any]] = []
        # Warm both up (the first predictions build TensorFlow graphs); not recorded.
        for target, url in (("rasa", rest_url), ("hub", ws_url)):
            warm = asyncio.run(load.run_level(target, url, 2, 4))
            _progress(f"{target} warm-up: {warm.messages} turns, {warm.errors} errors")
        for c in levels:
            # Two conversations per slot up to 50, one per slot above (keeps the run ~20 min).
            n = args.conversations or max(2 * c if c <= 50 else c, 20 if not args.smoke else 4)
            for target, url in (("rasa", rest_url), ("hub", ws_url)):
                _progress(f"{target}: {n} conversations, {c} at a time")
                res = asyncio.run(load.run_level(target, url, c, n))
                level_rows.append(res.as_dict())
        report["levels"] = level_rows

        _progress("handoff notification latency")
        token = _agent_token(hub.port)
        lat = asyncio.run(
            load.handoff_latency(ws_url, f"ws://127.0.0.1:{hub.port}/ws/agent", token, args.handoffs)
        )
        report["handoff_notify"] = load.summarise(lat)

        report["idle"] = []
        for count in idle_counts:
            _progress(f"idle capacity: {count} customer WebSockets")
            report["idle"].append(
                asyncio.run(load.idle_connections(ws_url, count, 20, lambda: servers.rss_kib(hub.proc.pid)))
            )
    finally:
        for s in reversed(started):
            s.stop()
    report["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    report["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S")

    _print(report)
    RESULTS.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    suffix = "-smoke" if args.smoke else ""
    for name in (f"bench-{stamp}{suffix}.json", f"latest{suffix}.json"):
        (RESULTS / name).write_text(json.dumps(report, indent=2, ensure_ascii=False))
    if not args.smoke:
        _plot(report["levels"])
    print(_bench_line(report), flush=True)
    return 0


def _agent_token(port: int) -> str:
    import urllib.request

    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/api/agents/login",
        data=json.dumps({"username": "bench", "password": "bench-password-123"}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(req, timeout=10) as r:
        return str(json.load(r)["token"])


def _at(report: dict[str, Any], target: str, c: int) -> dict[str, Any]:
    rows = [r for r in report["levels"] if r["target"] == target and r["concurrency"] == c]
    return rows[0] if rows else {}


def _print(report: dict[str, Any]) -> None:
    levels = sorted({r["concurrency"] for r in report["levels"]})
    rows = []
    for c in levels:
        h, r = _at(report, "hub", c), _at(report, "rasa", c)
        ratio = h["msgs_per_s"] / r["msgs_per_s"] if r.get("msgs_per_s") else float("nan")
        rows.append([
            c, r["msgs_per_s"], h["msgs_per_s"], f"{ratio:.2f}",
            r["p50_ms"], h["p50_ms"], r["p95_ms"], h["p95_ms"], r["p99_ms"], h["p99_ms"],
            r["errors"], h["errors"], f"{r.get('bot_replies', '?')}/{h.get('bot_replies', '?')}",
            h.get("handed_off", "?"),
        ])
    print()
    print(_table(rows, ["conc", "rasa msg/s", "hub msg/s", "hub÷rasa", "rasa p50", "hub p50",
                        "rasa p95", "hub p95", "rasa p99", "hub p99", "rasa err", "hub err",
                        "bot replies r/h", "hub handed off"]))
    hn = report["handoff_notify"]
    print(f"\nhandoff → agent notification: p50 {hn['p50_ms']} ms, p99 {hn['p99_ms']} ms "
          f"({hn['samples']} samples)")
    for idle in report["idle"]:
        print(
            f"idle {idle['requested']:>6} sockets: opened {idle['opened']}, still open {idle['still_open']}, "
            f"{idle['kib_per_conn']} KiB each, probe answered {idle['probe_answered']}/{idle['probe']}"
        )
    print(f"cold start to /healthz: {report['cold_start_s']} s")
    print(f"brain workers: {report.get('brain_workers')}; load average (1/5/15 min) at start "
          f"{report.get('loadavg_start')}, at end {report.get('loadavg_end')}\n")


def _bench_line(report: dict[str, Any]) -> str:
    levels = sorted({r["concurrency"] for r in report["levels"]})
    c = TARGET_LEVEL if TARGET_LEVEL in levels else levels[-1]
    h, r = _at(report, "hub", c), _at(report, "rasa", c)
    ratio = h["msgs_per_s"] / r["msgs_per_s"] if r.get("msgs_per_s") else float("nan")
    idle = max(report["idle"], key=lambda i: i["requested"]) if report["idle"] else {}
    return (
        f"BENCH ratio_throughput={ratio:.2f} hub_p99_ms={h['p99_ms']} rasa_p99_ms={r['p99_ms']} "
        f"handoff_notify_p99_ms={report['handoff_notify']['p99_ms']} "
        f"kib_per_idle_conn={idle.get('kib_per_conn', 'nan')} cold_start_s={report['cold_start_s']}"
    )


if __name__ == "__main__":
    sys.exit(main())
