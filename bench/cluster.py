"""``python -m bench.cluster``: one hub against two hubs behind HAProxy, on PostgreSQL and Redis.

Every hub is a real process, ``python -m tests.cluster_hub`` — the hub with an instant echoing
fake brain, so the figures are the hub's, the bus's and the balancer's cost, not Rasa's. Three
set-ups on one fresh PostgreSQL database, in one run:

* ``1 hub``: one hub without Redis (the in-process bus), customers connected to it directly;
* ``1 hub + Redis``: one hub with ``REDIS_URL`` (every frame also published, every agent event
  through the stream);
* ``2 hubs + HAProxy``: two hubs with Redis behind HAProxy (round-robin).

For each: customer messages per second and latency (send → bot reply) at the given concurrency
levels (``bench.load.run_level``), and agent → customer delivery latency (the agent's message
sent → the customer's frame), with the customer and the agent on different hubs for the
two-hub set-up. All processes share this machine's cores with the load generator; read the
ratio, not the absolute numbers. Prints a table and a last line ``BENCH_CLUSTER …``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from bench import load


def _login(url: str, username: str) -> str:
    req = urllib.request.Request(url + "/api/agents/login",
                                 data=json.dumps({"username": username, "password": "password-123"}).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return str(json.loads(r.read())["token"])


async def delivery_latency(customer_ws: str, agent_ws: str, token: str, samples: int) -> list[float]:
    """Agent message sent → the customer's frame, in ms, for one conversation handed to the agent."""
    from bot.client import ChatClient
    from tests.hubtools import AgentClient

    agent = AgentClient(agent_ws, token)
    await agent.connect()
    chat = ChatClient(customer_ws, lang="en")
    await chat.connect()
    await chat.say_and_ack("I want to talk to a human")
    cid = chat.conversation_id
    # This conversation's assignment: earlier handed-off conversations may be waiting in the queue.
    await agent.wait_for(lambda f: f["type"] == "assigned" and f.get("conversation_id") == cid, 30)
    await chat.wait_for(lambda f: f["type"] == "status" and f.get("status") == "agent", 30)
    out = []
    for i in range(samples):
        text = f"bench {i}"
        start = time.perf_counter()
        await agent.send({"type": "message", "conversation_id": cid, "text": text})
        await chat.wait_for(lambda f, t=text: f["type"] == "message" and f.get("text") == t, 10)
        out.append((time.perf_counter() - start) * 1000)
    await agent.send({"type": "resolve", "conversation_id": cid})
    await chat.close()
    await agent.close()
    return out


