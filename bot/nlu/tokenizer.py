"""Jieba tokenisation without whitespace and punctuation tokens.

``jieba.tokenize`` returns every space between English words as a token of its own (and each
punctuation mark too); they carry no meaning and only dilute the featurizers, so they are dropped,
as Rasa's ``WhitespaceTokenizer`` does. Jieba's dictionary ships inside the package: nothing is
downloaded (the first use writes a prefix-dict cache to the temp directory).

English words get their Snowball stem as the token's ``lemma`` ("charged", "charging" → "charg";
"cancelled", "cancellation" → "cancel"), which the word-level ``CountVectorsFeaturizer`` counts
(``use_lemma``, its default): a customer's inflection then lands on the same feature as the
training data's. The stemmer is an algorithm, with no data to download. Chinese tokens keep
their text as the lemma.
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache
from typing import Any

from nltk.stem.snowball import EnglishStemmer
from rasa.engine.recipes.default_recipe import DefaultV1Recipe
from rasa.nlu.tokenizers.jieba_tokenizer import JiebaTokenizer
from rasa.nlu.tokenizers.tokenizer import Token
from rasa.shared.nlu.training_data.message import Message

_ENGLISH_WORD = re.compile(r"[a-z][a-z']*")
_STEMMER = EnglishStemmer()


@lru_cache(maxsize=65536)
def english_stem(word: str) -> str:
    """Snowball stem of a lower-case English word; any other token unchanged."""
    return _STEMMER.stem(word) if _ENGLISH_WORD.fullmatch(word) else word


def _is_noise(word: str) -> bool:
    return all(ch.isspace() or unicodedata.category(ch).startswith(("P", "Z", "C")) for ch in word)


@DefaultV1Recipe.register(DefaultV1Recipe.ComponentType.MESSAGE_TOKENIZER, is_trainable=True)
class HumanlineJiebaTokenizer(JiebaTokenizer):
    """``JiebaTokenizer`` that drops whitespace-only and punctuation-only tokens."""

    @staticmethod
    def supported_languages() -> list[str] | None:
        return ["zh", "en"]

    @staticmethod
    def get_default_config() -> dict[str, Any]:
        # stem_english: Snowball stems of English words as token lemmas (see the module docstring)
        return {**JiebaTokenizer.get_default_config(), "stem_english": True}

    def tokenize(self, message: Message, attribute: str) -> list[Token]:
        tokens = super().tokenize(message, attribute)
        kept = [t for t in tokens if not _is_noise(t.text)]
        if self._config.get("stem_english", True):
            for token in kept:
                token.lemma = english_stem(token.text)
        # A message of punctuation only ("？") keeps its tokens: every message needs one.
        return kept or tokens
