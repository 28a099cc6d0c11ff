"""The scale-out benchmark cannot rot: ``python -m bench cluster --smoke`` starts stock Rasa in
one process and in its multi-process set-up (``SANIC_WORKERS=2``, Redis lock store, PostgreSQL
tracker store), one hub and two hubs behind HAProxy on the trained model, and measures every
set-up with no errors, plus agent → customer delivery on one hub and across two."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SETUPS = {"rasa1", "rasa2", "hub1", "hub2"}


@pytest.mark.slow
@pytest.mark.model
def test_bench_cluster_smoke_measures_every_setup(trained_model: Path) -> None:
    if shutil.which("redis-server") is None:
        pytest.fail("redis-server is not installed (apt-get install redis-server)")
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "cluster", "--smoke", "--model", str(trained_model)],
        cwd=ROOT, capture_output=True, text=True, timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    last = [ln for ln in proc.stdout.splitlines() if ln.strip()][-1]
    assert last.startswith("BENCH_CLUSTER "), last
    values = dict(kv.split("=", 1) for kv in last.split()[1:])
    for setup in SETUPS:
        rate = float(values[f"{setup}_c4_msgs_per_s"])
        assert math.isfinite(rate) and rate > 0, (setup, values)
        assert float(values[f"{setup}_c4_p99_ms"]) > 0, (setup, values)
    for setup in ("hub1", "hub2"):
        assert float(values[f"{setup}_delivery_p99_ms"]) > 0, values

    report = json.loads((ROOT / "bench" / "results" / "latest-cluster-smoke.json").read_text())
    assert len(report["levels"]) == 4
    for level in report["levels"]:
        assert level["errors"] == 0, level
        assert level["messages"] == 16, level  # 4 conversations × 4 turns, every turn answered
        assert level["bot_replies"] >= level["messages"], level
        assert level["handed_off"] == 0, level
    assert [d["across_hubs"] for d in report["delivery"]] == [False, True]
    assert all(d["samples"] == 5 for d in report["delivery"])
