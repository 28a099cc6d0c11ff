"""The hub: one Sanic app serving customers, agents, the REST API, the widget and the console.

``create_app(settings, brain=None, db=None)`` is the entry point; :class:`~bot.hub.core.Hub` holds
the conversations' state machine. See docs/hub.md.
"""

from bot.hub.app import create_app
from bot.hub.core import Hub, HubError

__all__ = ["Hub", "HubError", "create_app"]
