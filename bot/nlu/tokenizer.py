"""Jieba tokenisation without whitespace and punctuation tokens.

``jieba.tokenize`` returns every space between English words as a token of its own (and each
punctuation mark too); they carry no meaning and only dilute the featurizers, so they are dropped,
as Rasa's ``WhitespaceTokenizer`` does. Jieba's dictionary ships inside the package: nothing is
downloaded (the first use writes a prefix-dict cache to the temp directory).
"""

from __future__ import annotations

import unicodedata

from rasa.engine.recipes.default_recipe import DefaultV1Recipe
from rasa.nlu.tokenizers.jieba_tokenizer import JiebaTokenizer
from rasa.nlu.tokenizers.tokenizer import Token
from rasa.shared.nlu.training_data.message import Message


def _is_noise(word: str) -> bool:
    return all(ch.isspace() or unicodedata.category(ch).startswith(("P", "Z", "C")) for ch in word)


@DefaultV1Recipe.register(DefaultV1Recipe.ComponentType.MESSAGE_TOKENIZER, is_trainable=True)
class HumanlineJiebaTokenizer(JiebaTokenizer):
    """``JiebaTokenizer`` that drops whitespace-only and punctuation-only tokens."""

    @staticmethod
    def supported_languages() -> list[str] | None:
        return ["zh", "en"]

    def tokenize(self, message: Message, attribute: str) -> list[Token]:
        tokens = super().tokenize(message, attribute)
        kept = [t for t in tokens if not _is_noise(t.text)]
        # A message of punctuation only ("？") keeps its tokens: every message needs one.
        return kept or tokens
