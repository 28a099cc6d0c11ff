"""Each agent and case command is one unit of work (issue #15): the change, its audit entry, the
customer's system notice and the events it emits (the hub's transactional outbox,
bot/hub/outbox.py) commit together, and the events go out only after the commit. A failure
injected between the change and its audit entry or its notice (the write raises, as a crash or a
lost database would) leaves nothing half-done: no status changed without its audit and its
notice, no case event or customer notification without it, no event sent to an agent or a
customer. A crash after the commit and before the events were published (the bus refuses them,
or the hub stops there) loses nothing: the relay publishes them, after a restart too, once. On
SQLite and on PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from bot.hub.errors import HubError
from bot.services.agents import AgentInfo, AgentService
from bot.services.conversations import ConversationService
from bot.services.hub_outbox import HubOutboxStore, add
from bot.store.db import Database
from bot.store.models import AuditEntry, Case, CaseEvent, Conversation, Handoff, HubEvent, OutboxNotification
from tests.hubtools import AgentClient, GreeterBrain, RunningHub, running_hub


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


# ---- the notice is part of the unit of work --------------------------------------------------


def _notices(srv: RunningHub, cid: str) -> list[str]:
    return [m.text for m in ConversationService(srv.db).messages_after(cid, 0) if m.sender == "system"]


def _unpublished(srv: RunningHub) -> int:
    return _count(srv, select(func.count(HubEvent.id)))


@pytest.mark.parametrize("command", ["claim", "transfer", "hand_back", "resolve"])
def test_a_command_whose_notice_cannot_be_stored_is_not_made(
    server: RunningHub, sue: AgentInfo, monkeypatch: pytest.MonkeyPatch, command: str
) -> None:
    """A failure between the change and the customer's notice undoes the change: never a status
    changed that the customer was not told of (the notice used to be written after the commit)."""
    cid = _queued(server)
    if command != "claim":
        server.call(server.hub.claim(sue, cid))
    before = _conversation(server, cid), _notices(server, cid), _audits(server, command), _unpublished(server)
    sent = Sent(server, monkeypatch)
    append = server.hub.conversations.append

    def failing_append(conversation_id: str, sender: str, text: str, **kwargs: Any) -> Any:
        if sender == "system":
            raise Crash("the hub died between the change and the customer's notice")
        return append(conversation_id, sender, text, **kwargs)

    monkeypatch.setattr(server.hub.conversations, "append", failing_append)
    args = (sue, cid, "general") if command == "transfer" else (sue, cid)
    with pytest.raises(Crash):
        server.call(getattr(server.hub, command)(*args))
    after = _conversation(server, cid), _notices(server, cid), _audits(server, command), _unpublished(server)
    assert after == before  # same status, no notice, no audit entry, no event waiting
    assert sent.frames == []


def test_a_failed_audit_takes_the_notice_and_the_events_with_it(
    server: RunningHub, sue: AgentInfo, monkeypatch: pytest.MonkeyPatch
) -> None:
    cid = _queued(server)
    sent = Sent(server, monkeypatch)
    sent.fail = True
    with pytest.raises(Crash):
        server.call(server.hub.claim(sue, cid))
    assert _notices(server, cid) == []
    assert _unpublished(server) == 0
    sent.fail = False
    server.call(server.hub.claim(sue, cid))
    assert len(_notices(server, cid)) == 1
    assert _unpublished(server) == 0  # published after the commit, then deleted


# ---- a crash between the commit and the publication -------------------------------------------

#: the frame types agent commands send (the queue views — "queue", queued "status" — are not theirs)
COMMAND_FRAMES = {"assigned", "claimed", "released", "message", "status", "case"}


class Bus:
    """Wraps the hub's bus: while ``down`` it refuses the frames of agent commands (raises, as a
    hub dying right after the commit would never send them); records what it delivered."""

    def __init__(self, srv: RunningHub, monkeypatch: pytest.MonkeyPatch) -> None:
        bus = srv.hub.bus
        self.down = False
        self.agents: list[dict[str, Any]] = []
        self.customers: list[tuple[str, dict[str, Any]]] = []
        emit, send_customers = bus.emit, bus.send_customers

        async def on_emit(recipients: list[int], frame: dict[str, Any]) -> dict[str, Any]:
            if self.down and frame["type"] in COMMAND_FRAMES:
                raise Crash("the hub died after the commit, before publishing")
            self.agents.append(frame)
            return dict(await emit(recipients, frame))

        async def on_send_customers(cid: str, frame: dict[str, Any], exclude: Any = None) -> bool:
            if self.down and frame["type"] in COMMAND_FRAMES:
                raise Crash("the hub died after the commit, before publishing")
            self.customers.append((cid, frame))
            return bool(await send_customers(cid, frame, exclude))

        monkeypatch.setattr(bus, "emit", on_emit)
        monkeypatch.setattr(bus, "send_customers", on_send_customers)


RELAY = {"outbox_relay_grace_s": 0.5, "outbox_relay_interval_s": 0.1}


@pytest.fixture
def relaying(tmp_path: Path, db: Database) -> Iterator[RunningHub]:
    """A hub whose relay takes over events unpublished for half a second."""
    with running_hub(tmp_path, GreeterBrain(), db=db, agent_reply_timeout_s=300, **RELAY) as srv:
        yield srv


def _absent_agent(srv: RunningHub) -> AgentInfo:
    """Sue, not available (no auto-assignment: the test claims by hand)."""
    agents = AgentService(srv.db)
    sue: AgentInfo = srv.create_agent("sue", skills=("general",), display_name="Sue Boss", role="supervisor")
    return agents.set_available(sue, False)


async def _connected(srv: RunningHub, last_event_id: int | None = None) -> AgentClient:
    token = await asyncio.to_thread(srv.login, "sue")
    client = AgentClient(srv.agent_ws_url, token)
    assert (await client.connect(last_event_id))["type"] == "ready"
    return client


async def _on_hub(srv: RunningHub, coro: Any) -> Any:
    return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, srv.loop))


async def _until_published(srv: RunningHub, timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while _unpublished(srv):
        assert asyncio.get_running_loop().time() < deadline, "the outbox was not relayed"
        await asyncio.sleep(0.05)


def test_events_the_bus_refused_after_the_commit_are_relayed(
    relaying: RunningHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    srv = relaying
    sue = _absent_agent(srv)
    cid = _queued(srv)
    bus = Bus(srv, monkeypatch)

    async def scenario() -> None:
        agent = await _connected(srv)
        bus.down = True
        with contextlib.suppress(Crash):  # the old hub failed the command here, after its commit
            await _on_hub(srv, srv.hub.claim(sue, cid))
        assert _conversation(srv, cid)[:2] == ("agent", sue.id)
        assert len(_notices(srv, cid)) == 1  # stored with the change, whatever became of the bus
        await asyncio.sleep(1.0)  # the relay tries, and the bus still refuses
        assert _unpublished(srv) > 0
        bus.down = False
        assigned = await agent.wait_for(lambda f: f["type"] == "assigned" and f["conversation_id"] == cid)
        assert [m["sender"] for m in assigned["transcript"]] == ["system"]  # its view, built when published
        await _until_published(srv)
        await asyncio.sleep(1.5)  # three grace periods: nothing is relayed twice
        assert [f["type"] for f in agent.frames if f.get("conversation_id") == cid] == ["assigned"]
        await agent.close()

    asyncio.run(scenario())
    customer = [f for c, f in bus.customers if c == cid]
    assert [(f["type"], f.get("sender"), f.get("status")) for f in customer] == [
        ("message", "system", None), ("status", None, "agent")]
    assert customer[1]["agent_name"] == "Sue Boss"


def test_no_event_is_delivered_twice_in_the_normal_path(relaying: RunningHub, monkeypatch: pytest.MonkeyPatch) -> None:
    srv = relaying
    sue = _absent_agent(srv)
    cid = _queued(srv)
    bus = Bus(srv, monkeypatch)

    async def scenario() -> None:
        agent = await _connected(srv)
        await _on_hub(srv, srv.hub.claim(sue, cid))
        await _on_hub(srv, srv.hub.agent_message(sue, cid, "Hello", "m-1"))
        await _on_hub(srv, srv.hub.resolve(sue, cid))
        await agent.wait_for(lambda f: f["type"] == "released" and f["conversation_id"] == cid)
        assert _unpublished(srv) == 0  # published and deleted by the command itself
        await asyncio.sleep(1.5)  # the relay runs every 0.1 s with a 0.5 s grace: finds nothing
        mine = [(f["type"], f.get("seq")) for f in agent.frames if f.get("conversation_id") == cid]
        assert mine == [("assigned", None), ("message", 2), ("released", None)]
        await agent.close()

    asyncio.run(scenario())
    customer = [(f["type"], f.get("seq") or f.get("status")) for c, f in bus.customers if c == cid]
    assert customer == [("message", 1), ("status", "agent"), ("message", 2), ("message", 3), ("status", "closed")]


def test_events_left_by_a_hub_that_stopped_after_the_commit_are_published_by_the_next(
    tmp_path: Path, db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    with running_hub(tmp_path, GreeterBrain(), db=db, agent_reply_timeout_s=300, outbox_relay_grace_s=60) as first:
        sue = _absent_agent(first)
        cid = _queued(first)
        bus = Bus(first, monkeypatch)
        bus.down = True  # the hub "dies" at the publication: nothing of the command goes out
        with contextlib.suppress(Crash):
            first.call(first.hub.claim(sue, cid))
        assert _conversation(first, cid)[:2] == ("agent", sue.id)
    assert len(_notices(first, cid)) == 1
    assert _unpublished(first) > 0  # what the stopped hub owed
    with running_hub(tmp_path, GreeterBrain(), db=db, agent_reply_timeout_s=300, **RELAY) as second:

        async def scenario() -> None:
            await _until_published(second)
            agent = await _connected(second, last_event_id=0)  # the console resumes
            assigned = await agent.wait_for(lambda f: f["type"] == "assigned" and f["conversation_id"] == cid)
            assert assigned["status"] == "agent"
            await agent.close()

        asyncio.run(scenario())


def test_a_late_assignment_of_a_conversation_released_meanwhile_is_not_delivered(
    relaying: RunningHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A relayed ``assigned`` is built when published: for a conversation its agent no longer
    holds it is dropped (the console would show a conversation it cannot work on); the events
    after it still go out, in order."""
    srv = relaying
    sue = _absent_agent(srv)
    cid = _queued(srv)  # claimed by sue, then transferred back, by a hub that died before publishing
    with srv.db.session() as s:
        add(s, {"type": "assigned", "conversation_id": cid, "_view": True}, recipients=[sue.id])
        add(s, {"type": "released", "conversation_id": cid, "reason": "transferred"}, recipients=[sue.id])
    bus = Bus(srv, monkeypatch)
    asyncio.run(_until_published(srv))
    assert [f["type"] for f in bus.agents if f.get("conversation_id") == cid] == ["released"]


