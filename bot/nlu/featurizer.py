"""Sentence features for the intent classifier, computed in one vectorised pass.

``SentenceFeaturizer`` replaces the pair of stock ``CountVectorsFeaturizer`` (words, character
n-grams) and the ``RegexFeaturizer`` of the earlier pipeline with the same three kinds of
features, at sentence level only:

* **words** — a bag of the tokens' lemmas (an English word's Snowball stem, else its text), as
  ``CountVectorsFeaturizer`` with ``use_lemma`` counts them;
* **chars** — character n-grams (``char_wb``, 1–4 by default) of the tokens' text, each token
  padded with spaces and never across tokens, as ``CountVectorsFeaturizer(analyzer="char_wb")``;

both after the stock featurizer's own preprocessing (a whole number becomes ``__NUMBER__``, lower
case), so the features are the stock ones;
* **patterns** — one binary feature per regex and lookup table of the training data (entity
  patterns and feature-only regexes such as the direction of a plan change), set when the
  pattern matches anywhere in the (normalised) text, case-insensitive, as ``RegexFeaturizer``'s
  sentence features.

Why not the stock components: they build a token-level (sequence) matrix for every message,
one scikit-learn call per message, which only DIET would read. Our only classifier reads the
sentence row. Doing the sentence rows for all training examples in one ``CountVectorizer`` call
takes about a second instead of half a minute, which is most of what keeps ``make train`` under
two minutes on two cores (issue #14). The vocabularies are stored as JSON, never pickled.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
from rasa.engine.graph import ExecutionContext, GraphComponent
from rasa.engine.recipes.default_recipe import DefaultV1Recipe
from rasa.engine.storage.resource import Resource
from rasa.engine.storage.storage import ModelStorage
from rasa.nlu.constants import TOKENS_NAMES
from rasa.nlu.featurizers.sparse_featurizer.sparse_featurizer import SparseFeaturizer
from rasa.nlu.tokenizers.tokenizer import Tokenizer
from rasa.shared.nlu.constants import FEATURE_TYPE_SENTENCE, TEXT
from rasa.shared.nlu.training_data.features import Features
from rasa.shared.nlu.training_data.message import Message
from rasa.shared.nlu.training_data.training_data import TrainingData

_VOCABULARY = "sentence_featurizer.json"


def _source_fingerprint() -> str:
    return hashlib.sha256(Path(__file__).read_bytes()).hexdigest()


_NUMBER = re.compile(r"\b[0-9]+\b")


def _processed(texts: list[str]) -> str:
    """Tokens as ``CountVectorsFeaturizer`` sees them: a whole number becomes ``__NUMBER__``, lower
    case, joined by spaces (so ``char_wb`` n-grams never cross a token boundary)."""
    return " ".join(_NUMBER.sub("__NUMBER__", t).lower() for t in texts)


def word_text(message: Message) -> str:
    """The tokens' lemmas (an English word's stem, else its text) for the word bag."""
    return _processed([str(t.lemma or t.text) for t in message.get(TOKENS_NAMES[TEXT]) or []])


def char_text(message: Message) -> str:
    """The tokens' own text (not the stem) for the character n-grams."""
    return _processed([str(t.text) for t in message.get(TOKENS_NAMES[TEXT]) or []])


