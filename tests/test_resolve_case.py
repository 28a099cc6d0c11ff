"""Resolving a conversation can resolve its open case too, in one unit of work: the ``resolve``
frame's optional ``"case": {"resolution": text}``. The release, the case's move to ``resolved``
with a ``resolution`` event the customer sees, its customer notification, the audit entries and
the events commit together; a refused or failed case step leaves the conversation held and the
case as it was. Without ``case`` the case stays open (the agent keeps it for another team). Through
the real hub, on SQLite and on PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from bot.hub.errors import HubError
from bot.services.agents import AgentInfo
from bot.services.case_page import CasePageService
from bot.services.conversations import ConversationService
from bot.store.db import Database
from bot.store.models import AuditEntry, Case, CaseEvent, Conversation, OutboxNotification
from tests.hubtools import AgentClient, GreeterBrain, RunningHub, running_hub


class Crash(RuntimeError):
    """The failure injected in the case step."""


@pytest.fixture
def server(tmp_path: Path, db: Database) -> Iterator[RunningHub]:
    """A hub on SQLite and on PostgreSQL (the conftest ``db`` fixture)."""
    with running_hub(tmp_path, GreeterBrain(), db=db, agent_reply_timeout_s=300) as srv:
        yield srv


@pytest.fixture
def sue(server: RunningHub) -> AgentInfo:
    agent: AgentInfo = server.create_agent("sue", skills=("general",), display_name="Sue Boss")
    return agent


def _held_with_case(srv: RunningHub, agent: AgentInfo) -> tuple[str, str]:
    """A conversation ``agent`` holds, with an open refund case: (conversation id, case number)."""
    conversations = ConversationService(srv.db)
    visitor = conversations.create_visitor("en")
    conv = conversations.create_conversation(visitor)
    case = srv.hub.cases.open_case("refund", visitor_id=visitor, conversation_id=conv.id, description="refund")
    conversations.set_case(conv.id, case.id)
    assert conversations.queue(conv.id, "general", "customer_request") is not None
    srv.call(srv.hub.claim(agent, conv.id))
    return conv.id, case.number


def _state(srv: RunningHub, cid: str, number: str) -> tuple[Any, ...]:
    with srv.db.session() as s:
        conv = s.get(Conversation, cid)
        assert conv is not None
        case = s.execute(select(Case).where(Case.number == number)).scalar_one()
        events = s.execute(select(func.count(CaseEvent.id)).where(CaseEvent.case_id == case.id)).scalar_one()
        notes = s.execute(select(func.count(OutboxNotification.id))).scalar_one()
        audits = s.execute(select(func.count(AuditEntry.id))).scalar_one()
        return conv.status, conv.agent_id, case.stage, case.resolved_at, events, notes, audits


def _audit(srv: RunningHub, action: str) -> list[tuple[str | None, Any]]:
    with srv.db.session() as s:
        rows = s.execute(select(AuditEntry.target, AuditEntry.detail).where(AuditEntry.action == action))
        return [(r[0], r[1]) for r in rows]


def test_resolving_with_a_resolution_resolves_the_case_in_the_same_command(server: RunningHub, sue: AgentInfo) -> None:
    cid, number = _held_with_case(server, sue)
    server.call(server.hub.resolve(sue, cid, "Refund of 20 EUR sent to your card."))
    status, agent_id, stage, resolved_at, *_ = _state(server, cid, number)
    assert (status, agent_id, stage) == ("closed", None, "resolved")
    assert resolved_at is not None
    assert [t for t, _ in _audit(server, "resolve")] == [cid]
    assert [t for t, _ in _audit(server, "case_stage")] == [number]
    # The customer sees the resolution on the case page and in the notification.
    page = CasePageService(server.hub.cases).view(number)
    assert {"kind": "resolution", "detail": "Refund of 20 EUR sent to your card."}.items() <= next(
        e for e in page["events"] if e["kind"] == "resolution").items()
    assert page["can_confirm"] is True
    with server.db.session() as s:
        payloads = [n.payload for n in s.execute(select(OutboxNotification)).scalars()]
    resolved = [p for p in payloads if isinstance(p, dict) and p.get("event") == "resolved"]
    assert resolved and resolved[-1]["resolution"] == "Refund of 20 EUR sent to your card."


def test_resolving_without_a_resolution_keeps_the_case_open(server: RunningHub, sue: AgentInfo) -> None:
    cid, number = _held_with_case(server, sue)
    server.call(server.hub.resolve(sue, cid))
    status, _, stage, *_ = _state(server, cid, number)
    assert (status, stage) == ("closed", "accepted")
    assert _audit(server, "case_stage") == []


def test_a_failure_in_the_case_step_leaves_the_conversation_unresolved(
    server: RunningHub, sue: AgentInfo, monkeypatch: pytest.MonkeyPatch
) -> None:
    cid, number = _held_with_case(server, sue)
    before = _state(server, cid, number)
    cases = server.hub.cases
    real_move = cases._move

    def crashing_move(*args: Any, **kwargs: Any) -> None:
        real_move(*args, **kwargs)  # the case moved in the transaction, then the step fails
        raise Crash("the database went away in the case step")

    monkeypatch.setattr(cases, "_move", crashing_move)
    with pytest.raises(Crash):
        server.call(server.hub.resolve(sue, cid, "Refund sent."))
    assert _state(server, cid, number) == before  # still held, case open, no event/notice/audit
    monkeypatch.setattr(cases, "_move", real_move)
    server.call(server.hub.resolve(sue, cid, "Refund sent."))
    assert _state(server, cid, number)[:3] == ("closed", None, "resolved")


@pytest.mark.parametrize("resolution", ["", "   "])
def test_an_empty_resolution_is_refused_and_nothing_changes(
    server: RunningHub, sue: AgentInfo, resolution: str
) -> None:
    cid, number = _held_with_case(server, sue)
    before = _state(server, cid, number)
    with pytest.raises(HubError) as refused:
        server.call(server.hub.resolve(sue, cid, resolution))
    assert refused.value.code == "missing_field"
    assert _state(server, cid, number) == before


def test_a_case_resolved_already_is_refused_and_the_conversation_stays_held(
    server: RunningHub, sue: AgentInfo
) -> None:
    cid, number = _held_with_case(server, sue)
    server.call(server.hub.case_stage(sue, number, "resolved", cid))
    before = _state(server, cid, number)
    with pytest.raises(HubError) as refused:
        server.call(server.hub.resolve(sue, cid, "Refund sent."))
    assert refused.value.code == "invalid_case"
    assert "resolved already" in refused.value.message
    assert _state(server, cid, number) == before


def test_a_conversation_without_a_case_refuses_a_case_resolution(server: RunningHub, sue: AgentInfo) -> None:
    conversations = ConversationService(server.db)
    conv = conversations.create_conversation(conversations.create_visitor("en"))
    assert conversations.queue(conv.id, "general", "customer_request") is not None
    server.call(server.hub.claim(sue, conv.id))
    with pytest.raises(HubError) as refused:
        server.call(server.hub.resolve(sue, conv.id, "Refund sent."))
    assert refused.value.code == "invalid_case"
    with server.db.session() as s:
        c = s.get(Conversation, conv.id)
        assert c is not None and c.status == "agent"


def test_another_agents_conversation_is_refused_and_its_case_untouched(server: RunningHub, sue: AgentInfo) -> None:
    cid, number = _held_with_case(server, sue)
    bob: AgentInfo = server.create_agent("bob", skills=("general",), display_name="Bob")
    before = _state(server, cid, number)
    with pytest.raises(HubError) as refused:
        server.call(server.hub.resolve(bob, cid, "Refund sent."))
    assert refused.value.code == "forbidden"
    assert _state(server, cid, number) == before


def test_the_resolve_frame_carries_the_case_resolution(server: RunningHub, sue: AgentInfo) -> None:
    cid, number = _held_with_case(server, sue)

    async def scenario() -> list[dict[str, Any]]:
        token = await asyncio.to_thread(server.login, "sue")
        client = AgentClient(server.agent_ws_url, token)
        try:
            assert (await client.connect())["type"] == "ready"
            await client.send({"type": "resolve", "conversation_id": cid, "case": {"resolution": " "}})
            error = await client.wait_for(lambda f: f["type"] == "error")
            await client.send({"type": "resolve", "conversation_id": cid, "case": {"resolution": "x" * 501}})
            too_long = await client.wait_for(lambda f: f["type"] == "error" and f is not error)
            assert too_long["code"] == "text_too_long"
            await client.send({"type": "resolve", "conversation_id": cid, "case": {"resolution": "Refund sent."}})
            released = await client.wait_for(lambda f: f["type"] == "released" and f["conversation_id"] == cid)
            return [error, released]
        finally:
            await client.close()

    error, released = asyncio.run(scenario())
    assert error["code"] == "missing_field" and error["conversation_id"] == cid
    assert released["reason"] == "resolved"
    assert _state(server, cid, number)[:3] == ("closed", None, "resolved")
