"""A second, calibrated opinion on the intent: logistic regression beside DIET.

DIET learns the training data very well and is just as sure of itself on text unlike anything
it has seen: a general assistant request ("set an alarm for six", "播放周杰伦的歌") often comes
out as a complaint or a plan change with 0.8 confidence or more, above any sensible
``FallbackClassifier`` threshold. A regularised linear model over tf-idf features makes other
mistakes and, above all, spreads its probability when the words are unfamiliar. Averaging the
two rankings keeps DIET's accuracy on in-scope messages and lets the fallback threshold see
the linear model's doubt on out-of-scope ones (figures in ``docs/nlu.md``).

``IntentEnsemble`` goes right after ``DIETClassifier`` (and before ``FallbackClassifier``). In
training it fits a multinomial logistic regression on the *sentence-level* sparse features of
every featurizer in the pipeline; each featurizer's block is turned into tf-idf (log-scaled
counts, smoothed idf, L2-normalised) so that the few word features are not drowned by the many
character n-grams. At parse time it replaces ``intent`` and ``intent_ranking`` with

    p(intent) = diet_weight * p_DIET(intent) + (1 - diet_weight) * p_linear(intent)

and keeps both inputs under the message key ``intent_ranking_parts`` for diagnosis (not part of
the parse result). Without a ``DIETClassifier`` before it — the shipped configuration — the
linear model alone decides: it trains in seconds, deterministically, and is small on disk.

**Unfamiliar text falls back, whatever the classifiers say.** A logistic regression is a
calibrated model of the text it was trained on, not of keyboard mash or a line of rare
characters: such text still lands on *some* intent, sometimes above the fallback threshold. So
the component also keeps the training vocabulary (the tokens' lemmas) and measures each message's
*coverage*: the share of its tokens that occur in training, tokens with a digit (ids, amounts,
phone numbers) left out of the count. Below ``min_coverage`` every confidence is multiplied by
the coverage, so the top intent can never reach a fallback threshold of ``min_coverage`` or more:
out-of-distribution input falls back by construction, not by luck.

The model is stored as plain arrays (``.npz``) and JSON, never as a pickle.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
from rasa.engine.graph import ExecutionContext, GraphComponent
from rasa.engine.recipes.default_recipe import DefaultV1Recipe
from rasa.engine.storage.resource import Resource
from rasa.engine.storage.storage import ModelStorage
from rasa.nlu.classifiers.classifier import IntentClassifier
from rasa.nlu.constants import TOKENS_NAMES
from rasa.nlu.featurizers.featurizer import Featurizer
from rasa.shared.nlu.constants import FEATURE_TYPE_SENTENCE, INTENT, INTENT_RANKING_KEY, TEXT
from rasa.shared.nlu.training_data.message import Message
from rasa.shared.nlu.training_data.training_data import TrainingData

logger = logging.getLogger(__name__)

PARTS_KEY = "intent_ranking_parts"
_ARRAYS = "ensemble.npz"
_META = "ensemble.json"


def _source_fingerprint() -> str:
    return hashlib.sha256(Path(__file__).read_bytes()).hexdigest()


def sentence_blocks(message: Message) -> dict[str, sp.coo_matrix]:
    """The message's sentence-level sparse text features, one 1×d row per featurizer."""
    blocks: dict[str, sp.coo_matrix] = {}
    for features in message.features:
        if features.attribute == TEXT and features.type == FEATURE_TYPE_SENTENCE and features.is_sparse():
            origin = features.origin if isinstance(features.origin, str) else "+".join(features.origin)
            blocks[origin] = features.features.tocoo()  # Rasa keeps them as COO already: no copy
    return blocks


class TfidfBlocks:
    """Per-featurizer tf-idf: ``log(1 + count) * idf``, each block L2-normalised, blocks side by side."""

    def __init__(self, origins: list[str], dims: list[int], idf: list[np.ndarray]) -> None:
        self.origins, self.dims, self.idf = origins, dims, idf

    @classmethod
    def fit(cls, rows: list[dict[str, sp.coo_matrix]]) -> TfidfBlocks:
        origins = sorted({o for row in rows for o in row})
        dims, idf = [], []
        n = len(rows)
        for origin in origins:
            dim = max(row[origin].shape[1] for row in rows if origin in row)
            df = np.zeros(dim)
            for row in rows:
                if origin in row:
                    df[np.unique(row[origin].tocoo().col)] += 1
            dims.append(dim)
            idf.append(np.log((1.0 + n) / (1.0 + df)) + 1.0)  # scikit-learn's smooth idf
        return cls(origins, dims, idf)

    def transform(self, rows: list[dict[str, sp.coo_matrix]]) -> sp.csr_matrix:
        """One CSR matrix for ``rows``, built with numpy in one pass (a parse is one message: keep it cheap)."""
        n = len(rows)
        all_indices: list[np.ndarray] = []
        all_data: list[np.ndarray] = []
        all_rows: list[np.ndarray] = []
        offset = 0
        for origin, dim, idf in zip(self.origins, self.dims, self.idf, strict=True):
            for i, row in enumerate(rows):
                block = row.get(origin)
                if block is None or block.nnz == 0:
                    continue
                block = block.tocoo()  # a no-op for Rasa's features
                keep = block.col < dim  # a vocabulary never grows after training; be safe anyway
                indices = block.col[keep]
                data = np.log1p(np.abs(block.data[keep])) * idf[indices]
                norm = np.sqrt(np.dot(data, data))
                if norm == 0:
                    continue
                all_indices.append(indices + offset)
                all_data.append(data / norm)
                all_rows.append(np.full(len(indices), i))
            offset += dim
        if not all_data:
            return sp.csr_matrix((n, offset))
        return sp.csr_matrix(
            (np.concatenate(all_data), (np.concatenate(all_rows), np.concatenate(all_indices))), shape=(n, offset)
        )