def test_of_several_relays_each_event_is_taken_by_one(db: Database) -> None:
    """Relays of several hubs racing for the same forgotten events take each exactly once
    (PostgreSQL: ``FOR UPDATE SKIP LOCKED``; SQLite: one writer at a time)."""
    from datetime import timedelta

    from sqlalchemy import update

    from bot.store.models import utcnow

    with db.session() as s:
        for n in range(60):
            add(s, {"type": "released", "n": n}, recipients=[1])
        s.execute(update(HubEvent).values(claimed_at=utcnow() - timedelta(seconds=60)))
    store = HubOutboxStore(db)
    taken: list[list[int]] = []
    start = threading.Barrier(4)

    def relay() -> None:
        start.wait()
        mine: list[int] = []
        while True:
            got = store.claim_stale(30, limit=7)
            if not got:
                break
            mine += [e.id for e in got]
        taken.append(mine)

    threads = [threading.Thread(target=relay) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    ids = [i for mine in taken for i in mine]
    assert len(ids) == 60 and len(set(ids)) == 60
    assert store.claim_stale(30) == []  # leases renewed: nobody takes them again before they run out


def test_an_event_that_can_never_go_out_is_dropped_after_the_max_age_and_frees_its_conversation() -> None:
    """A poison row (its view raises every time) holds back the later frames of its conversation
    only until ``max_age_s``; then it is dropped, counted, and the others go out in order."""
    from datetime import timedelta

    from bot.hub.outbox import EventOutbox
    from bot.services.hub_outbox import OutboxEvent
    from bot.store.models import utcnow

    deleted: list[int] = []
    sent: list[tuple[str, str]] = []

    class Store:
        def delete(self, ids: list[int]) -> None:
            deleted.extend(ids)

    class FakeBus:
        async def send_customers(self, cid: str, frame: dict[str, Any]) -> bool:
            sent.append((cid, frame["text"]))
            return True

    async def resolve(event: OutboxEvent) -> dict[str, Any] | None:
        if event.frame["text"] == "poison":
            raise RuntimeError("this view can never be built")
        return event.frame

    def event(i: int, text: str, age_s: float) -> OutboxEvent:
        return OutboxEvent(i, "c-1", None, {"type": "message", "text": text}, utcnow() - timedelta(seconds=age_s))

    outbox = EventOutbox(Store(), FakeBus(), resolve, grace_s=5, max_age_s=600)  # type: ignore[arg-type]
    young = [event(1, "poison", 10), event(2, "after", 10)]
    assert asyncio.run(outbox.publish(young)) == 0
    assert sent == [] and deleted == [] and outbox.dropped == 0  # kept, in order, for the relay
    old = [event(1, "poison", 601), event(2, "after", 601)]
    assert asyncio.run(outbox.publish(old)) == 2  # both done with: one dropped, one published
    assert sent == [("c-1", "after")] and deleted == [1, 2] and outbox.dropped == 1
