"""NLU evaluation: our pipeline against Rasa's stock pipeline on the same data, in one run.

``python -m bot eval`` (``make eval``) calls ``main``. Both pipelines are trained NLU-only on
``data/nlu`` (reused when a model for the same inputs exists under ``models/eval/``), then parse

- the held-out split ``tests/nlu/<lang>/*.yml`` (the directory name is the language), and
- every ``../shared/benchmarks/external/*.jsonl`` (fields ``text``, ``intent``, ``lang``), which is
  only ever parsed, never trained on.

- generated noise in each script (:func:`noise_samples`: keyboard mash, random CJK characters,
  random Traditional-only characters), which must fall back.

A predicted ``nlu_fallback`` counts as ``out_of_scope``. When our pipeline runs DIET inside an
``IntentEnsemble``, the same parse also gives the figures of its two members alone (DIET's
ranking, the linear model's), each under the pipeline's ``FallbackClassifier`` rule. The table
(with F1 per intent on the held-out split) is printed and the figures are written to
``results/eval.json``. With ``--check`` the exit status is 1 when a target is missed: macro-F1 >=
0.92 per language on the held-out split, accuracy >= 0.85 per external file, >= 0.99 of the noise
falling back. ``--spread`` trains our pipeline twice from scratch and prints the largest
difference between the two trainings' figures (training is meant to be deterministic).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from bot.i18n import LANGS
from bot.training import ROOT, _rasa_command

EXTERNAL_DIR = ROOT.parent / "shared" / "benchmarks" / "external"
HELDOUT_DIR = ROOT / "tests" / "nlu"
EVAL_MODELS = ROOT / "models" / "eval"
RESULTS = ROOT / "results" / "eval.json"
TARGET_MACRO_F1 = 0.92
TARGET_EXTERNAL_ACC = 0.85
TARGET_NOISE_FALLBACK = 0.99
NOISE_PER_SCRIPT = 300
FALLBACK = "nlu_fallback"
OUT_OF_SCOPE = "out_of_scope"

# The pipeline `rasa init` writes (commented out) into config.yml in Rasa 3.6.
BASELINE_CONFIG = """\
recipe: default.v1
assistant_id: baseline
language: en
pipeline:
  - name: WhitespaceTokenizer
  - name: RegexFeaturizer
  - name: LexicalSyntacticFeaturizer
  - name: CountVectorsFeaturizer
  - name: CountVectorsFeaturizer
    analyzer: char_wb
    min_ngram: 1
    max_ngram: 4
  - name: DIETClassifier
    epochs: 100
    constrain_similarities: true
  - name: EntitySynonymMapper
  - name: ResponseSelector
    epochs: 100
    constrain_similarities: true
  - name: FallbackClassifier
    threshold: 0.3
    ambiguity_threshold: 0.1