def token_keys(message: Message) -> list[str]:
    """The message's tokens as the vocabulary sees them: the lemma (an English stem), else the text."""
    return [str(t.lemma or t.text).lower() for t in message.get(TOKENS_NAMES[TEXT]) or []]


def coverage(tokens: list[str], vocabulary: frozenset[str] | set[str]) -> float:
    """Share of ``tokens`` that are in ``vocabulary``, counting only tokens without a digit.

    A token with a digit (an id, an amount, a phone number) is data: it tells nothing about
    whether the words around it are familiar, so it is left out of both counts — a message of such
    tokens alone (a bare order number answering a question) is fully familiar, and a number does
    not make keyboard mash around it familiar. No token at all (emoji, punctuation) is 0.
    """
    words = [t for t in tokens if not any(c.isdigit() for c in t)]
    if not words:
        return 1.0 if tokens else 0.0
    return sum(1 for t in words if t in vocabulary) / len(words)


def softmax_rows(scores: np.ndarray) -> np.ndarray:
    shifted = scores - scores.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


def combine(diet: dict[str, float], linear: dict[str, float], diet_weight: float) -> dict[str, float]:
    """Weighted mean of two rankings; an intent missing from one ranking counts as 0 there."""
    if not diet:
        return dict(linear)
    names = set(diet) | set(linear)
    return {n: diet_weight * diet.get(n, 0.0) + (1.0 - diet_weight) * linear.get(n, 0.0) for n in names}


