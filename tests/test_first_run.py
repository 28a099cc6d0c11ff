"""``python -m bench first-run``: the table and verdicts (pure), and, marked slow, the harness end to
end on this checkout with this venv and a seeded model cache (clone → serve → /healthz, cleanup)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench import first_run

ROOT = Path(__file__).resolve().parent.parent

MET = {"clone_s": 1.0, "install_s": 150.0, "train_s": 90.0, "start_s": 12.0, "total_s": 253.0,
       "model_mb": 3.1, "cold_start_s": 8.0, "not_fresh": [], "train_cpu_s": 101.4, "cold_start_cpu_s": 15.0}


def _by_label(report: dict[str, object]) -> dict[str, list[str]]:
    return {row[0]: row for row in first_run.rows(report)}


def test_rows_show_value_target_and_verdict() -> None:
    rows = _by_label(MET)
    assert rows["train (make train)"] == ["train (make train)", "90.0 s", "≤ 120 s", "yes", "101 s"]
    assert rows["install (make install)"][2:] == ["-", "-", "-"]  # no target of its own; no CPU figure here
    assert rows["model on disk"][1:] == ["3.1 MB", "≤ 30 MB", "yes", "-"]
    assert rows["cold start (second serve)"][4] == "15 s"
    assert first_run.all_met(MET)


def test_a_missed_target_says_no() -> None:
    report = {**MET, "total_s": 301.0}
    assert _by_label(report)["total: clone → /healthz 200"][3] == "NO"
    assert not first_run.all_met(report)


def test_an_unmeasured_phase_is_not_met() -> None:
    report = {k: v for k, v in MET.items() if k != "cold_start_s"}
    assert _by_label(report)["cold start (second serve)"][1:4] == ["n/a s", "≤ 10 s", "n/a"]
    assert not first_run.all_met(report)


def test_phases_that_were_not_fresh_are_marked() -> None:
    rows = _by_label({**MET, "not_fresh": ["install_s"]})
    assert rows["install (make install)"][1] == "150.0 * s"
    assert rows["train (make train)"][1] == "90.0 s"


def test_table_is_aligned() -> None:
    lines = first_run.table(first_run.rows(MET)).splitlines()
    assert lines[0].split() == ["phase", "measured", "target", "met?", "CPU"]
    second = len(lines[1].split("  ")[0]) + 2  # where the dashes under "measured" start
    assert second == max(len(row[0]) for row in first_run.rows(MET)) + 2
    for line in lines:
        assert line[second - 2:second] == "  " and line[second] != " ", line


def test_fresh_env_drops_this_checkout_and_empties_the_caches(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in (("PYTHONPATH", "/x"), ("VIRTUAL_ENV", "/v"), ("HUMANLINE_MODEL", "/m.tar.gz"),
                        ("DATABASE_URL", "postgresql://x"), ("UV_CACHE_DIR", "/warm"),
                        ("HUMANLINE_BRAIN_WORKERS", "1")):
        monkeypatch.setenv(name, value)
    env = first_run.fresh_env(tmp_path, skip_install=False)
    for name in ("PYTHONPATH", "VIRTUAL_ENV", "HUMANLINE_MODEL", "DATABASE_URL", "HUMANLINE_BRAIN_WORKERS"):
        assert name not in env
    assert env["UV_CACHE_DIR"] == str(tmp_path / "uv-cache") and env["PIP_NO_CACHE_DIR"] == "1"
    assert env["HUMANLINE_MODEL_CACHE"] == str(tmp_path / "model-cache")
    assert env["PATH"] == os.environ["PATH"]
    assert "UV_CACHE_DIR" not in first_run.fresh_env(tmp_path, skip_install=True)


def test_tree_cpu_sums_a_process_and_its_descendants(tmp_path: Path) -> None:
    tick = os.sysconf("SC_CLK_TCK")

    def stat(pid: int, ppid: int, utime: int, stime: int, cutime: int = 0, comm: str = "python") -> None:
        (tmp_path / str(pid)).mkdir()
        # pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime cutime cstime
        (tmp_path / str(pid) / "stat").write_text(
            f"{pid} ({comm}) S {ppid} 1 1 0 -1 0 0 0 0 0 {utime} {stime} {cutime} 0 20 0\n")

    stat(10, 1, 2 * tick, tick, cutime=tick, comm="make (x) y")  # 4 s, a comm with spaces and ")"
    stat(11, 10, 5 * tick, 0)  # child: 5 s
    stat(12, 11, tick, tick)  # grandchild: 2 s
    stat(20, 1, 100 * tick, 0)  # unrelated
    assert first_run.tree_cpu_s(10, proc_root=tmp_path) == pytest.approx(11.0)
    assert first_run.tree_cpu_s(11, proc_root=tmp_path) == pytest.approx(7.0)
    assert first_run.tree_cpu_s(99, proc_root=tmp_path) == 0.0


@pytest.mark.slow
@pytest.mark.model
def test_first_run_quick_check_end_to_end(trained_model: Path) -> None:
    """Clone, no-op install, a seeded model cache, two serves to /healthz 200, the box shown, the
    temporary folder removed; about a minute."""
    before = set(Path("/tmp").glob("humanline-first-run-*"))
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "first-run", "--skip-install", "--seed-model", str(trained_model), "--quiet"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads((ROOT / "bench" / "results" / "first_run-quick.json").read_text())
    assert "error" not in report
    assert report["banner_shown"] and report["demo_password_shown"]
    for key in ("clone_s", "install_s", "train_s", "start_s", "total_s", "cold_start_s", "model_mb", "start_cpu_s",
                "cold_start_cpu_s"):
        assert isinstance(report[key], float) and report[key] >= 0, key
    for key in ("start_s", "cold_start_s", "start_cpu_s", "cold_start_cpu_s"):  # (a no-op install may round to 0)
        assert report[key] > 0, key
    assert report["total_s"] >= report["train_s"] + report["start_s"]
    assert report["model_mb"] == round(trained_model.stat().st_size / 1e6, 2)  # the seed, renamed
    assert report["not_fresh"] == ["install_s", "train_s"]
    assert "cold start (second serve)" in proc.stdout
    assert set(Path("/tmp").glob("humanline-first-run-*")) == before  # cleaned up