policies: []
"""


def _progress(msg: str) -> None:
    print(f"==> {msg}", flush=True)


@dataclass
class Sample:
    text: str
    intent: str


@dataclass
class EvalSet:
    name: str
    kind: str  # "heldout", "external" or "noise"
    samples: list[Sample] = field(default_factory=list)


# ---------------------------------------------------------------- data


def load_heldout(folder: Path = HELDOUT_DIR) -> list[EvalSet]:
    """Two sets per language directory under ``tests/nlu``: ``<lang>`` (the split written beside
    the training data) and ``<lang>/unseen`` (``unseen*.yml``, written apart from it by someone
    who never read the training data; docs/nlu.md, "The unseen set")."""
    from rasa.shared.nlu.training_data.loading import load_data

    sets = []
    for lang_dir in sorted(p for p in folder.glob("*") if p.is_dir()):
        split: dict[str, list[Sample]] = {lang_dir.name: [], f"{lang_dir.name}/unseen": []}
        for path in sorted(lang_dir.rglob("*.yml")):
            td = load_data(str(path))
            name = f"{lang_dir.name}/unseen" if path.name.startswith("unseen") else lang_dir.name
            split[name] += [Sample(m.get("text"), m.get("intent")) for m in td.intent_examples]
        sets += [EvalSet(name, "heldout", samples) for name, samples in split.items() if samples]
    return sets


def load_external(folder: Path = EXTERNAL_DIR) -> list[EvalSet]:
    """One set per ``*.jsonl`` file; read here, never written anywhere near the training data."""
    sets = []
    for path in sorted(folder.glob("*.jsonl")):
        samples = []
        with path.open(encoding="utf-8") as fh:
            for line in fh:
                if line.strip():
                    row = json.loads(line)
                    samples.append(Sample(row["text"], row["intent"]))
        sets.append(EvalSet(path.name.removesuffix(".jsonl"), "external", samples))
    return sets


def noise_samples(lang: str, n: int = NOISE_PER_SCRIPT, seed: int = 7) -> list[Sample]:
    """``n`` generated out-of-distribution messages for ``lang``, the same ones on every run.

    ``en``: keyboard mash — 1–3 runs of 3–12 random Latin letters; ``zh-Hans``: 3–15 random
    characters of the CJK Unified Ideographs block (mostly rare ones); ``zh-Hant``: 3–15 random
    characters that OpenCC changes when converting to Simplified (Traditional-only forms). Every
    one is labelled ``out_of_scope``: the model must fall back on all of them.
    """
    import random
    import string

    rng = random.Random(f"{seed}:{lang}")
    if lang == "en":
        def make() -> str:
            return " ".join(
                "".join(rng.choice(string.ascii_lowercase) for _ in range(rng.randint(3, 12)))
                for _ in range(rng.randint(1, 3))
            )
    else:
        pool = [chr(c) for c in range(0x4E00, 0xA000)]
        if lang == "zh-Hant":
            from bot.i18n import to_simplified

            pool = [ch for ch in pool if to_simplified(ch) != ch]

        def make() -> str:
            return "".join(rng.choice(pool) for _ in range(rng.randint(3, 15)))

    return [Sample(make(), OUT_OF_SCOPE) for _ in range(n)]


def load_noise(langs: tuple[str, ...] = LANGS) -> list[EvalSet]:
    return [EvalSet(f"noise_{lang}", "noise", noise_samples(lang)) for lang in langs]


# ---------------------------------------------------------------- training


def _inputs_hash(config_text: str, with_code: bool) -> str:
    digest = hashlib.sha256(config_text.encode())
    with contextlib.suppress(metadata.PackageNotFoundError):
        digest.update(metadata.version("rasa").encode())
    paths = sorted(p for p in (ROOT / "data" / "nlu").rglob("*") if p.is_file())
    if with_code:
        paths += sorted((ROOT / "bot" / "nlu").glob("*.py"))
    for path in paths:
        digest.update(path.relative_to(ROOT).as_posix().encode() + b"\0")
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def train_nlu(label: str, config_text: str, with_code: bool, force: bool = False, suffix: str = "") -> Path:
    """Train (or reuse) an NLU-only model for ``config_text`` on ``data/nlu``."""
    name = f"nlu-{label}-{_inputs_hash(config_text, with_code)}{suffix}"
    target = EVAL_MODELS / f"{name}.tar.gz"
    if target.is_file() and not force:
        _progress(f"{label}: reusing {target.relative_to(ROOT)}")
        return target
    EVAL_MODELS.mkdir(parents=True, exist_ok=True)
    config_path = EVAL_MODELS / f"{name}.config.yml"
    config_path.write_text(config_text, encoding="utf-8")
    cmd = [*_rasa_command(), "train", "nlu", "--config", str(config_path), "--nlu", "data/nlu",
           "--out", str(EVAL_MODELS), "--fixed-model-name", name]
    if force:
        cmd.append("--force")  # also past Rasa's own training cache: a training from scratch
    _progress(f"{label}: training NLU ({' '.join(cmd[1:])})")
    started = time.monotonic()
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2")}
    result = subprocess.run(cmd, cwd=ROOT, env=env)
    if result.returncode != 0 or not target.is_file():
        raise RuntimeError(f"training the {label} NLU model failed (exit {result.returncode})")
    _progress(f"{label}: trained in {time.monotonic() - started:.0f} s")
    return target


# ---------------------------------------------------------------- parsing


@dataclass
class Parsed:
    """One message's predicted intent and, from ``IntentEnsemble``, the rankings it averaged."""

    intent: str
    parts: dict[str, dict[str, float]] | None = None


