"""The model name follows its inputs: same inputs → same hash, any input change → new hash."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from bot import training


def _project(root: Path) -> Path:
    (root / "data" / "nlu" / "en").mkdir(parents=True)
    (root / "bot" / "nlu").mkdir(parents=True)
    (root / "config.yml").write_text("language: zh\n", encoding="utf-8")
    (root / "domain.yml").write_text("version: '3.1'\nintents: [greet]\n", encoding="utf-8")
    (root / "data" / "nlu" / "en" / "greet.yml").write_text("nlu:\n- intent: greet\n  examples: |\n    - hi\n")
    (root / "data" / "stories.yml").write_text("stories: []\n", encoding="utf-8")
    (root / "bot" / "nlu" / "normalizer.py").write_text("X = 1\n", encoding="utf-8")
    (root / "bot" / "nlu" / "text.py").write_text("Y = 1\n", encoding="utf-8")
    (root / "bot" / "i18n.py").write_text("TEXTS = {}\n", encoding="utf-8")
    (root / "README.md").write_text("not an input\n", encoding="utf-8")
    return root


def test_hash_is_stable(tmp_path: Path) -> None:
    root = _project(tmp_path / "a")
    first = training.model_hash(root)
    assert first == training.model_hash(root)
    assert len(first) == 64
    # the same files elsewhere hash the same: paths are relative to the root
    other = tmp_path / "b"
    shutil.copytree(root, other)
    assert training.model_hash(other) == first
    assert training.model_name(root) == "humanline-" + first[:12]


@pytest.mark.parametrize(
    "path",
    [
        "data/nlu/en/greet.yml", "data/stories.yml", "config.yml", "domain.yml",
        "bot/nlu/normalizer.py", "bot/nlu/text.py",
    ],
)
def test_changing_an_input_changes_the_hash(tmp_path: Path, path: str) -> None:
    root = _project(tmp_path)
    before = training.model_hash(root)
    with (root / path).open("a", encoding="utf-8") as fh:
        fh.write("# changed\n")
    assert training.model_hash(root) != before


def test_new_data_file_and_rename_change_the_hash(tmp_path: Path) -> None:
    root = _project(tmp_path)
    before = training.model_hash(root)
    (root / "data" / "nlu" / "en" / "more.yml").write_text("nlu: []\n", encoding="utf-8")
    added = training.model_hash(root)
    assert added != before
    (root / "data" / "nlu" / "en" / "more.yml").rename(root / "data" / "nlu" / "en" / "other.yml")
    assert training.model_hash(root) != added


def test_unrelated_files_do_not_change_the_hash(tmp_path: Path) -> None:
    root = _project(tmp_path)
    before = training.model_hash(root)
    (root / "README.md").write_text("edited\n", encoding="utf-8")
    # the hub's texts are not an input: editing a message must not retrain the model
    (root / "bot" / "i18n.py").write_text("TEXTS = {'x': 1}\n", encoding="utf-8")
    (root / "data" / "nlu" / "__pycache__").mkdir()
    (root / "data" / "nlu" / "__pycache__" / "x.pyc").write_bytes(b"\0")
    assert training.model_hash(root) == before


def test_domain_directory_is_hashed(tmp_path: Path) -> None:
    root = _project(tmp_path)
    (root / "domain.yml").unlink()
    (root / "domain").mkdir()
    (root / "domain" / "intents.yml").write_text("intents: [greet]\n", encoding="utf-8")
    before = training.model_hash(root)
    (root / "domain" / "intents.yml").write_text("intents: [greet, goodbye]\n", encoding="utf-8")
    assert training.model_hash(root) != before


def test_ensure_model_reuses_models_dir_then_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = _project(tmp_path / "proj")
    cache = tmp_path / "cache"
    monkeypatch.setenv("HUMANLINE_MODEL_CACHE", str(cache))
    name = training.model_name(root) + ".tar.gz"

    def no_training(*args: object, **kwargs: object) -> None:
        raise AssertionError("must not train")

    monkeypatch.setattr(training.subprocess, "run", no_training)
    monkeypatch.setattr(training.subprocess, "Popen", no_training)
    assert training.current_model(root) is None

    cache.mkdir()
    (cache / name).write_bytes(b"model")
    got = training.ensure_model(root=root)
    assert got == root / "models" / name and got.read_bytes() == b"model"
    (cache / name).unlink()
    assert training.ensure_model(root=root) == got  # now from models/
    assert training.latest_model(root) == got


# A stand-in for `rasa train`: logs like Rasa's training hooks, then writes the archive (or fails).
FAKE_RASA = r"""
import sys
from pathlib import Path
args = sys.argv[1:]
print("2026-12-03 10:00:00 INFO     rasa.engine.training.hooks  - Starting to train component 'RegexFeaturizer'.")
print("2026-12-03 10:00:01 INFO     rasa.engine.training.hooks  - Finished training component 'RegexFeaturizer'.")
print("some warning", file=sys.stderr)
if "--fail" in Path("marker").read_text():
    sys.exit(3)
