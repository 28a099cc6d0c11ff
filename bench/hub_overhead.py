"""The hub's own cost per turn, without Rasa: a hub on a fresh SQLite database with an instant
fake brain (``tests.hubtools.GreeterBrain``), driven by the same WebSocket scripts as ``python -m
bench``. Client and server share this process, so the figures are a lower bound of the hub's
capacity; they isolate store and protocol overhead for profiling (``py-spy record -p <pid>``).

    .venv/bin/python -m bench.hub_overhead [--levels 10,50] [--wait 0]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from pathlib import Path

from bench import load


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.hub_overhead")
    parser.add_argument("--levels", default="10,50")
    parser.add_argument("--wait", type=float, default=0.0, help="seconds to wait before the load (attach a profiler)")
    args = parser.parse_args()
    from tests.hubtools import GreeterBrain, running_hub

    with running_hub(Path(tempfile.mkdtemp(prefix="humanline-overhead-")), GreeterBrain(),
                     rate_limit_per_10s=100_000) as hub:
        print("pid", os.getpid(), flush=True)
        time.sleep(args.wait)
        for c in (int(x) for x in args.levels.split(",") if x):
            print(asyncio.run(load.run_level("hub", hub.ws_url, c, max(2 * c, 60))).as_dict(), flush=True)


if __name__ == "__main__":
    main()
