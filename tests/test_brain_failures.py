"""What Rasa swallows, the brain reports: an unreachable action server fails the turn with
:class:`ActionServerError` (the hub tells the customer and hands off), and a tracker store that
fails raises instead of Rasa's silent fall-back to memory. Rasa's real classes, no model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bot.brain import (
    ActionServerError,
    TrackerStoreError,
    collect_action_failures,
    install_action_failure_probe,
    strict_tracker_store,
)
from bot.client import ChatClient
from tests.hubtools import ScriptedBrain, free_port, running_hub, turn


def _tracker_and_domain() -> tuple[Any, Any]:
    from rasa.shared.core.domain import Domain
    from rasa.shared.core.events import UserUttered
    from rasa.shared.core.trackers import DialogueStateTracker

    domain = Domain.empty()
    tracker = DialogueStateTracker.from_events("c-1", [UserUttered("hello")], domain.slots)
    return tracker, domain


async def test_an_unreachable_action_server_is_recorded_for_the_turn() -> None:
    from rasa.core.actions.action import RemoteAction
    from rasa.core.channels.channel import CollectingOutputChannel
    from rasa.core.nlg import TemplatedNaturalLanguageGenerator
    from rasa.shared.exceptions import RasaException
    from rasa.utils.endpoints import EndpointConfig

    install_action_failure_probe()
    install_action_failure_probe()  # idempotent: one wrapper, one record per failure
    tracker, domain = _tracker_and_domain()
    action = RemoteAction("action_open_case", EndpointConfig(url=f"http://127.0.0.1:{free_port()}/webhook"))
    nlg = TemplatedNaturalLanguageGenerator(domain.responses)
    # Rasa raises; its processor would log this and carry on without the action's events.
    with collect_action_failures() as failures, pytest.raises(RasaException):
        await action.run(CollectingOutputChannel(), nlg, tracker, domain)
    assert len(failures) == 1 and failures[0].startswith("action_open_case: ")
    # Outside a turn nothing is collected (and nothing breaks).
    with pytest.raises(RasaException):
        await action.run(CollectingOutputChannel(), nlg, tracker, domain)


async def test_a_rejected_action_is_not_a_failure() -> None:
    """A form's validation rejecting a value (HTTP 400) is Rasa's normal flow, not an error."""
    from rasa.core.actions.action import ActionExecutionRejection, RemoteAction
    from rasa.core.channels.channel import CollectingOutputChannel
    from rasa.core.nlg import TemplatedNaturalLanguageGenerator
    from rasa.utils.endpoints import EndpointConfig
    from sanic import Sanic
    from sanic.response import json

    install_action_failure_probe()
    Sanic.test_mode = True
    app = Sanic("rejecting_action_server")

    @app.post("/webhook")
    async def webhook(request: Any) -> Any:
        return json({"action_name": "validate_form", "error": "no"}, status=400)

    port = free_port()
    server = await app.create_server(host="127.0.0.1", port=port, return_asyncio_server=True, access_log=False)
    assert server is not None
    await server.startup()
    try:
        tracker, domain = _tracker_and_domain()
        action = RemoteAction("validate_form", EndpointConfig(url=f"http://127.0.0.1:{port}/webhook"))
        with collect_action_failures() as failures, pytest.raises(ActionExecutionRejection):
            await action.run(CollectingOutputChannel(), TemplatedNaturalLanguageGenerator({}), tracker, domain)
        assert failures == []
    finally:
        server.close()
        await server.wait_closed()


class _BrokenStore:
    """A tracker store whose database is away."""

    domain: Any = None
    event_broker: Any = None

    async def retrieve(self, sender_id: str) -> Any:
        raise ConnectionError("server closed the connection unexpectedly")

    async def save(self, tracker: Any) -> None:
        raise ConnectionError("server closed the connection unexpectedly")


async def test_a_failing_tracker_store_fails_the_turn_instead_of_falling_back_to_memory() -> None:
    from rasa.core.tracker_store import FailSafeTrackerStore

    tracker, domain = _tracker_and_domain()
    stock = FailSafeTrackerStore(_BrokenStore())  # type: ignore[arg-type]
    # What Rasa does by itself: no error, a fresh conversation, the events kept in memory only.
    assert await stock.retrieve("c-1") is None
    await stock.save(tracker)
    assert await stock.fallback_tracker_store.retrieve("c-1") is not None

    strict = strict_tracker_store(FailSafeTrackerStore(_BrokenStore()))  # type: ignore[arg-type]
    with pytest.raises(TrackerStoreError, match="server closed the connection"):
        await strict.retrieve("c-1")
    with pytest.raises(TrackerStoreError):
        await strict.save(tracker)
    assert strict._fallback_tracker_store is None  # never created: nothing went to memory


async def test_an_action_failure_is_told_to_the_customer_and_hands_off(tmp_path: Path) -> None:
    class ActionDownBrain(ScriptedBrain):
        async def handle(self, conversation_id: str, text: str, metadata: dict[str, Any]) -> Any:
            self.calls.append(text)
            raise ActionServerError("action_open_case: Couldn't connect to the server")

    with running_hub(tmp_path, ActionDownBrain(lambda text, n: turn())) as srv:
        async with ChatClient(srv.ws_url, lang="en") as chat:
            await chat.say_and_ack("I want to complain about my bill")
            queued = await chat.wait_for(lambda f: f["type"] == "status" and f["status"] == "queued", timeout=10)
            assert queued["reason"] == "brain_error"
            await chat.drain(0.3)
            system = [m["text"] for m in chat.messages("system")]
            assert any("something went wrong" in text for text in system), system
            assert chat.messages("bot") == []
