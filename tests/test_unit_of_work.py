"""Each agent and case command is one unit of work (issue #15): the change and its audit entry
commit together, and the events go out only after the commit. A failure injected between the
change and the audit entry (the audit write raises, as a crash or a lost database would) leaves
nothing half-done: no status changed without its audit, no case event or customer notification
without it, no event sent to an agent or a customer. On SQLite and on PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from bot.hub.errors import HubError
from bot.services.agents import AgentInfo
from bot.services.conversations import ConversationService
from bot.store.db import Database
from bot.store.models import AuditEntry, Case, CaseEvent, Conversation, Handoff, OutboxNotification
from tests.hubtools import GreeterBrain, RunningHub, running_hub


class Crash(RuntimeError):
    """The failure injected between a change and its audit entry."""


@pytest.fixture
def server(tmp_path: Path, db: Database) -> Iterator[RunningHub]:
    """A hub on SQLite and on PostgreSQL (the conftest ``db`` fixture)."""
    with running_hub(tmp_path, GreeterBrain(), db=db, agent_reply_timeout_s=300) as srv:
        yield srv


@pytest.fixture
def sue(server: RunningHub) -> AgentInfo:
    agent: AgentInfo = server.create_agent("sue", skills=("general",), display_name="Sue Boss", role="supervisor")
    return agent


def _queued(srv: RunningHub) -> str:
    conversations = ConversationService(srv.db)
    conv = conversations.create_conversation(conversations.create_visitor("en"))
    assert conversations.queue(conv.id, "general", "customer_request") is not None
    return conv.id


def _count(srv: RunningHub, stmt: Any) -> int:
    with srv.db.session() as s:
        return int(s.execute(stmt).scalar_one())


def _audits(srv: RunningHub, action: str) -> int:
    return _count(srv, select(func.count(AuditEntry.id)).where(AuditEntry.action == action))


def _conversation(srv: RunningHub, cid: str) -> tuple[str, int | None, str | None]:
    with srv.db.session() as s:
        c = s.get(Conversation, cid)
        assert c is not None
        return c.status, c.agent_id, c.queue


class Sent:
    """Records what the hub's bus delivers to agents and customers (the outbox publishes through
    it); ``fail`` makes the audit write raise."""

    def __init__(self, srv: RunningHub, monkeypatch: pytest.MonkeyPatch):
        hub = srv.hub
        self.frames: list[Any] = []
        self.fail = False
        emit, send_customers, record = hub.bus.emit, hub.bus.send_customers, hub.agents.record

        async def on_emit(recipients: list[int], frame: dict[str, Any]) -> dict[str, Any]:
            self.frames.append(("agent", frame["type"]))
            return dict(await emit(recipients, frame))

        async def on_send_customers(cid: str, frame: dict[str, Any], exclude: Any = None) -> bool:
            self.frames.append(("customer", frame["type"]))
            return bool(await send_customers(cid, frame, exclude))

        def on_record(*args: Any, **kwargs: Any) -> None:
            if self.fail:
                raise Crash("the hub died between the change and its audit entry")
            record(*args, **kwargs)

        monkeypatch.setattr(hub.bus, "emit", on_emit)
        monkeypatch.setattr(hub.bus, "send_customers", on_send_customers)
        monkeypatch.setattr(hub.agents, "record", on_record)


def test_a_claim_that_cannot_be_audited_is_not_made(
    server: RunningHub, sue: AgentInfo, monkeypatch: pytest.MonkeyPatch
) -> None:
    cid = _queued(server)
    sent = Sent(server, monkeypatch)
    sent.fail = True
    with pytest.raises(Crash):
        server.call(server.hub.claim(sue, cid))
    assert _conversation(server, cid) == ("queued", None, "general")
    with server.db.session() as s:
        assert s.execute(select(Handoff.agent_id).where(Handoff.conversation_id == cid)).scalar_one() is None
    assert _audits(server, "claim") == 0
    assert sent.frames == []  # nobody was told of an assignment that did not happen
    # The same claim without the failure: assigned, audited once, then announced.
    sent.fail = False
    server.call(server.hub.claim(sue, cid))
    assert _conversation(server, cid)[:2] == ("agent", sue.id)
    assert _audits(server, "claim") == 1
    assert ("agent", "assigned") in sent.frames


@pytest.mark.parametrize(
    ("command", "action", "status_after"),
    [("transfer", "transfer", "queued"), ("hand_back", "hand_back", "bot"), ("resolve", "resolve", "closed")],
)
def test_a_release_that_cannot_be_audited_is_not_made(
    server: RunningHub, sue: AgentInfo, monkeypatch: pytest.MonkeyPatch, command: str, action: str,
    status_after: str,
) -> None:
    cid = _queued(server)
    server.call(server.hub.claim(sue, cid))
    sent = Sent(server, monkeypatch)
    args = (sue, cid, "general") if command == "transfer" else (sue, cid)
    sent.fail = True
    with pytest.raises(Crash):
        server.call(getattr(server.hub, command)(*args))
    assert _conversation(server, cid)[:2] == ("agent", sue.id)  # still held: nothing changed
    with server.db.session() as s:
        open_handoffs = s.execute(
            select(func.count(Handoff.id)).where(Handoff.conversation_id == cid, Handoff.ended_at.is_(None))
        ).scalar_one()
    assert open_handoffs == 1
    assert _audits(server, action) == 0
    assert sent.frames == []
    sent.fail = False
    server.call(getattr(server.hub, command)(*args))
    assert _conversation(server, cid)[0] == status_after
    assert _audits(server, action) == 1
    assert ("agent", "released") in sent.frames


CASE_COMMANDS: list[tuple[str, tuple[Any, ...], str]] = [
    ("case_stage", ("verifying",), "stage_changed"),
    ("case_note", ("called the courier",), "note"),
    ("case_progress", ("the courier has it",), "progress_update"),
    ("case_extend", ("waiting for the bank", 24.0), "sla_extended"),
]


@pytest.mark.parametrize(("command", "args", "event"), CASE_COMMANDS)
def test_a_case_change_that_cannot_be_audited_is_not_made(
    server: RunningHub, sue: AgentInfo, monkeypatch: pytest.MonkeyPatch, command: str, args: tuple[Any, ...],
    event: str,
) -> None:
    visitor = ConversationService(server.db).create_visitor("en")
    number = server.hub.cases.open_case("refund", visitor_id=visitor, description="refund my order").number

    def state() -> tuple[Any, ...]:
        with server.db.session() as s:
            case = s.execute(select(Case).where(Case.number == number)).scalar_one()
            events = s.execute(
                select(func.count(CaseEvent.id)).where(CaseEvent.case_id == case.id, CaseEvent.kind == event)
            ).scalar_one()
            outbox = s.execute(select(func.count(OutboxNotification.id))).scalar_one()
            return case.stage, case.next_update_due_at, case.updated_at, events, outbox

    before = state()
    sent = Sent(server, monkeypatch)
    sent.fail = True
    with pytest.raises(Crash):
        server.call(getattr(server.hub, command)(sue, number, *args, "conv-1"))
    assert state() == before  # no change, no case event, no customer or internal notification
    assert _audits(server, command) == 0
    assert sent.frames == []  # the case panel was not refreshed with a change that did not happen
    sent.fail = False
    server.call(getattr(server.hub, command)(sue, number, *args, "conv-1"))
    after = state()
    assert after[3] == before[3] + 1  # its case event
    assert after[4] > before[4]  # its notification (customer, or internal for a note)
    assert _audits(server, command) == 1
    assert ("agent", "case") in sent.frames


def test_a_refused_case_change_is_not_audited(server: RunningHub, sue: AgentInfo) -> None:
    visitor = ConversationService(server.db).create_visitor("en")
    number = server.hub.cases.open_case("refund", visitor_id=visitor, description="refund my order").number
    with pytest.raises(HubError) as refused:
        server.call(server.hub.case_stage(sue, number, "accepted"))  # backwards: the lifecycle refuses
    assert refused.value.code == "invalid_case"
    assert _audits(server, "case_stage") == 0


def test_an_agent_message_that_cannot_be_audited_is_not_stored(
    server: RunningHub, sue: AgentInfo, monkeypatch: pytest.MonkeyPatch
) -> None:
    conversations = ConversationService(server.db)
    cid = _queued(server)
    conv = conversations.get(cid)
    assert conv is not None
    case = server.hub.cases.open_case("refund", visitor_id=conv.visitor_id, conversation_id=cid, description="refund")
    conversations.set_case(cid, case.id)
    server.call(server.hub.claim(sue, cid))
    before = [m.seq for m in conversations.messages_after(cid, 0)]
    sent = Sent(server, monkeypatch)
    sent.fail = True
    with pytest.raises(Crash):
        server.call(server.hub.agent_message(sue, cid, "Hello, I am looking at it", "m-1"))
    assert [m.seq for m in conversations.messages_after(cid, 0)] == before  # not stored, no seq used
    assert server.hub.cases.get(case.number).first_responded_at is None  # the case's clock still runs
    with server.db.session() as s:
        replied = s.execute(select(Handoff.first_agent_reply_at).where(
            Handoff.conversation_id == cid, Handoff.ended_at.is_(None))).scalar_one()
    assert replied is None
    assert _audits(server, "message") == 0
    assert sent.frames == []  # the customer never saw a message that was not stored
    # The same message (same id) without the failure: stored once, audited, then sent.
    sent.fail = False
    server.call(server.hub.agent_message(sue, cid, "Hello, I am looking at it", "m-1"))
    stored = [m for m in conversations.messages_after(cid, 0) if m.sender == "agent"]
    assert [m.text for m in stored] == ["Hello, I am looking at it"]
    assert server.hub.cases.get(case.number).first_responded_at is not None
    assert _audits(server, "message") == 1
    assert ("customer", "message") in sent.frames
