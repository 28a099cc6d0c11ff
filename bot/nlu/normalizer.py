"""Text normalisation as Rasa graph components (see ``docs/nlu.md``).

``TextNormalizer`` runs first, in training (``process_training_data``) and at parse time
(``process``). It is registered as a ``MESSAGE_TOKENIZER`` because that is the component type the
default recipe runs as a *process* node in the training graph as well as in the inference graph,
in pipeline order; it is not a ``Tokenizer`` subclass, so the one-tokenizer check does not count it.

The text functions live in ``bot.nlu.text`` and are length-preserving, so entity offsets computed on
the normalised text are valid on the original one.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from rasa.engine.graph import ExecutionContext, GraphComponent
from rasa.engine.recipes.default_recipe import DefaultV1Recipe
from rasa.engine.storage.resource import Resource
from rasa.engine.storage.storage import ModelStorage
from rasa.shared.constants import INTENT_MESSAGE_PREFIX
from rasa.shared.nlu.constants import ENTITIES, TEXT
from rasa.shared.nlu.training_data.message import Message
from rasa.shared.nlu.training_data.training_data import TrainingData

from bot.nlu.text import normalize_text, resolve_script

ORIGINAL_TEXT = "original_text"
NORMALIZED_TEXT = "normalized_text"
SCRIPT_ENTITY = "script"
EXTRACTOR = "TextNormalizer"

_SOURCES = (Path(__file__), Path(__file__).resolve().parent / "text.py")


def _source_fingerprint() -> str:
    """Rasa's training cache keys on the class source only; our logic is also in ``bot.nlu.text``."""
    digest = hashlib.sha256()
    for path in _SOURCES:
        digest.update(path.read_bytes())
    return digest.hexdigest()


def _skip(text: Any) -> bool:
    # "/intent{...}" messages (buttons, tests) are parsed verbatim by RegexMessageHandler.
    return not isinstance(text, str) or not text or text.startswith(INTENT_MESSAGE_PREFIX)


@DefaultV1Recipe.register([DefaultV1Recipe.ComponentType.MESSAGE_TOKENIZER], is_trainable=False)
class TextNormalizer(GraphComponent):
    """Traditional→Simplified, full→half width, lower case; the ``script`` entity."""

    @staticmethod
    def get_default_config() -> dict[str, Any]:
        return {
            # add {"entity": "script", "value": <lang>} to every parsed message with a signal
            "script_entity": True,
            # lower-case letters (entity values get their case back in OriginalTextRestorer)
            "casefold": True,
        }

    @classmethod
    def fingerprint_addon(cls, config: dict[str, Any]) -> str | None:
        return _source_fingerprint()

    def __init__(self, config: dict[str, Any]) -> None:
        self._config = {**self.get_default_config(), **config}

    @classmethod
    def create(
        cls,
        config: dict[str, Any],
        model_storage: ModelStorage,
        resource: Resource,
        execution_context: ExecutionContext,
    ) -> TextNormalizer:
        return cls(config)

    def _norm(self, text: str) -> str:
        return normalize_text(text, casefold=bool(self._config["casefold"]))

    def process_training_data(self, training_data: TrainingData) -> TrainingData:
        """Normalises examples, entity values that are plain spans, synonyms and lookup tables."""
        for message in training_data.training_examples:
            text = message.get(TEXT)
            if _skip(text):
                continue
            normalized = self._norm(text)
            entities = message.get(ENTITIES)
            if entities:
                fixed = []
                for entity in entities:
                    entity = dict(entity)
                    start, end = entity.get("start"), entity.get("end")
                    if start is not None and end is not None and entity.get("value") == text[start:end]:
                        entity["value"] = normalized[start:end]
                    fixed.append(entity)
                message.set(ENTITIES, fixed)
            message.set(ORIGINAL_TEXT, text)
            message.set(TEXT, normalized)

        training_data.entity_synonyms = {
            self._norm(str(key)): value for key, value in training_data.entity_synonyms.items()
        }
        for table in training_data.lookup_tables:
            elements = table.get("elements")
            if isinstance(elements, list):
                table["elements"] = list(dict.fromkeys(self._norm(str(e)) for e in elements))
        return training_data

    def process(self, messages: list[Message]) -> list[Message]:
        """Normalises ``text``; keeps the original under ``original_text``; adds the script entity."""
        for message in messages:
            text = message.get(TEXT)
            if _skip(text):
                continue
            message.set(ORIGINAL_TEXT, text)
            message.set(TEXT, self._norm(text))
            if self._config["script_entity"]:
                # The hub passes the conversation's script as metadata (Rasa hands UserMessage
                # metadata to NLU), so an ambiguous "基本方案" keeps a Traditional conversation.
                metadata = message.get("metadata") or {}
                previous = metadata.get("lang") if isinstance(metadata, dict) else None
                lang = resolve_script(text, previous)
                if lang is not None:
                    entity = {"entity": SCRIPT_ENTITY, "value": lang, "start": 0, "end": 0, "extractor": EXTRACTOR}
                    message.set(ENTITIES, [*message.get(ENTITIES, []), entity], add_to_output=True)
        return messages


@DefaultV1Recipe.register([DefaultV1Recipe.ComponentType.ENTITY_EXTRACTOR], is_trainable=False)
class OriginalTextRestorer(GraphComponent):
    """Put after the entity extractors and before ``EntitySynonymMapper``.

    Gives the parse result the customer's own text again (``normalized_text`` keeps what the model
    saw) and gives extracted entity values their letter case back: ``hl-20261104-0001`` →
    ``HL-20261104-0001``, ``ＳＯ２０２６１１０４`` → ``SO20261104``; values stay Simplified.
    """

    @classmethod
    def fingerprint_addon(cls, config: dict[str, Any]) -> str | None:
        return _source_fingerprint()

    @classmethod
    def create(
        cls,
        config: dict[str, Any],
        model_storage: ModelStorage,
        resource: Resource,
        execution_context: ExecutionContext,
    ) -> OriginalTextRestorer:
        return cls()

    def process(self, messages: list[Message]) -> list[Message]:
        for message in messages:
            original = message.get(ORIGINAL_TEXT)
            normalized = message.get(TEXT)
            if not isinstance(original, str) or not isinstance(normalized, str) or len(original) != len(normalized):
                continue
            entities = []
            for entity in message.get(ENTITIES, []):
                start, end = entity.get("start"), entity.get("end")
                if (
                    entity.get("extractor") != EXTRACTOR
                    and isinstance(start, int)
                    and isinstance(end, int)
                    and end > start
                    and entity.get("value") == normalized[start:end]
                ):
                    entity = {**entity, "value": normalize_text(original[start:end], casefold=False)}
                entities.append(entity)
            if entities:
                message.set(ENTITIES, entities, add_to_output=True)
            message.set(NORMALIZED_TEXT, normalized, add_to_output=True)
            message.set(TEXT, original)
        return messages