def _parse_all(model: Path, texts: list[str], label: str, chunk: int = 200) -> list[Parsed]:
    """Parses ``texts``: the model is loaded once, messages go through the graph in chunks."""
    from rasa.core.agent import Agent
    from rasa.core.channels.channel import UserMessage
    from rasa.engine.constants import PLACEHOLDER_MESSAGE, PLACEHOLDER_TRACKER
    from rasa.shared.core.trackers import DialogueStateTracker

    from bot.nlu.ensemble import PARTS_KEY

    agent = Agent.load(str(model))
    processor = agent.processor
    assert processor is not None
    target = processor.model_metadata.nlu_target
    out: list[Parsed] = []
    started = time.monotonic()
    for i in range(0, len(texts), chunk):
        batch = texts[i : i + chunk]
        tracker = DialogueStateTracker("eval", [])
        parts: list[Any] = [None] * len(batch)
        try:
            results = processor.graph_runner.run(
                inputs={PLACEHOLDER_MESSAGE: [UserMessage(t) for t in batch], PLACEHOLDER_TRACKER: tracker},
                targets=[target],
            )
            intents = [(m.get("intent") or {}).get("name") for m in results[target]]
            parts = [m.get(PARTS_KEY) for m in results[target]]
        except Exception as exc:  # noqa: BLE001 - fall back to one message at a time
            _progress(f"{label}: batch parse failed ({exc!r}); parsing one message at a time")
            intents = []
            for t in batch:
                parsed = asyncio.run(agent.parse_message(t))
                intents.append((parsed.get("intent") or {}).get("name"))
        out += [
            Parsed(OUT_OF_SCOPE if x is None or x == FALLBACK else str(x), p)
            for x, p in zip(intents, parts, strict=True)
        ]
        _progress(f"{label}: parsed {len(out)}/{len(texts)} ({time.monotonic() - started:.0f} s)")
    return out


# ---------------------------------------------------------------- the ensemble's members alone


def fallback_settings(config_text: str) -> tuple[float, float]:
    """``threshold`` and ``ambiguity_threshold`` of the pipeline's ``FallbackClassifier`` (Rasa's defaults)."""
    import yaml

    for step in (yaml.safe_load(config_text) or {}).get("pipeline") or []:
        if isinstance(step, dict) and step.get("name") == "FallbackClassifier":
            return float(step.get("threshold", 0.3)), float(step.get("ambiguity_threshold", 0.1))
    return 0.0, 0.0


def decide(ranking: dict[str, float], threshold: float, ambiguity: float) -> str:
    """The intent the ``FallbackClassifier`` would let through for ``ranking``, else ``out_of_scope``."""
    if not ranking:
        return OUT_OF_SCOPE
    ordered = sorted(ranking.values(), reverse=True)
    best = max(ranking, key=lambda name: ranking[name])
    if ordered[0] < threshold or (len(ordered) > 1 and ordered[0] - ordered[1] < ambiguity):
        return OUT_OF_SCOPE
    return best


def member_predictions(parsed: list[Parsed], config_text: str) -> dict[str, list[str]]:
    """What DIET alone and the linear model alone would have predicted, under the same fallback rule.

    Empty when the model has no ``IntentEnsemble`` (or a message went through without one) or
    the ensemble has no DIET to average with (the shipped configuration): one member is the model.
    """
    if not parsed or any(p.parts is None for p in parsed):
        return {}
    if not any((p.parts or {}).get("diet") for p in parsed):
        return {}
    threshold, ambiguity = fallback_settings(config_text)
    return {
        f"ours:{member}": [decide((p.parts or {}).get(member) or {}, threshold, ambiguity) for p in parsed]
        for member in ("diet", "linear")
    }


# ---------------------------------------------------------------- metrics


def accuracy(gold: list[str], pred: list[str]) -> float:
    return sum(g == p for g, p in zip(gold, pred, strict=True)) / len(gold) if gold else 0.0


def macro_f1(gold: list[str], pred: list[str]) -> float:
    """Unweighted mean F1 over every label in ``gold`` or ``pred``."""
    scores = f1_by_label(gold, pred)
    return sum(scores.values()) / len(scores) if scores else 0.0


def f1_by_label(gold: list[str], pred: list[str]) -> dict[str, float]:
    """F1 of every label in ``gold`` or ``pred``: where :func:`macro_f1` loses its points."""
    out = {}
    for label in sorted(set(gold) | set(pred)):
        tp = sum(g == p == label for g, p in zip(gold, pred, strict=True))
        wrong = sum((g == label) != (p == label) for g, p in zip(gold, pred, strict=True))
        out[label] = 2 * tp / (2 * tp + wrong) if tp else 0.0
    return out


def confusions(gold: list[str], pred: list[str], n: int = 10) -> list[tuple[str, str, int]]:
    counts = Counter((g, p) for g, p in zip(gold, pred, strict=True) if g != p)
    return [(g, p, c) for (g, p), c in counts.most_common(n)]


# ---------------------------------------------------------------- report


