"""The scripted conversations of the multi-turn evaluation (``eval/dialogues/<script>.yml``).

Each file holds the conversations of one script (``en``, ``zh-Hans``, ``zh-Hant``)::

    lang: en                      # sent as the hello frame's ``lang``
    conversations:
      - id: en-downgrade-negation # unique over all files
        description: not cancel, not refund, just downgrade; confirmed with the button
        tags: [negation, plan_change, confirmed]
        turns:
          - "Not cancel, not a refund, I just want to go down to Basic"
          - {button: Confirm, payload: /affirm, confirm: true}
        handoff_by: null          # or K: the customer's K-th message must leave the conversation
                                  # queued/with an agent (a status frame queued/agent has arrived)
        allowed_changes:          # plan changes that may be recorded (after a confirming turn)
          - {kind: downgrade, to: basic}
        queue: safety             # optional: the queue the handoff is expected in (reported only)

A turn is a customer text (a YAML string), ``{text: ..., confirm: true}`` for a typed explicit
confirmation, or a button press ``{button: <title or [titles]>, payload?: ..., confirm?: bool}``:
click the button of the last bot message with that title (case-insensitive; else the one with that
payload); when the bot offered no such button, the payload is sent as the widget would (or, without
a payload, the first title is typed as text) and the turn is flagged ``button_missing``.

This module only loads and validates; :mod:`bot.dialogue_eval` plays and scores. YAML reads a bare
``yes``/``no``/``on`` as a boolean and ``1`` as a number: quote such turns (the loader refuses them).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from bot.i18n import LANGS
from bot.settings import ROOT

DIALOGUES_DIR = ROOT / "eval" / "dialogues"
SCRIPTS: tuple[str, ...] = LANGS
CHANGE_KINDS: tuple[str, ...] = ("upgrade", "downgrade", "cancel")
MIN_PER_SCRIPT = 30


class DialogueSchemaError(ValueError):
    """A conversation file that does not follow the schema (the message says where)."""


@dataclass(frozen=True)
class Turn:
    """One customer turn: typed ``text``, or a click on the button titled one of ``button``."""

    text: str | None = None
    button: tuple[str, ...] = ()
    payload: str | None = None
    confirm: bool = False

    @property
    def is_button(self) -> bool:
        return bool(self.button)

    def label(self) -> str:
        """How the turn reads in a transcript."""
        if self.is_button:
            return f"[button {self.button[0]}]"
        return self.text or ""


@dataclass(frozen=True)
class AllowedChange:
    """A plan change that may be recorded: its kind and, unless a cancellation, the target plan
    (``None`` accepts any target)."""

    kind: str
    to: str | None = None

    def matches(self, kind: str, to_plan: str | None) -> bool:
        return kind == self.kind and (self.to is None or self.to == to_plan)


@dataclass(frozen=True)
class Dialogue:
    """One scripted conversation and what must (and must not) happen in it."""

    id: str
    script: str
    lang: str
    description: str
    turns: tuple[Turn, ...]
    handoff_by: int | None
    allowed_changes: tuple[AllowedChange, ...] = ()
    queue: str | None = None
    tags: tuple[str, ...] = field(default_factory=tuple)

    def texts(self) -> Iterator[tuple[int, str]]:
        """(1-based turn number, text) of every typed customer turn (button presses excluded)."""
        for i, turn in enumerate(self.turns, start=1):
            if turn.text is not None and not turn.is_button:
                yield i, turn.text


def _fail(where: str, message: str) -> DialogueSchemaError:
    return DialogueSchemaError(f"{where}: {message}")


def _turn(raw: Any, where: str) -> Turn:
    if isinstance(raw, str):
        if not raw.strip():
            raise _fail(where, "an empty turn")
        return Turn(text=raw)
    if not isinstance(raw, dict):
        raise _fail(where, f"a turn is a string or a mapping, not {type(raw).__name__} {raw!r} (quote yes/no/numbers)")
    unknown = set(raw) - {"text", "button", "payload", "confirm"}
    if unknown:
        raise _fail(where, f"unknown turn keys {sorted(unknown)}")
    confirm = raw.get("confirm", False)
    if not isinstance(confirm, bool):
        raise _fail(where, "confirm must be true or false")
    if "button" in raw:
        if "text" in raw:
            raise _fail(where, "a turn is either text or a button")
        titles = raw["button"] if isinstance(raw["button"], list) else [raw["button"]]
        if not titles or not all(isinstance(t, str) and t.strip() for t in titles):
            raise _fail(where, "button must be a title or a list of titles")
        payload = raw.get("payload")
        if payload is not None and (not isinstance(payload, str) or not payload.strip()):
            raise _fail(where, "payload must be a non-empty string")
        return Turn(button=tuple(titles), payload=payload, confirm=confirm)
    text = raw.get("text")
    if not isinstance(text, str) or not text.strip():
        raise _fail(where, "a mapping turn needs text (a string) or button")
    if "payload" in raw:
        raise _fail(where, "payload belongs to a button turn")
    return Turn(text=text, confirm=confirm)


def _allowed(raw: Any, where: str) -> tuple[AllowedChange, ...]:
    if not isinstance(raw, list):
        raise _fail(where, "allowed_changes must be a list (use [] for none)")
    out = []
    for j, item in enumerate(raw):
        w = f"{where}[{j}]"
        if not isinstance(item, dict) or set(item) - {"kind", "to"}:
            raise _fail(w, "an allowed change is {kind: upgrade|downgrade|cancel, to: <plan id>}")
        kind = item.get("kind")
        if kind not in CHANGE_KINDS:
            raise _fail(w, f"kind must be one of {CHANGE_KINDS}, not {kind!r}")
        to = item.get("to")
        if to is not None and not isinstance(to, str):
            raise _fail(w, "to must be a plan id")
        if kind == "cancel" and to is not None:
            raise _fail(w, "a cancellation has no target plan")
        out.append(AllowedChange(kind, to))
    return tuple(out)


def parse_dialogue(raw: Any, script: str, lang: str, where: str) -> Dialogue:
    """One conversation from its YAML mapping. :raises DialogueSchemaError: it breaks the schema."""
    if not isinstance(raw, dict):
        raise _fail(where, "a conversation is a mapping")
    required = {"id", "description", "turns", "handoff_by", "allowed_changes"}
    missing = required - set(raw)
    if missing:
        raise _fail(where, f"missing {sorted(missing)}")
    unknown = set(raw) - required - {"queue", "tags", "lang"}
    if unknown:
        raise _fail(where, f"unknown keys {sorted(unknown)}")
    cid = raw["id"]
    if not isinstance(cid, str) or not cid.strip():
        raise _fail(where, "id must be a non-empty string")
    where = f"{where} ({cid})"
    if not isinstance(raw["description"], str) or not raw["description"].strip():
        raise _fail(where, "description must be a non-empty string")
    if not isinstance(raw["turns"], list) or not raw["turns"]:
        raise _fail(where, "turns must be a non-empty list")
    turns = tuple(_turn(t, f"{where} turn {i}") for i, t in enumerate(raw["turns"], start=1))
    handoff_by = raw["handoff_by"]
    if handoff_by is not None and (
        isinstance(handoff_by, bool) or not isinstance(handoff_by, int) or not 1 <= handoff_by <= len(turns)
    ):
        raise _fail(where, f"handoff_by must be null or a turn number 1..{len(turns)}, not {handoff_by!r}")
    allowed = _allowed(raw["allowed_changes"], f"{where} allowed_changes")
    if allowed and not any(t.confirm for t in turns):
        raise _fail(where, "allowed_changes without any confirming turn could never be met")
    queue = raw.get("queue")
    if queue is not None and not isinstance(queue, str):
        raise _fail(where, "queue must be a queue name")
    tags = raw.get("tags") or []
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        raise _fail(where, "tags must be a list of strings")
    conv_lang = raw.get("lang", lang)
    if not isinstance(conv_lang, str):
        raise _fail(where, "lang must be a string")
    return Dialogue(cid, script, conv_lang, raw["description"].strip(), turns, handoff_by, allowed, queue,
                    tuple(tags))


def load_script(path: Path) -> list[Dialogue]:
    """The conversations of one file; its stem is the script."""
    script = path.stem
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise _fail(str(path), f"not valid YAML: {e}") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("conversations"), list):
        raise _fail(str(path), "expected a mapping with lang and conversations")
    lang = raw.get("lang", script)
    if not isinstance(lang, str):
        raise _fail(str(path), "lang must be a string")
    return [
        parse_dialogue(item, script, lang, f"{path.name} conversation {i}")
        for i, item in enumerate(raw["conversations"], start=1)
    ]


def load_dialogues(folder: Path = DIALOGUES_DIR, scripts: tuple[str, ...] = SCRIPTS) -> list[Dialogue]:
    """Every conversation of ``folder/<script>.yml`` for each script, in file order.

    :raises DialogueSchemaError: a file is missing or breaks the schema, or an id repeats.
    """
    out: list[Dialogue] = []
    for script in scripts:
        path = folder / f"{script}.yml"
        if not path.is_file():
            raise _fail(str(path), "missing")
        out += load_script(path)
    seen: set[str] = set()
    for d in out:
        if d.id in seen:
            raise _fail(d.script, f"id {d.id!r} used twice")
        seen.add(d.id)
    return out


__all__ = [
    "CHANGE_KINDS",
    "DIALOGUES_DIR",
    "MIN_PER_SCRIPT",
    "SCRIPTS",
    "AllowedChange",
    "Dialogue",
    "DialogueSchemaError",
    "Turn",
    "load_dialogues",
    "load_script",
    "parse_dialogue",
]