def _pct(values: list[float], p: float) -> float:
    return load.percentile(values, p) if values else float("nan")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.cluster")
    parser.add_argument("--levels", default="10,50")
    parser.add_argument("--conversations", type=int, default=0, help="per level (default 2 × the level, ≥ 40)")
    parser.add_argument("--deliveries", type=int, default=200)
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/test")
    args = parser.parse_args(argv)

    from bot.cluster import render_haproxy_config, start_haproxy
    from bot.services.agents import AgentService
    from bot.store.db import Database
    from tests.faultkit import HubProcess, fresh_postgres_database, http_status, wait_until
    from tests.hubtools import free_port
    from tests.test_cluster import RedisServer

    levels = [int(x) for x in args.levels.split(",") if x]
    workdir = Path(tempfile.mkdtemp(prefix="humanline-bench-cluster-"))
    redis_server = RedisServer(workdir)
    redis_server.start()
    rows: list[dict[str, Any]] = []
    procs: list[HubProcess] = []
    haproxy = None
    try:
        with fresh_postgres_database(args.postgres) as url:
            db = Database(url)
            db.migrate()
            for name in ("solo", "redis1", "left", "right"):
                AgentService(db).create(name, name.title(), "password-123", ["general"], "agent")
            base = {"HUMANLINE_RATE_LIMIT": "100000", "HUMANLINE_NEW_VISITORS_PER_MINUTE": "100000",
                    "HUMANLINE_HELLOS_PER_MINUTE": "100000", "HUMANLINE_SOCKETS_PER_ADDRESS": "100000",
                    "HUMANLINE_BRAIN_TIMEOUT": "10", "HUMANLINE_TURN_RETRY_AFTER": "60"}
            with_redis = {**base, "REDIS_URL": redis_server.url}
            solo = HubProcess(workdir, url, module="tests.cluster_hub", env=base, name="solo")
            one = HubProcess(workdir, url, module="tests.cluster_hub", env=with_redis, name="redis1")
            pair = [HubProcess(workdir, url, module="tests.cluster_hub", env=with_redis, name=f"hub{i}")
                    for i in (1, 2)]
            procs = [solo, one, *pair]
            for p in procs:
                p.start()
            for p in procs:
                p.wait_healthy()
            lb_port = free_port()
            haproxy = start_haproxy(render_haproxy_config(f"127.0.0.1:{lb_port}", [(p.name, p.port) for p in pair]),
                                    workdir)
            lb = f"http://127.0.0.1:{lb_port}"
            wait_until(lambda: http_status(lb + "/healthz") == 200, 20, "HAProxy answers")

            setups = [
                ("1 hub", solo.ws_url, (solo.ws_url, solo.agent_ws_url, _login(solo.url, "solo"))),
                ("1 hub + Redis", one.ws_url, (one.ws_url, one.agent_ws_url, _login(one.url, "redis1"))),
                ("2 hubs + HAProxy", lb.replace("http://", "ws://") + "/ws/chat",
                 (pair[0].ws_url, pair[1].agent_ws_url, _login(pair[1].url, "right"))),
            ]
            for name, ws_url, (cust, agent_ws, token) in setups:
                for c in levels:
                    n = args.conversations or max(2 * c, 40)
                    r = asyncio.run(load.run_level(name, ws_url, c, n))
                    rows.append({"setup": name, "concurrency": c, "msgs_per_s": round(r.throughput, 1),
                                 "p50_ms": round(r.pct(50), 1), "p99_ms": round(r.pct(99), 1), "errors": r.errors})
                    print(rows[-1], flush=True)
                lat = asyncio.run(delivery_latency(cust, agent_ws, token, args.deliveries))
                rows.append({"setup": name, "delivery_p50_ms": round(statistics.median(lat), 2),
                             "delivery_p99_ms": round(_pct(lat, 99), 2)})
                print(rows[-1], flush=True)
            for p in procs:  # before the database is dropped
                p.stop()
            db.dispose()
    finally:
        for p in procs:
            p.stop()
        if haproxy is not None:
            haproxy.terminate()
            haproxy.wait(10)
        redis_server.stop()

    header = ["setup", "concurrency", "msgs/s", "p50 ms", "p99 ms", "errors"]
    lines = [header]
    for r in rows:
        if "concurrency" in r:
            lines.append([r["setup"], str(r["concurrency"]), str(r["msgs_per_s"]), str(r["p50_ms"]), str(r["p99_ms"]),
                          str(r["errors"])])
    widths = [max(len(x[i]) for x in lines) for i in range(len(header))]
    print()
    for line in lines:
        print("  ".join(c.rjust(w) for c, w in zip(line, widths, strict=True)))
    print()
    print("agent → customer delivery (customer and agent on different hubs for 2 hubs):")
    for r in rows:
        if "delivery_p99_ms" in r:
            print(f"  {r['setup']:>18}: p50 {r['delivery_p50_ms']} ms, p99 {r['delivery_p99_ms']} ms")
    pair_rows = [r for r in rows if r["setup"] == "2 hubs + HAProxy" and "delivery_p99_ms" in r]
    print("BENCH_CLUSTER " + " ".join(
        f"{r['setup'].replace(' ', '_').replace('+', '')}_c{r['concurrency']}_msgs_per_s={r['msgs_per_s']}"
        for r in rows if "concurrency" in r) + (f" cross_hub_delivery_p99_ms={pair_rows[0]['delivery_p99_ms']}"
                                                 if pair_rows else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