@DefaultV1Recipe.register(DefaultV1Recipe.ComponentType.INTENT_CLASSIFIER, is_trainable=True)
class IntentEnsemble(IntentClassifier, GraphComponent):
    """DIET's intent ranking averaged with a tf-idf logistic regression's (see the module docstring)."""

    @classmethod
    def required_components(cls) -> list[type]:
        return [Featurizer]

    @staticmethod
    def get_default_config() -> dict[str, Any]:
        return {
            # share of DIET in the mean; 0 = the linear model alone, 1 = DIET alone
            "diet_weight": 0.5,
            # inverse regularisation strength of the logistic regression
            "C": 30.0,
            "max_iter": 3000,
            # weigh intents by their inverse frequency (out_of_scope has many more examples)
            "class_weight": "balanced",
            "random_seed": 42,
            # intents listed in intent_ranking (0 = all)
            "ranking_length": 10,
            # below this share of known tokens every confidence is scaled by the share (0 = off)
            "min_coverage": 0.5,
        }

    @classmethod
    def fingerprint_addon(cls, config: dict[str, Any]) -> str | None:
        return _source_fingerprint()

    @classmethod
    def validate_config(cls, config: dict[str, Any]) -> None:
        weight = config.get("diet_weight", 0.5)
        if not isinstance(weight, int | float) or not 0.0 <= float(weight) <= 1.0:
            raise ValueError(f"IntentEnsemble: diet_weight must be between 0 and 1, not {weight!r}")
        if float(config.get("C", 1.0)) <= 0:
            raise ValueError("IntentEnsemble: C must be positive")
        minimum = config.get("min_coverage", 0.5)
        if not isinstance(minimum, int | float) or not 0.0 <= float(minimum) <= 1.0:
            raise ValueError(f"IntentEnsemble: min_coverage must be between 0 and 1, not {minimum!r}")

    def __init__(self, config: dict[str, Any], model_storage: ModelStorage, resource: Resource) -> None:
        self._config = {**self.get_default_config(), **config}
        self.validate_config(self._config)
        self._storage = model_storage
        self._resource = resource
        self.classes: list[str] = []
        self.tfidf: TfidfBlocks | None = None
        self.vocabulary: frozenset[str] = frozenset()
        self._set_weights(np.zeros((0, 0)), np.zeros(0))

    @classmethod
    def create(
        cls,
        config: dict[str, Any],
        model_storage: ModelStorage,
        resource: Resource,
        execution_context: ExecutionContext,
    ) -> IntentEnsemble:
        return cls(config, model_storage, resource)

    def _set_weights(self, coef: np.ndarray, intercept: np.ndarray) -> None:
        self.coef, self.intercept = coef, intercept
        # features × intents, contiguous: a sparse row times it is one pass, with no copy per parse
        self._coef_t = np.ascontiguousarray(coef.T)

    # ---------------------------------------------------------------- training

    def train(self, training_data: TrainingData) -> Resource:
        from sklearn.linear_model import LogisticRegression

        examples = [m for m in training_data.intent_examples if m.get(INTENT) and m.get(TEXT)]
        rows = [sentence_blocks(m) for m in examples]
        labels = [str(m.get(INTENT)) for m in examples]
        if len(set(labels)) < 2 or not any(rows):
            logger.warning("IntentEnsemble: fewer than two intents or no sparse features; DIET alone decides")
            self._persist()
            return self._resource
        self.tfidf = TfidfBlocks.fit(rows)
        self.vocabulary = frozenset(k for m in examples for k in token_keys(m))
        clf = LogisticRegression(
            C=float(self._config["C"]),
            max_iter=int(self._config["max_iter"]),
            class_weight=self._config["class_weight"],
            random_state=self._config["random_seed"],
            solver="lbfgs",
        )
        clf.fit(self.tfidf.transform(rows), labels)
        self.classes = [str(c) for c in clf.classes_]
        coef, intercept = clf.coef_, clf.intercept_
        if len(self.classes) == 2:  # binary: scikit-learn keeps one row; as softmax it is (-z/2, z/2)
            coef = np.vstack([-coef[0] / 2, coef[0] / 2])
            intercept = np.array([-intercept[0] / 2, intercept[0] / 2])
        self._set_weights(coef, intercept)
        self._persist()
        return self._resource

    def _persist(self) -> None:
        with self._storage.write_to(self._resource) as directory:
            meta = {
                "classes": self.classes,
                "origins": self.tfidf.origins if self.tfidf else [],
                "dims": self.tfidf.dims if self.tfidf else [],
                "vocabulary": sorted(self.vocabulary),
            }
            (directory / _META).write_text(json.dumps(meta, ensure_ascii=False), encoding="utf-8")
            idf = {f"idf_{i}": v for i, v in enumerate(self.tfidf.idf)} if self.tfidf else {}
            # float32 halves the model on disk; the probabilities agree to ~1e-6
            coef = self.coef.astype(np.float32)
            np.savez_compressed(directory / _ARRAYS, coef=coef, intercept=self.intercept, **idf)

    @classmethod
    def load(
        cls,
        config: dict[str, Any],
        model_storage: ModelStorage,
        resource: Resource,
        execution_context: ExecutionContext,
        **kwargs: Any,
    ) -> IntentEnsemble:
        component = cls(config, model_storage, resource)
        try:
            with model_storage.read_from(resource) as directory:
                meta = json.loads((directory / _META).read_text(encoding="utf-8"))
                with np.load(directory / _ARRAYS, allow_pickle=False) as arrays:
                    component._set_weights(arrays["coef"].astype(np.float64), arrays["intercept"])
                    idf = [arrays[f"idf_{i}"] for i in range(len(meta["origins"]))]
        except (ValueError, FileNotFoundError) as exc:
            logger.warning(f"IntentEnsemble: no trained model in {resource.name} ({exc}); DIET alone decides")
            return component
        component.classes = list(meta["classes"])
        component.vocabulary = frozenset(meta.get("vocabulary") or ())
        if meta["origins"]:
            component.tfidf = TfidfBlocks(list(meta["origins"]), list(meta["dims"]), idf)
        return component

    # ---------------------------------------------------------------- parsing

    def linear_rankings(self, messages: list[Message]) -> list[dict[str, float]]:
        """The logistic regression's probabilities for each message (empty when untrained)."""
        if self.tfidf is None or not self.classes:
            return [{} for _ in messages]
        x = self.tfidf.transform([sentence_blocks(m) for m in messages])
        probs = softmax_rows(np.asarray(x @ self._coef_t) + self.intercept)
        return [dict(zip(self.classes, row.tolist(), strict=True)) for row in probs]

    def process(self, messages: list[Message]) -> list[Message]:
        weight = float(self._config["diet_weight"])
        length = int(self._config["ranking_length"])
        minimum = float(self._config["min_coverage"])
        for message, linear in zip(messages, self.linear_rankings(messages), strict=True):
            diet = {
                str(r["name"]): float(r["confidence"])
                for r in message.get(INTENT_RANKING_KEY) or []
                if r.get("name") is not None
            }
            if not linear:
                continue
            share = coverage(token_keys(message), self.vocabulary) if self.vocabulary else 1.0
            scale = share if share < minimum else 1.0
            ordered = sorted(combine(diet, linear, weight).items(), key=lambda item: -item[1])
            ranking = [{"name": name, "confidence": confidence * scale} for name, confidence in ordered]
            message.set(INTENT, ranking[0], add_to_output=True)
            message.set(INTENT_RANKING_KEY, ranking[:length] if length > 0 else ranking, add_to_output=True)
            message.set(PARTS_KEY, {"diet": diet, "linear": linear, "coverage": share})
        return messages
