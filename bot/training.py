"""Train the Rasa model only when config, domain, data or our NLU code changed.

``python -m bot train`` (``make train``) calls ``main``. The model is named after a hash of its
inputs, ``models/humanline-<hash12>.tar.gz``; an identical model is reused from ``models/`` or from
the cache directory (``$HUMANLINE_MODEL_CACHE``, default ``~/.cache/humanline/models/``) instead of
being trained again.

While ``rasa train`` runs, its output goes to ``models/train-<hash12>.log`` (printed in full when
the training fails) and the terminal shows one progress line: a bar over the graph's trained
components, the elapsed time and an estimate of the time left (:class:`TrainingProgress`).
``python -m bot train --verbose`` streams Rasa's own output instead.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import queue
import re
import shutil
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import IO

import yaml

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
    return sorted(set(candidates), key=lambda p: p.relative_to(root).as_posix())


def model_hash(root: Path | None = None) -> str:
    """sha256 over config.yml, domain.yml (or domain/), data/** and bot/nlu/** (the components and
    their text functions, bot/nlu/text.py; the hub's texts in bot/i18n.py are not an input).

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


# Typical seconds of each stage of `rasa train` for this project's config.yml, measured once: the
# first-run benchmark of 3 Dec 2026 (docs/benchmarks.md, "First run"; 459 s on 2 shared cores at
# load average 10-14). A component's time runs from the previous component's end to its own (Rasa
# spends the gaps running the data through the components before it). Only the proportions
# matter: the estimate of the time left scales them by this machine's pace so far. "setup" is
# everything before the first component (importing Rasa and TensorFlow, reading and validating
# the data) and "package" everything after the last (writing the archive). A component missing
# from the table counts DEFAULT_COMPONENT_SECONDS; re-measure when config.yml changes much.
TYPICAL_SECONDS: dict[str, float] = {
    "setup": 141.0,
    "HumanlineJiebaTokenizer": 1.0,
    "RegexFeaturizer": 17.0,
    "CountVectorsFeaturizer": 33.0,  # each of the two (word and character n-grams)
    # Not measured: it replaced RegexFeaturizer and the two CountVectorsFeaturizers after the
    # benchmark (83 s above), saving "~40 s of CPU per training" by its author's measurement.
    "SentenceFeaturizer": 45.0,
    "EntitySynonymMapper": 49.0,
    "RegexEntityExtractor": 1.0,
    "IntentEnsemble": 154.0,
    "MemoizationPolicy": 16.0,
    "RulePolicy": 5.0,
    "package": 11.0,
}
DEFAULT_COMPONENT_SECONDS = 15.0
# Components of config.yml that Rasa registers as not trainable: they never appear in the log.
NOT_TRAINED = frozenset({"TextNormalizer", "OriginalTextRestorer", "FallbackClassifier", "WhitespaceTokenizer"})

_EVENT = re.compile(r"(Starting to train|Finished training|Restored) component '([^']+)'")


def parse_event(line: str) -> tuple[str, str] | None:
    """``("start" | "finish" | "restored", component)`` for Rasa's training-hook log lines, else ``None``."""
    match = _EVENT.search(line)
    if match is None:
        return None
    kind = {"Starting to train": "start", "Finished training": "finish", "Restored": "restored"}[match.group(1)]
    return kind, match.group(2)


def trained_components(config: dict[str, object]) -> list[str]:
    """Class names of the pipeline's and the policies' components that Rasa trains, in order.

    A dotted custom component (``bot.nlu.ensemble.IntentEnsemble``) is logged by its class name.
    """
    names: list[str] = []
    for section in ("pipeline", "policies"):
        items = config.get(section) or []
        for item in items if isinstance(items, list) else []:
            name = item.get("name") if isinstance(item, dict) else None
            if isinstance(name, str):
                short = name.rsplit(".", 1)[-1]
                if short not in NOT_TRAINED:
                    names.append(short)
    return names


def typical(stage: str) -> float:
    return TYPICAL_SECONDS.get(stage, DEFAULT_COMPONENT_SECONDS)


def eta_seconds(elapsed: float, share_done: float) -> float | None:
    """Seconds left if the rest goes at the pace so far: ``elapsed · (1 − share) / share``.

    ``None`` while nothing is done yet (no pace to go by); ``0`` once everything is.
    """
    if share_done <= 0:
        return None
    if share_done >= 1:
        return 0.0
    return elapsed * (1 - share_done) / share_done


def _clock(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    return f"{seconds // 60:02d}:{seconds % 60:02d}"


@dataclass
class TrainingProgress:
    """How far ``rasa train`` is, from the component events in its log.

    ``share`` weights each stage by its typical duration; a component restored from Rasa's cache
    counts as done. Components the log names that config.yml did not (a stale table) are added.
    """

    expected: list[str]
    finished: Counter[str] = field(default_factory=Counter)
    current: str | None = None
    started_graph: bool = False
    done: bool = False

    def feed(self, line: str) -> bool:
        """Update from one log line; ``True`` when it was a component event."""
        event = parse_event(line)
        if event is None:
            return False
        kind, component = event
        self.started_graph = True
        if kind == "start":
            self.current = component
        else:
            self.finished[component] += 1
            if self.finished[component] > self.expected.count(component):
                self.expected.append(component)
            if self.current == component:
                self.current = None
        return True

    @property
    def total(self) -> int:
        return len(self.expected)

    @property
    def count_done(self) -> int:
        return min(self.total, sum(self.finished.values()))

    def share(self) -> float:
        if self.done:
            return 1.0
        weights = [typical("setup"), *(typical(c) for c in self.expected), typical("package")]
        done = typical("setup") if self.started_graph else 0.0
        done += sum(typical(c) * n for c, n in self.finished.items())
        return min(done / sum(weights), 0.99)

    def line(self, elapsed: float, width: int = 24) -> str:
        """One line: bar, components done, elapsed time, estimated time left, what is running."""
        share = self.share()
        filled = int(round(share * width))
        bar = "█" * filled + "░" * (width - filled)
        eta = eta_seconds(elapsed, share)
        left = "done" if self.done else ("estimating…" if eta is None else f"~{_clock(eta)} left")
        if self.done:
            doing = ""
        elif not self.started_graph:
            doing = "  (loading Rasa and the training data)"
        elif self.current:
            doing = f"  ({self.current})"
        else:
            doing = "  (writing the model)" if self.count_done >= self.total else ""
        return (f"{bar} {share * 100:3.0f}%  {self.count_done}/{self.total} components  "
                f"{_clock(elapsed)} elapsed, {left}{doing}")


def _expected_components(root: Path) -> list[str]:
    try:
        config = yaml.safe_load((root / "config.yml").read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError):
        return []
    return trained_components(config) if isinstance(config, dict) else []


def _run_with_progress(cmd: list[str], cwd: Path, env: dict[str, str], log_path: Path, out: IO[str]) -> int:
    """Run ``cmd`` with its output in ``log_path`` and a progress line on ``out``; its exit code.

    On a terminal the line is redrawn in place twice a second; otherwise (CI, a pipe) a plain line
    is printed when a component starts and when the training ends.
    """
    progress = TrainingProgress(_expected_components(cwd))
    tty = out.isatty()
    lines: queue.Queue[str | None] = queue.Queue()
    started = time.monotonic()
    with log_path.open("w", encoding="utf-8") as log:
        proc = subprocess.Popen(cmd, cwd=cwd, env={**env, "PYTHONUNBUFFERED": "1"}, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, errors="replace")
        assert proc.stdout is not None

        def pump(stream: IO[str]) -> None:
            for raw in stream:
                log.write(raw)
                log.flush()
                lines.put(raw)
            lines.put(None)

        reader = threading.Thread(target=pump, args=(proc.stdout,), daemon=True)
        reader.start()
        if not tty:
            print(f"    {progress.line(0)}", file=out, flush=True)
        eof = False
        while not eof:
            try:
                item = lines.get(timeout=0.5)
            except queue.Empty:
                item = ""
            eof = item is None
            changed = item is not None and progress.feed(item)
            if tty:
                out.write(f"\r\x1b[K    {progress.line(time.monotonic() - started)}")
                out.flush()
            elif changed and progress.current is not None:
                print(f"    {progress.line(time.monotonic() - started)}", file=out, flush=True)
        returncode = proc.wait()
        reader.join()
    progress.done = returncode == 0
    final = progress.line(time.monotonic() - started)
    out.write(f"\r\x1b[K    {final}\n" if tty else f"    {final}\n")
    out.flush()
    return returncode


def ensure_model(force: bool = False, root: Path | None = None, verbose: bool = False) -> Path:
    """Path of the model for the current inputs, training it first when there is none.

    ``verbose`` streams Rasa's output to the terminal instead of the log file and progress line.
    """
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
        # Augmented stories only train TED, which the shipped policies do not have: Memoization and
        # RulePolicy skip augmented trackers, so generating them is wasted time.
        "--augmentation", "0",
    ]
    if force:
        cmd.append("--force")
    _progress(f"training {name} (config, domain or data changed); this takes a few minutes")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2")}
    started = time.monotonic()
    target = out / f"{name}.tar.gz"
    if verbose:
        _progress(" ".join(cmd))
        returncode = subprocess.run(cmd, cwd=root, env=env).returncode  # straight to the terminal
        if returncode != 0 or not target.is_file():
            raise RuntimeError(f"rasa train failed (exit {returncode}); see the output above")
    else:
        log_path = out / f"train-{name.removeprefix(MODEL_PREFIX)}.log"
        shown = log_path.relative_to(root) if log_path.is_relative_to(root) else log_path
        _progress(f"Rasa's output goes to {shown} (`python -m bot train --verbose` shows it here)")
        returncode = _run_with_progress(cmd, root, env, log_path, sys.stdout)
        if returncode != 0 or not target.is_file():
            sys.stderr.write(log_path.read_text(encoding="utf-8", errors="replace"))
            raise RuntimeError(f"rasa train failed (exit {returncode}); its output is above and in {log_path}")
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
    parser.add_argument("--verbose", "-v", action="store_true",
                        help="stream Rasa's output instead of the progress line and the log file")
    args = parser.parse_args(argv)
    if args.print_hash:
        print(model_hash())
        return 0
    try:
        model = ensure_model(force=args.force, verbose=args.verbose)
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(model)
    return 0


if __name__ == "__main__":
    sys.exit(main())
