"""Train the Rasa model only when config, domain, data or our NLU code changed.

``python -m bot train`` (``make train``) calls ``main``. The model is named after a hash of its
inputs, ``models/humanline-<hash12>.tar.gz``; an identical model is reused from ``models/`` or from
the cache directory (``$HUMANLINE_MODEL_CACHE``, default ``~/.cache/humanline/models/``) instead of
being trained again.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterable
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODEL_PREFIX = "humanline-"


def _progress(msg: str) -> None:
    print(f"==> {msg}", flush=True)


def _files(root: Path) -> Iterable[Path]:
    """Every input of the model, relative to ``root``, in a stable order."""
    candidates: list[Path] = []
    for name in ("config.yml", "domain.yml"):
        if (root / name).is_file():
            candidates.append(root / name)
    for folder, pattern in (("domain", "*"), ("data", "*"), ("bot/nlu", "*.py")):
        base = root / folder
        if base.is_dir():
            candidates.extend(p for p in base.rglob(pattern) if p.is_file() and "__pycache__" not in p.parts)
    # The normaliser's text functions live in bot/i18n.py.
    if (root / "bot" / "i18n.py").is_file():
        candidates.append(root / "bot" / "i18n.py")
    return sorted(set(candidates), key=lambda p: p.relative_to(root).as_posix())


def model_hash(root: Path | None = None) -> str:
    """sha256 over config.yml, domain.yml (or domain/), data/**, bot/nlu/** and bot/i18n.py.

    Each file contributes its path relative to ``root`` and its bytes; the Rasa version is mixed in
    so that a model is never reused across Rasa versions.
    """
    root = root or ROOT
    digest = hashlib.sha256()
    try:
        digest.update(f"rasa={metadata.version('rasa')}\n".encode())
    except metadata.PackageNotFoundError:
        digest.update(b"rasa=?\n")
    for path in _files(root):
        rel = path.relative_to(root).as_posix()
        data = path.read_bytes()
        digest.update(f"{rel}\0{len(data)}\0".encode())
        digest.update(data)
    return digest.hexdigest()


def model_name(root: Path | None = None) -> str:
    return f"{MODEL_PREFIX}{model_hash(root)[:12]}"


def cache_dir() -> Path:
    env = os.environ.get("HUMANLINE_MODEL_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "humanline" / "models"


def models_dir(root: Path | None = None) -> Path:
    return (root or ROOT) / "models"


def latest_model(root: Path | None = None) -> Path | None:
    """The newest ``models/*.tar.gz``, whatever it was trained from, or ``None``."""
    folder = models_dir(root)
    archives = [p for p in folder.glob("*.tar.gz") if p.is_file()] if folder.is_dir() else []
    return max(archives, key=lambda p: p.stat().st_mtime, default=None)


def current_model(root: Path | None = None) -> Path | None:
    """The model for the current inputs, from ``models/`` or copied from the cache; else ``None``."""
    name = model_name(root) + ".tar.gz"
    target = models_dir(root) / name
    if target.is_file():
        return target
    cached = cache_dir() / name
    if cached.is_file():
        _progress(f"reusing cached model {cached}")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(cached, target)
        return target
    return None


def _rasa_command() -> list[str]:
    exe = Path(sys.executable).parent / "rasa"
    return [str(exe)] if exe.is_file() else [sys.executable, "-m", "rasa"]


def _domain_arg(root: Path) -> str:
    return "domain" if (root / "domain").is_dir() else "domain.yml"


def ensure_model(force: bool = False, root: Path | None = None) -> Path:
    """Path of the model for the current inputs, training it first when there is none."""
    root = root or ROOT
    name = model_name(root)
    if not force:
        found = current_model(root)
        if found is not None:
            _progress(f"model up to date: {found.relative_to(root) if found.is_relative_to(root) else found}")
            return found
    out = models_dir(root)
    out.mkdir(parents=True, exist_ok=True)
    cmd = [
        *_rasa_command(), "train",
        "--config", "config.yml",
        "--domain", _domain_arg(root),
        "--data", "data",
        "--out", str(out),
        "--fixed-model-name", name,
        # `rasa data validate --fail-on-warnings` runs in the test suite (tests/test_rasa_tooling.py);
        # repeating it here costs ~15 s of every training
        "--skip-validation",
    ]
    if force:
        cmd.append("--force")
    _progress(f"training {name} (config, domain or data changed); this takes a few minutes")
    _progress(" ".join(cmd))
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2")}
    started = time.monotonic()
    result = subprocess.run(cmd, cwd=root, env=env)  # output streams straight to the terminal
    target = out / f"{name}.tar.gz"
    if result.returncode != 0 or not target.is_file():
        raise RuntimeError(f"rasa train failed (exit {result.returncode}); see the output above")
    _progress(f"trained {target.name} in {time.monotonic() - started:.0f} s")
    try:
        cache = cache_dir()
        cache.mkdir(parents=True, exist_ok=True)
        shutil.copy2(target, cache / target.name)
        _progress(f"cached a copy in {cache}")
    except OSError as exc:  # a read-only home is no reason to fail the training
        _progress(f"could not cache the model: {exc}")
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bot train", description="Train the Rasa model if needed.")
    parser.add_argument("--force", action="store_true", help="train even if a model for these inputs exists")
    parser.add_argument("--print-hash", action="store_true", help="print the input hash and exit")
    args = parser.parse_args(argv)
    if args.print_hash:
        print(model_hash())
        return 0
    try:
        model = ensure_model(force=args.force)
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(model)
    return 0


if __name__ == "__main__":
    sys.exit(main())
