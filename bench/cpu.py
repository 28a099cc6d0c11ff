"""CPU seconds per customer turn of the hub process, and of its brain workers.

``python -m bench.cpu [--concurrency 50] [--conversations 100]`` starts the action server and the
hub (SQLite, as ``python -m bench`` does), warms it up, then runs a fixed number of scripted
conversations and reads the CPU time (user + system, ``/proc/<pid>/stat``) of the hub process and
of its children (the brain workers) before and after. Unlike throughput, CPU per turn does not
depend much on what else the machine is doing, so it compares two versions of the hub on a shared
machine. Prints one line: ``CPU hub_ms_per_turn=… workers_ms_per_turn=… turns=… msg_s=…``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import tempfile
from pathlib import Path

from bench import load, servers


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of one process, in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        kids = (task / "children").read_text().split()
        found.extend(int(k) for k in kids)
    return found


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.cpu")
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--conversations", type=int, default=100)
    parser.add_argument("--model")
    parser.add_argument("--profile", help="write a py-spy profile (raw, collapsed stacks) of the hub here")
    parser.add_argument("--gil", action="store_true", help="profile only what holds the GIL (CPU)")
    args = parser.parse_args()
    from bot.training import ensure_model

    model = Path(args.model) if args.model else ensure_model()
    servers.raise_file_limit()
    workdir = Path(tempfile.mkdtemp(prefix="humanline-cpu-"))
    db = f"sqlite:///{workdir / 'hub.db'}"
    started: list[servers.Server] = []
    try:
        servers.run_cli(["migrate"], db)
        actions = servers.start_action_server(workdir, db)
        started.append(actions)
        hub, _ = servers.start_hub(workdir, model, actions.port, db, {})
        started.append(hub)
        url = f"ws://127.0.0.1:{hub.port}/ws/chat"
        asyncio.run(load.run_level("hub", url, 4, 8))
        pids = [hub.proc.pid, *children(hub.proc.pid)]
        spy = None
        if args.profile:  # py-spy (beside this Python) samples the hub process during the run
            import subprocess
            import sys

            gil = ["--gil"] if args.gil else []  # only the thread holding the GIL: CPU, not waiting
            spy = subprocess.Popen([str(Path(sys.executable).parent / "py-spy"), "record", "-p", str(pids[0]),
                                    "-f", "raw", "-o", args.profile, "-r", "200", *gil],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        before = [cpu_seconds(p) for p in pids]
        res = asyncio.run(load.run_level("hub", url, args.concurrency, args.conversations))
        after = [cpu_seconds(p) for p in pids]
        if spy is not None:
            import signal

            spy.send_signal(signal.SIGINT)
            spy.wait(timeout=60)
        turns = res.messages
        hub_ms = (after[0] - before[0]) * 1000 / max(1, turns)
        workers_ms = sum(a - b for a, b in zip(after[1:], before[1:], strict=True)) * 1000 / max(1, turns)
        msg_s = turns / res.seconds if res.seconds else 0.0
        print(f"CPU hub_ms_per_turn={hub_ms:.2f} workers_ms_per_turn={workers_ms:.2f} turns={turns} "
              f"errors={res.errors} msg_s={msg_s:.1f} workers={len(pids) - 1} "
              f"loadavg={os.getloadavg()[0]:.2f}")
        return 0 if res.errors == 0 else 1
    finally:
        for s in reversed(started):
            s.stop()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