def _table(headers: list[str], rows: list[list[Any]]) -> str:
    cells = [[str(h) for h in headers]] + [[f"{c:.3f}" if isinstance(c, float) else str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=False)) for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def evaluate(args: argparse.Namespace) -> dict[str, Any]:
    our_config = Path(args.config).read_text(encoding="utf-8")
    heldout = load_heldout()
    external = [] if args.no_external else load_external()
    sets = heldout + external + load_noise()
    if not sets:
        raise RuntimeError(f"nothing to evaluate: no {HELDOUT_DIR} and no {EXTERNAL_DIR}")
    _progress(
        "evaluating on "
        + ", ".join(f"{s.kind}:{s.name} ({len(s.samples)})" for s in sets)
    )
    if args.model:
        models = {"ours": Path(args.model)}
    else:
        models = {"ours": train_nlu("ours", our_config, with_code=True, force=args.retrain)}
    if args.baseline_model:
        models["baseline"] = Path(args.baseline_model)
    elif not args.no_baseline:
        models["baseline"] = train_nlu("baseline", BASELINE_CONFIG, with_code=False, force=args.retrain)

    texts = [s.text for es in sets for s in es.samples]
    preds: dict[str, list[str]] = {}
    for label, model in models.items():
        parsed = _parse_all(model, texts, label)
        preds[label] = [p.intent for p in parsed]
        if label == "ours":
            # the ensemble's members, each under the same fallback rule: what the averaging adds
            preds.update(member_predictions(parsed, our_config))

    report: dict[str, Any] = {
        "models": {k: v.name for k, v in models.items()},
        "members": [k for k in preds if k.startswith("ours:")],
        "heldout": {},
        "external": {},
    }
    offset = 0
    gold_h: list[str] = []
    pred_h: list[str] = []
    gold_x: list[str] = []
    pred_x: list[str] = []
    for es in sets:
        gold = [s.intent for s in es.samples]
        entry: dict[str, Any] = {"n": len(gold)}
        for label in preds:
            pred = preds[label][offset : offset + len(gold)]
            entry[label] = {"accuracy": accuracy(gold, pred), "macro_f1": macro_f1(gold, pred)}
        ours = preds["ours"][offset : offset + len(gold)]
        entry["confusions_ours"] = confusions(gold, ours)
        if es.kind == "noise":
            report.setdefault("noise", {})[es.name] = {"n": len(gold), "fallback_rate": entry["ours"]["accuracy"]}
            offset += len(gold)
            continue
        if es.kind == "heldout":
            # kept in the JSON only: where the points go, and which messages to look at
            entry["f1_by_intent_ours"] = f1_by_label(gold, ours)
            entry["errors_ours"] = [
                {"text": s.text, "gold": s.intent, "predicted": p}
                for s, p in zip(es.samples, ours, strict=True) if s.intent != p
            ]
            gold_h += gold
            pred_h += ours
        else:
            gold_x += gold
            pred_x += ours
        report[es.kind][es.name] = entry
        offset += len(gold)
    report["confusions_heldout_ours"] = confusions(gold_h, pred_h)
    report["confusions_external_ours"] = confusions(gold_x, pred_x)

    misses = []
    for name, e in report["heldout"].items():
        if e["ours"]["macro_f1"] < TARGET_MACRO_F1:
            misses.append(f"held-out {name}: macro-F1 {e['ours']['macro_f1']:.3f} < {TARGET_MACRO_F1}")
    for name, e in report["external"].items():
        if e["ours"]["accuracy"] < TARGET_EXTERNAL_ACC:
            misses.append(f"external {name}: accuracy {e['ours']['accuracy']:.3f} < {TARGET_EXTERNAL_ACC}")
    for name, e in report.get("noise", {}).items():
        if e["fallback_rate"] < TARGET_NOISE_FALLBACK:
            misses.append(f"{name}: {e['fallback_rate']:.3f} fell back < {TARGET_NOISE_FALLBACK}")
    report["targets"] = {
        "heldout_macro_f1": TARGET_MACRO_F1,
        "external_accuracy": TARGET_EXTERNAL_ACC,
        "noise_fallback": TARGET_NOISE_FALLBACK,
    }
    report["missed"] = misses
    return report