out = Path(args[args.index("--out") + 1])
(out / (args[args.index("--fixed-model-name") + 1] + ".tar.gz")).write_bytes(b"trained")
"""


def _fake_rasa(root: Path, monkeypatch: pytest.MonkeyPatch, fail: bool = False) -> list[list[str]]:
    (root / "marker").write_text("--fail" if fail else "ok", encoding="utf-8")
    calls: list[list[str]] = []
    real_popen = subprocess.Popen

    def recording_popen(cmd: list[str], **kwargs: Any) -> Any:
        calls.append(cmd)
        return real_popen(cmd, **kwargs)

    monkeypatch.setattr(training, "_rasa_command", lambda: [sys.executable, "-c", FAKE_RASA])
    monkeypatch.setattr(training.subprocess, "Popen", recording_popen)
    return calls


def test_ensure_model_trains_logs_and_caches(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    root = _project(tmp_path / "proj")
    (root / "config.yml").write_text("pipeline:\n- name: RegexFeaturizer\npolicies:\n- name: RulePolicy\n")
    cache = tmp_path / "cache"
    monkeypatch.setenv("HUMANLINE_MODEL_CACHE", str(cache))
    calls = _fake_rasa(root, monkeypatch)
    model = training.ensure_model(root=root)
    assert model.name == training.model_name(root) + ".tar.gz"
    assert (cache / model.name).read_bytes() == b"trained"
    assert calls and calls[0][calls[0].index("--out") + 1] == str(root / "models")
    assert "train" in calls[0] and "--domain" in calls[0]
    # Rasa's output (stdout and stderr) is in the log, not on the terminal
    log = root / "models" / f"train-{training.model_hash(root)[:12]}.log"
    text = log.read_text()
    assert "Finished training component 'RegexFeaturizer'" in text and "some warning" in text
    shown = capsys.readouterr().out
    assert "some warning" not in shown
    # not a TTY: plain lines, the last one complete
    assert "\r" not in shown
    assert "█" * 24 + " 100%  1/2 components" in shown
    training.ensure_model(root=root)
    assert len(calls) == 1


def test_failed_training_prints_the_log_and_raises(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    root = _project(tmp_path / "proj")
    monkeypatch.setenv("HUMANLINE_MODEL_CACHE", str(tmp_path / "cache"))
    _fake_rasa(root, monkeypatch, fail=True)
    with pytest.raises(RuntimeError, match=r"exit 3.*train-.*\.log"):
        training.ensure_model(root=root)
    assert "some warning" in capsys.readouterr().err
    assert not os.path.exists(root / "models" / (training.model_name(root) + ".tar.gz"))


def test_verbose_streams_rasa_output(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = _project(tmp_path / "proj")
    monkeypatch.setenv("HUMANLINE_MODEL_CACHE", str(tmp_path / "cache"))

    class Failed:
        returncode = 1

    seen: list[dict[str, Any]] = []

    def fake_run(cmd: list[str], **kwargs: Any) -> Failed:
        seen.append(kwargs)
        return Failed()

    monkeypatch.setattr(training.subprocess, "run", fake_run)
    with pytest.raises(RuntimeError, match="see the output above"):
        training.ensure_model(root=root, verbose=True)
    assert seen and "stdout" not in seen[0]  # inherited: Rasa writes to the terminal
    assert not list((root / "models").glob("train-*.log"))


@pytest.mark.parametrize(
    ("line", "event"),
    [
        ("2026-12-03 10:00:00 INFO     rasa.engine.training.hooks  - Starting to train component "
         "'CountVectorsFeaturizer'.", ("start", "CountVectorsFeaturizer")),
        ("INFO rasa.engine.training.hooks - Finished training component 'IntentEnsemble'.",
         ("finish", "IntentEnsemble")),
        ("Restored component 'RulePolicy' from cache.", ("restored", "RulePolicy")),
        ("Training NLU model...", None),
        ("Starting to train something else", None),
    ],
)
def test_parse_event(line: str, event: tuple[str, str] | None) -> None:
    assert training.parse_event(line) == event


def test_trained_components_follow_config_order_without_untrained_ones() -> None:
    config = yaml.safe_load((training.ROOT / "config.yml").read_text())
    names = training.trained_components(config)
    assert names[0] == "HumanlineJiebaTokenizer" and names[-1] == "RulePolicy"
    # a component listed twice is trained twice
    twice = {"pipeline": [{"name": "CountVectorsFeaturizer"}, {"name": "CountVectorsFeaturizer", "analyzer": "char"}],
             "policies": [{"name": "RulePolicy"}]}
    assert training.trained_components(twice) == ["CountVectorsFeaturizer", "CountVectorsFeaturizer", "RulePolicy"]
    assert not set(names) & training.NOT_TRAINED
    assert "IntentEnsemble" in names  # the dotted custom component by its class name
    # every trained component of the real config has a measured typical duration
    assert set(names) <= set(training.TYPICAL_SECONDS)


def test_eta_arithmetic() -> None:
    assert training.eta_seconds(10.0, 0.0) is None
    assert training.eta_seconds(30.0, 0.25) == pytest.approx(90.0)
    assert training.eta_seconds(60.0, 0.5) == pytest.approx(60.0)
    assert training.eta_seconds(99.0, 1.0) == 0.0


def test_progress_share_is_weighted_by_typical_durations(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(training, "TYPICAL_SECONDS", {"setup": 10.0, "A": 10.0, "B": 70.0, "package": 10.0})
    progress = training.TrainingProgress(["A", "B"])
    assert progress.share() == 0.0
    assert "estimating" in progress.line(5.0) and "loading Rasa" in progress.line(5.0)
    progress.feed("Starting to train component 'A'.")
    assert progress.share() == pytest.approx(0.1) and progress.current == "A"
    progress.feed("Finished training component 'A'.")
    assert progress.share() == pytest.approx(0.2) and progress.count_done == 1
    # 20 % done in 40 s → 160 s left
    assert "00:40 elapsed, ~02:40 left" in progress.line(40.0)
    progress.feed("Restored component 'B' from cache.")  # cached counts as done
    assert progress.share() == pytest.approx(0.9) and progress.count_done == 2
    assert "writing the model" in progress.line(41.0)
    progress.done = True
    assert progress.share() == 1.0 and progress.line(50.0).endswith("00:50 elapsed, done")


def test_progress_adds_components_the_config_did_not_name() -> None:
    progress = training.TrainingProgress(["A"])
    progress.feed("Finished training component 'A'.")
    progress.feed("Finished training component 'Extra'.")
    assert progress.total == 2 and progress.count_done == 2
    assert progress.share() < 1.0  # only the process's exit says it is finished


def test_progress_bar_has_a_fixed_width() -> None:
    progress = training.TrainingProgress(["A", "B", "C"])
    for elapsed in (0.0, 12.0, 300.0):
        bar = progress.line(elapsed, width=30).split(" ", 1)[0]
        assert len(bar) == 30 and set(bar) <= {"█", "░"}


def test_repository_hash_is_deterministic() -> None:
    assert training.model_hash() == training.model_hash()