@DefaultV1Recipe.register(DefaultV1Recipe.ComponentType.MESSAGE_FEATURIZER, is_trainable=True)
class SentenceFeaturizer(SparseFeaturizer, GraphComponent):
    """Word, character n-gram and pattern features of a message, sentence level only."""

    @classmethod
    def required_components(cls) -> list[type]:
        return [Tokenizer]

    @staticmethod
    def get_default_config() -> dict[str, Any]:
        return {
            **SparseFeaturizer.get_default_config(),
            "min_ngram": 1,
            "max_ngram": 4,
            # a character n-gram must occur in this many training examples to become a feature
            "chars_min_df": 1,
            # regexes and lookup tables of the training data as features
            "use_patterns": True,
        }

    @classmethod
    def fingerprint_addon(cls, config: dict[str, Any]) -> str | None:
        return _source_fingerprint()

    @classmethod
    def validate_config(cls, config: dict[str, Any]) -> None:
        low, high = config.get("min_ngram", 1), config.get("max_ngram", 4)
        if not (isinstance(low, int) and isinstance(high, int) and 1 <= low <= high):
            raise ValueError(f"SentenceFeaturizer: need 1 <= min_ngram <= max_ngram, not {low!r}, {high!r}")

    def __init__(self, config: dict[str, Any], model_storage: ModelStorage, resource: Resource) -> None:
        super().__init__(resource.name, {**self.get_default_config(), **config})
        self.validate_config(self._config)
        self._storage = model_storage
        self._resource = resource
        self.words: dict[str, int] = {}
        self.chars: dict[str, int] = {}
        self.patterns: list[dict[str, str]] = []
        self._compiled: list[re.Pattern[str]] = []

    @classmethod
    def create(
        cls,
        config: dict[str, Any],
        model_storage: ModelStorage,
        resource: Resource,
        execution_context: ExecutionContext,
    ) -> SentenceFeaturizer:
        return cls(config, model_storage, resource)

    # ---------------------------------------------------------------- vectorisers

    def _word_vectorizer(self) -> Any:
        from sklearn.feature_extraction.text import CountVectorizer

        # CountVectorsFeaturizer's word pattern: runs of word characters, one-letter words included
        return CountVectorizer(token_pattern=r"(?u)\b\w+\b", vocabulary=self.words or None)

    def _char_vectorizer(self) -> Any:
        from sklearn.feature_extraction.text import CountVectorizer

        ngrams = (int(self._config["min_ngram"]), int(self._config["max_ngram"]))
        min_df = 1 if self.chars else int(self._config["chars_min_df"])  # a fixed vocabulary takes no min_df
        return CountVectorizer(analyzer="char_wb", ngram_range=ngrams, min_df=min_df, vocabulary=self.chars or None)

    def _set_patterns(self, patterns: list[dict[str, str]]) -> None:
        self.patterns = patterns
        self._compiled = [re.compile(p["pattern"], flags=re.IGNORECASE) for p in patterns]

    # ---------------------------------------------------------------- training

    def train(self, training_data: TrainingData) -> Resource:
        import rasa.nlu.utils.pattern_utils as pattern_utils

        examples = [m for m in training_data.training_examples if m.get(TOKENS_NAMES[TEXT])]
        words = self._word_vectorizer().fit([word_text(m) for m in examples])
        chars = self._char_vectorizer().fit([char_text(m) for m in examples])
        # sorted by their position in the vocabulary: the JSON keeps the column order explicit
        self.words = {k: int(v) for k, v in sorted(words.vocabulary_.items(), key=lambda kv: kv[1])}
        self.chars = {k: int(v) for k, v in sorted(chars.vocabulary_.items(), key=lambda kv: kv[1])}
        if self._config["use_patterns"]:
            self._set_patterns(
                pattern_utils.extract_patterns(
                    training_data, use_lookup_tables=True, use_regexes=True, use_only_entities=False,
                    use_word_boundaries=False,
                )
            )
        self._persist()
        return self._resource

    def _persist(self) -> None:
        with self._storage.write_to(self._resource) as directory:
            data = {"words": self.words, "chars": self.chars, "patterns": self.patterns}
            (directory / _VOCABULARY).write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")

    @classmethod
    def load(
        cls,
        config: dict[str, Any],
        model_storage: ModelStorage,
        resource: Resource,
        execution_context: ExecutionContext,
        **kwargs: Any,
    ) -> SentenceFeaturizer:
        component = cls(config, model_storage, resource)
        with model_storage.read_from(resource) as directory:
            data = json.loads((directory / _VOCABULARY).read_text(encoding="utf-8"))
        component.words = {str(k): int(v) for k, v in data["words"].items()}
        component.chars = {str(k): int(v) for k, v in data["chars"].items()}
        component._set_patterns(list(data["patterns"]))
        return component

    # ---------------------------------------------------------------- featurising

    def _pattern_matrix(self, texts: list[str]) -> sp.csr_matrix:
        rows, cols = [], []
        for i, text in enumerate(texts):
            for j, pattern in enumerate(self._compiled):
                if pattern.search(text):
                    rows.append(i)
                    cols.append(j)
        data = np.ones(len(rows))
        return sp.csr_matrix((data, (rows, cols)), shape=(len(texts), len(self._compiled)))

    def _featurize(self, messages: list[Message]) -> None:
        todo = [m for m in messages if m.get(TOKENS_NAMES[TEXT])]
        if not todo or not self.words:
            return
        blocks = {
            "words": self._word_vectorizer().transform([word_text(m) for m in todo]).tocsr(),
            "chars": self._char_vectorizer().transform([char_text(m) for m in todo]).tocsr(),
        }
        if self._compiled:
            blocks["patterns"] = self._pattern_matrix([str(m.get(TEXT) or "") for m in todo])
        for name, matrix in blocks.items():
            origin = f"{self._identifier}:{name}"
            matrix.sort_indices()
            width, starts = matrix.shape[1], matrix.indptr
            for i, message in enumerate(todo):
                begin, end = starts[i], starts[i + 1]
                # one 1×d row, sliced from the CSR arrays (``getrow`` is several times slower)
                row = sp.coo_matrix(
                    (matrix.data[begin:end], (np.zeros(end - begin, dtype=np.int32), matrix.indices[begin:end])),
                    shape=(1, width),
                )
                message.add_features(Features(row, FEATURE_TYPE_SENTENCE, TEXT, origin))

    def process_training_data(self, training_data: TrainingData) -> TrainingData:
        self._featurize(training_data.training_examples)
        return training_data

    def process(self, messages: list[Message]) -> list[Message]:
        self._featurize(messages)
        return messages
