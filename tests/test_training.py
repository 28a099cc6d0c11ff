"""The model name follows its inputs: same inputs → same hash, any input change → new hash."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from bot import training


def _project(root: Path) -> Path:
    (root / "data" / "nlu" / "en").mkdir(parents=True)
    (root / "bot" / "nlu").mkdir(parents=True)
    (root / "config.yml").write_text("language: zh\n", encoding="utf-8")
    (root / "domain.yml").write_text("version: '3.1'\nintents: [greet]\n", encoding="utf-8")
    (root / "data" / "nlu" / "en" / "greet.yml").write_text("nlu:\n- intent: greet\n  examples: |\n    - hi\n")
    (root / "data" / "stories.yml").write_text("stories: []\n", encoding="utf-8")
    (root / "bot" / "nlu" / "normalizer.py").write_text("X = 1\n", encoding="utf-8")
    (root / "bot" / "i18n.py").write_text("Y = 1\n", encoding="utf-8")
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
    ["data/nlu/en/greet.yml", "data/stories.yml", "config.yml", "domain.yml", "bot/nlu/normalizer.py", "bot/i18n.py"],
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
    assert training.current_model(root) is None

    cache.mkdir()
    (cache / name).write_bytes(b"model")
    got = training.ensure_model(root=root)
    assert got == root / "models" / name and got.read_bytes() == b"model"
    (cache / name).unlink()
    assert training.ensure_model(root=root) == got  # now from models/
    assert training.latest_model(root) == got


def test_ensure_model_trains_and_caches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = _project(tmp_path / "proj")
    cache = tmp_path / "cache"
    monkeypatch.setenv("HUMANLINE_MODEL_CACHE", str(cache))
    calls: list[list[str]] = []

    class Done:
        returncode = 0

    def fake_run(cmd: list[str], cwd: Path, env: dict[str, str]) -> Done:
        calls.append(cmd)
        out = Path(cmd[cmd.index("--out") + 1])
        (out / (cmd[cmd.index("--fixed-model-name") + 1] + ".tar.gz")).write_bytes(b"trained")
        return Done()

    monkeypatch.setattr(training.subprocess, "run", fake_run)
    model = training.ensure_model(root=root)
    assert model.name == training.model_name(root) + ".tar.gz"
    assert (cache / model.name).read_bytes() == b"trained"
    assert calls and calls[0][calls[0].index("--out") + 1] == str(root / "models")
    assert "train" in calls[0] and "--domain" in calls[0]
    training.ensure_model(root=root)
    assert len(calls) == 1


def test_failed_training_raises(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = _project(tmp_path / "proj")
    monkeypatch.setenv("HUMANLINE_MODEL_CACHE", str(tmp_path / "cache"))

    class Failed:
        returncode = 1

    monkeypatch.setattr(training.subprocess, "run", lambda *a, **k: Failed())
    with pytest.raises(RuntimeError):
        training.ensure_model(root=root)
    assert not os.path.exists(root / "models" / (training.model_name(root) + ".tar.gz"))


def test_repository_hash_is_deterministic() -> None:
    assert training.model_hash() == training.model_hash()
