"""The whole system as a user meets it, for end-to-end and browser tests: see :mod:`bot.live_system`
(shared with the dialogue evaluation, ``python -m bot eval-dialogue``)."""

from __future__ import annotations

from bot.live_system import ALL_QUEUES, LiveSystem, start_live_system

__all__ = ["ALL_QUEUES", "LiveSystem", "start_live_system"]
