"""The hub's refusal: a request an agent or customer may not make (imported from
:mod:`bot.hub.core` too, where it used to live)."""

from __future__ import annotations


class HubError(Exception):
    """A request an agent or customer may not make; ``code`` goes into the error frame."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message
