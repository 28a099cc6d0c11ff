"""The benchmark harness cannot rot: ``python -m bench --smoke`` runs end to end on the trained
model (stock ``rasa run`` and the hub side by side, handoff latency, a few idle sockets) and
prints its ``BENCH`` line with numbers and no errors."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FIELDS = ("ratio_throughput", "hub_p99_ms", "rasa_p99_ms", "handoff_notify_p99_ms", "kib_per_idle_conn", "cold_start_s")


@pytest.mark.slow
@pytest.mark.model
def test_bench_smoke_prints_a_numeric_bench_line(trained_model: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--smoke", "--model", str(trained_model)],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
    last = lines[-1]
    assert last.startswith("BENCH "), last
    values = dict(kv.split("=", 1) for kv in last.split()[1:])
    assert set(values) == set(FIELDS), values
    for name in FIELDS:
        number = float(values[name])
        assert math.isfinite(number), (name, values[name])
        if name == "kib_per_idle_conn":
            # An RSS difference over the smoke's few sockets: it may be a little below zero (the
            # allocator returned memory meanwhile) but never absent, and never near a megabyte.
            assert -64 < number < 1024, (name, values[name])
        else:
            assert number >= 0, (name, values[name])
    assert re.search(r"hub÷rasa", proc.stdout)

    report = json.loads((ROOT / "bench" / "results" / "latest-smoke.json").read_text())
    for level in report["levels"]:
        assert level["errors"] == 0, level
        assert level["messages"] > 0, level
        assert level.get("bot_replies", level["messages"]) >= level["messages"], level
        assert level.get("handed_off", 0) == 0, level
    assert report["handoff_notify"]["samples"] > 0
    for idle in report["idle"]:
        assert idle["opened"] == idle["requested"] == idle["still_open"], idle
        assert idle["probe_answered"] == idle["probe"], idle
