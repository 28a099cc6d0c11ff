"""Rasa's own tools work on this repository as on any Rasa project: ``rasa data validate`` is
clean with ``--fail-on-warnings``, and the conversation tests in ``tests/stories`` pass
``rasa test core`` on the trained model without a single prediction error."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
RASA = str(Path(sys.executable).parent / "rasa")


def _rasa(*args: str, timeout: float = 1200) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.run([RASA, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
def test_rasa_data_validate_is_clean() -> None:
    done = _rasa("data", "validate", "--fail-on-warnings")
    assert done.returncode == 0, (done.stdout + done.stderr)[-6000:]


@pytest.mark.model
@pytest.mark.slow
def test_conversation_tests_pass_rasa_test(trained_model: Path, tmp_path: Path) -> None:
    stories = sorted((ROOT / "tests" / "stories").glob("*.yml"))
    assert stories, "no conversation tests in tests/stories"
    done = _rasa(
        "test", "core", "--model", str(trained_model), "--stories", "tests/stories",
        "--out", str(tmp_path), "--fail-on-prediction-errors", "--no-plot",
    )
    failed = tmp_path / "failed_test_stories.yml"
    detail = failed.read_text()[-6000:] if failed.exists() else (done.stdout + done.stderr)[-6000:]
    assert done.returncode == 0, detail