def print_report(report: dict[str, Any]) -> None:
    has_base = "baseline" in report["models"]
    members = report.get("members") or []
    member_titles = [m.replace("ours:", "") + " alone" for m in members]

    def pair(entry: dict[str, Any], key: str) -> list[Any]:
        return [entry["ours"][key], entry["baseline"][key] if has_base else "-"]

    def alone(entry: dict[str, Any], key: str) -> list[Any]:
        return [entry[m][key] for m in members]

    print()
    print("Held-out split (tests/nlu/<lang>)")
    print(_table(
        ["lang", "n", "acc ours", "acc base", "macro-F1 ours", "macro-F1 base", *(f"F1 {t}" for t in member_titles)],
        [[k, e["n"], *pair(e, "accuracy"), *pair(e, "macro_f1"), *alone(e, "macro_f1")]
         for k, e in report["heldout"].items()],
    ))
    if report["external"]:
        print()
        print("External benchmarks (never trained on; nlu_fallback counts as out_of_scope)")
        print(_table(
            ["file", "n", "acc ours", "acc base", *(f"acc {t}" for t in member_titles)],
            [[k, e["n"], *pair(e, "accuracy"), *alone(e, "accuracy")] for k, e in report["external"].items()],
        ))
    if report.get("noise"):
        print()
        print("Generated noise (must fall back)")
        print(_table(["set", "n", "fell back"], [[k, e["n"], e["fallback_rate"]] for k, e in report["noise"].items()]))
    if report["heldout"]:
        langs = list(report["heldout"])
        intents = sorted({i for e in report["heldout"].values() for i in e.get("f1_by_intent_ours", {})})
        print()
        print("F1 per intent, ours, held-out")
        print(_table(
            ["intent", *langs],
            [[i, *(report["heldout"][lang].get("f1_by_intent_ours", {}).get(i, "-") for lang in langs)]
             for i in intents],
        ))
    if members:
        print()
        print("(DIET alone / linear alone: the two rankings IntentEnsemble averages, each under the same "
              "FallbackClassifier rule; from the same parse, not separately trained models)")
    for key, title in (("confusions_heldout_ours", "held-out"), ("confusions_external_ours", "external")):
        if report[key]:
            print()
            print(f"10 worst confusion pairs, ours, {title}")
            print(_table(["gold", "predicted", "count"], [list(r) for r in report[key]]))
    print()
    if report["missed"]:
        print("Targets missed:")
        for m in report["missed"]:
            print(f"  - {m}")
    else:
        print("All targets met.")


def figures(report: dict[str, Any]) -> dict[str, float]:
    """Every headline figure of ``report`` for our model, keyed ``kind/set/metric``."""
    out: dict[str, float] = {}
    for kind in ("heldout", "external"):
        for name, e in report.get(kind, {}).items():
            for metric, value in e["ours"].items():
                out[f"{kind}/{name}/{metric}"] = float(value)
    for name, e in report.get("noise", {}).items():
        out[f"noise/{name}/fallback_rate"] = float(e["fallback_rate"])
    return out


def spread(args: argparse.Namespace) -> int:
    """Train our pipeline twice from scratch, evaluate both, print the largest differences."""
    config_text = Path(args.config).read_text(encoding="utf-8")
    runs = []
    for i in (1, 2):
        model = train_nlu("ours", config_text, with_code=True, force=True, suffix=f"-spread{i}")
        run_args = argparse.Namespace(**{**vars(args), "model": str(model), "no_baseline": True,
                                         "baseline_model": None})
        runs.append(figures(evaluate(run_args)))
    differences = {key: abs(runs[0][key] - runs[1][key]) for key in sorted(runs[0])}
    rows: list[list[Any]] = [[key, runs[0][key], runs[1][key], diff] for key, diff in differences.items()]
    print()
    print("Two trainings of the same inputs, from scratch")
    print(_table(["figure", "training 1", "training 2", "difference"], rows))
    largest = max(differences.values(), default=0.0)
    print(f"\nLargest difference: {largest:.4f}")
    return 1 if args.check and largest >= 0.0005 else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bot eval", description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    parser.add_argument("--config", default=str(ROOT / "config.yml"), help="our pipeline (default config.yml)")
    parser.add_argument("--model", help="evaluate this NLU model as ours instead of training one")
    parser.add_argument("--baseline-model", help="evaluate this model as the baseline instead of training one")
    parser.add_argument("--no-baseline", action="store_true", help="skip the stock pipeline")
    parser.add_argument("--no-external", action="store_true", help="held-out split only")
    parser.add_argument("--retrain", action="store_true", help="train even if eval models exist")
    parser.add_argument("--out", default=str(RESULTS), help="JSON report path")
    parser.add_argument("--spread", action="store_true",
                        help="train our pipeline twice from scratch and print how far the figures differ")
    args = parser.parse_args(argv)
    if args.spread:
        try:
            return spread(args)
        except RuntimeError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    try:
        report = evaluate(args)
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print_report(report)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, ensure_ascii=False, indent=2), encoding="utf-8")
    _progress(f"wrote {out}")
    return 1 if args.check and report["missed"] else 0


if __name__ == "__main__":
    sys.exit(main())
