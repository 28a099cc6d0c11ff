"""The guard's path is typed end to end (issue #15): no ``Any`` and no bare ``type`` from the
guard state as stored to the decision the hub acts on.

mypy checks the bodies (``pyproject.toml`` makes ``bot.guard`` admit no explicit ``Any``); this
pins the signatures of the service methods that load, decide and save the guard state, where an
``Any`` would silently switch mypy's checks off for every caller.
"""

from __future__ import annotations

import dataclasses
import inspect
import typing
from collections.abc import Callable
from typing import Any

import pytest

from bot import guard
from bot.services import conversations
from bot.services.conversations import ConversationService, FinishedTurn


def _loose(hint: object) -> list[object]:
    """The parts of a type hint that switch type checking off: ``Any`` or a bare ``type``."""
    if hint is Any or hint is type:
        return [hint]
    return [part for arg in typing.get_args(hint) for part in _loose(arg)]


GUARD_PATH: list[Callable[..., object]] = [
    ConversationService.load_guard_state,
    ConversationService.get_with_guard_state,
    ConversationService.finish_turn,
    ConversationService.finish_bot_turn,
    ConversationService.save_guard_state,
    guard.GuardState.to_json,
    guard.GuardState.from_json,
    guard.HandoffGuard.before_turn,
    guard.HandoffGuard.after_turn,
    guard.HandoffGuard.resolves,
    guard.HandoffGuard.hand_back,
]


@pytest.mark.parametrize("function", GUARD_PATH, ids=lambda f: f.__qualname__)
def test_the_guard_path_signatures_have_no_any(function: Callable[..., object]) -> None:
    hints = typing.get_type_hints(function, vars(conversations) | vars(guard))
    params = [p for p in inspect.signature(function).parameters if p not in ("self", "cls")]
    assert set(hints) == {*params, "return"}, "not every parameter is annotated"
    loose = {name: _loose(hint) for name, hint in hints.items() if _loose(hint)}
    assert loose == {}


@pytest.mark.parametrize("cls", [FinishedTurn, guard.Decision, guard.GuardState, guard.TurnOutcome])
def test_the_guard_path_values_have_no_any(cls: type) -> None:
    hints = typing.get_type_hints(cls, vars(conversations) | vars(guard))
    loose = {f.name: _loose(hints[f.name]) for f in dataclasses.fields(cls) if _loose(hints[f.name])}
    assert loose == {}
