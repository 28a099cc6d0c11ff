"""The durable "awaiting its turn" mark: set before the ack, cleared with the turn's result,
resumed after a crash, and the fail-safe handoff retried until the database takes it.

The store's part runs on SQLite and PostgreSQL; the hub's part on a real hub in this process
(``tests/hubtools.py``). The same promises against killed processes and a cut PostgreSQL are
in ``tests/test_faults.py``.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update
from sqlalchemy.exc import OperationalError

from bot.client import ChatClient
from bot.guard import Decision, GuardState
from bot.services.conversations import ConversationService
from bot.store.db import Database
from bot.store.models import Conversation, Message
from tests.hubtools import GreeterBrain, running_hub


def _marks(db: Database, cid: str) -> dict[int, bool]:
    with db.session() as s:
        rows = s.execute(select(Message.seq, Message.turn_pending_since).where(Message.conversation_id == cid))
        return {seq: since is not None for seq, since in rows}


def _age_marks(db: Database, seconds: float) -> None:
    """Move every pending mark ``seconds`` into the past (as if the turn had waited that long)."""
    from datetime import timedelta

    with db.session() as s:
        for m in s.execute(select(Message).where(Message.turn_pending_since.is_not(None))).scalars():
            m.turn_pending_since = m.turn_pending_since - timedelta(seconds=seconds)


# ---- the store -----------------------------------------------------------------------------------


def test_the_mark_is_set_with_the_message_and_cleared_with_the_turn(db: Database) -> None:
    conversations = ConversationService(db)
    visitor = conversations.create_visitor()
    cid = conversations.create_conversation(visitor).id
    first = conversations.append(cid, "customer", "hello", client_msg_id="a", awaiting_turn=True)
    conversations.append(cid, "system", "a notice")  # not a turn: no mark
    assert first is not None and _marks(db, cid) == {1: True, 2: False}
    # An idempotent resend does not set a second mark or move the first.
    again = conversations.append(cid, "customer", "hello", client_msg_id="a", awaiting_turn=True)
    assert again is not None and not again.created and _marks(db, cid) == {1: True, 2: False}

    decision = conversations.finish_turn(
        cid, lambda state: Decision(deliver=(), handoff=False, reason=None, state=state), 1, None, None
    )
    assert decision is not None and _marks(db, cid) == {1: False, 2: False}

    conversations.append(cid, "customer", "one", awaiting_turn=True)
    conversations.append(cid, "customer", "two", awaiting_turn=True)
    conversations.turn_done(cid, 3)
    assert _marks(db, cid) == {1: False, 2: False, 3: False, 4: True}


def test_a_bot_turn_records_its_result_clears_marks_and_stores_its_replies_in_one_go(db: Database) -> None:
    """``finish_bot_turn``: the guard state, the NLU, the marks up to the turn and the replies
    (gap-free seqs after the customer's) in one transaction; once the conversation is no longer
    with the bot the replies are refused and the rest is still recorded."""
    conversations = ConversationService(db)
    cid = conversations.create_conversation(conversations.create_visitor()).id
    conversations.append(cid, "customer", "left pending by an earlier run", awaiting_turn=True)
    conversations.append(cid, "customer", "hello", awaiting_turn=True)
    conversations.append(cid, "customer", "a later message", awaiting_turn=True)
    stored_senders: list[str] = []
    conversations.on_stored = stored_senders.append

    def decide(state: GuardState) -> Decision:
        counted = replace(state, unresolved_turns=state.unresolved_turns + 1)
        return Decision(deliver=("Hi!", "How can I help?"), handoff=False, reason=None, state=counted)

    finished = conversations.finish_bot_turn(
        cid, decide, 2, "greet", 0.9,
        lambda d: [(text, [{"title": "Yes", "payload": "/affirm"}] if text == "Hi!" else None) for text in d.deliver],
    )
    assert [(m.seq, m.sender, m.text) for m in finished.stored] == [(4, "bot", "Hi!"), (5, "bot", "How can I help?")]
    assert not finished.dropped and stored_senders == ["bot", "bot"]
    assert _marks(db, cid) == {1: False, 2: False, 3: True, 4: False, 5: False}  # the later turn still waits
    transcript = conversations.messages_after(cid)
    assert [m.seq for m in transcript] == [1, 2, 3, 4, 5]
    assert transcript[1].intent == "greet" and transcript[3].buttons == [{"title": "Yes", "payload": "/affirm"}]
    assert conversations.load_guard_state(cid).unresolved_turns == 1

    # Handed off meanwhile: no reply is stored, the turn is still counted and its mark cleared.
    with db.session() as s:
        s.execute(update(Conversation).where(Conversation.id == cid).values(status="queued"))
    finished = conversations.finish_bot_turn(cid, decide, 3, None, None,
                                             lambda d: [(text, None) for text in d.deliver])
    assert finished.stored == [] and finished.dropped and stored_senders == ["bot", "bot"]
    assert _marks(db, cid) == {1: False, 2: False, 3: False, 4: False, 5: False}
    assert [m.seq for m in conversations.messages_after(cid)] == [1, 2, 3, 4, 5]
    assert conversations.load_guard_state(cid).unresolved_turns == 2


def test_a_stale_turn_is_claimed_by_exactly_one_hub(db: Database) -> None:
    conversations = ConversationService(db)
    cid = conversations.create_conversation(conversations.create_visitor()).id
    conversations.append(cid, "customer", "hello", awaiting_turn=True)
    assert conversations.pending_turns(5.0) == []  # fresh: somebody is on it
    assert not conversations.claim_pending_turn(cid, 1, 5.0)
    _age_marks(db, 60)
    assert [m.seq for m in conversations.pending_turns(5.0)] == [1]
    # Two hubs resume the same turn: one wins, and the winner's claim makes it fresh again.
    results = [conversations.claim_pending_turn(cid, 1, 5.0) for _ in range(2)]
    assert results == [True, False]
    assert conversations.pending_turns(5.0) == []


# ---- the hub -------------------------------------------------------------------------------------


async def _wait(condition: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"not within {timeout} s: {what}")


async def test_turns_left_pending_by_a_dead_hub_are_answered_at_start_up(tmp_path: Path) -> None:
    """Messages acknowledged by a hub that died before their turn: the next hub on the same
    database answers them at start-up, in order, once each."""
    db = Database(f"sqlite:///{tmp_path / 'restart.db'}")
    db.migrate()
    conversations = ConversationService(db)
    cid = conversations.create_conversation(conversations.create_visitor(), lang="en").id
    for i in range(3):
        conversations.append(cid, "customer", f"hi {i}", client_msg_id=f"c{i}", awaiting_turn=True)
    brain = GreeterBrain()
    with running_hub(tmp_path, brain, db=db) as srv:
        await _wait(lambda: len(srv.hub.conversations.messages_after(cid, 0)) >= 6, 15, "every pending turn answered")
        await asyncio.sleep(0.3)  # nothing more comes
        stored = srv.hub.conversations.messages_after(cid, 0)
        assert not any(_marks(db, cid).values())
    assert brain.calls == ["hi 0", "hi 1", "hi 2"]  # each turn once, in order
    assert [m.sender for m in stored] == ["customer"] * 3 + ["bot"] * 3
    db.dispose()


async def test_a_fail_safe_handoff_refused_by_the_database_is_retried_until_it_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The turn fails on its first read and so does the handoff (the database is away): the
    customer is told a person will answer, and once the database is back that becomes true."""
    brain = GreeterBrain()
    with running_hub(tmp_path, brain, turn_recovery_interval_s=0.2, turn_retry_after_s=1.0) as srv:
        conversations = srv.hub.conversations
        down = {"on": False}
        real_get, real_guard = conversations.get, conversations.get_with_guard_state

        def away(real: Any) -> Any:
            def call(*args: Any, **kwargs: Any) -> Any:
                if down["on"]:
                    raise OperationalError("SELECT", {}, Exception("server closed the connection unexpectedly"))
                return real(*args, **kwargs)

            return call

        monkeypatch.setattr(conversations, "get", away(real_get))
        monkeypatch.setattr(conversations, "get_with_guard_state", away(real_guard))
        async with ChatClient(srv.ws_url, lang="en") as chat:
            await chat.wait_for(lambda f: f["type"] == "status")  # the hello is done
            down["on"] = True
            await chat.say_and_ack("my bill is wrong")
            error = await chat.wait_for(lambda f: f["type"] == "error", timeout=10)
            assert error["code"] == "unavailable" and "a person will answer" in error["message"]
            await asyncio.sleep(1.0)  # several recovery rounds while the database is still away
            down["on"] = False
            queued = await chat.wait_for(lambda f: f["type"] == "status" and f["status"] == "queued", timeout=10)
            assert queued["reason"] == "brain_error"
            await chat.drain(0.5)
            assert chat.messages("bot") == []
            assert brain.calls == []
            # The next message goes to the queue, not to the bot.
            await chat.say_and_ack("hello?")
            await chat.drain(0.5)
            assert chat.messages("bot") == [] and brain.calls == []
            await _wait(lambda: not any(_marks(srv.db, chat.conversation_id).values()), 5, "marks cleared")


async def test_a_turn_is_never_scheduled_twice(tmp_path: Path) -> None:
    """The same message scheduled again, and a resume while its turn runs (even of a mark
    that looks stale), run the brain once."""
    from tests.hubtools import ScriptedBrain, turn

    brain = ScriptedBrain(lambda text, n: turn(f"answer {n}", intent="greet", resolved=True), delay_s=0.5)
    with running_hub(tmp_path, brain, turn_recovery_interval_s=3600) as srv:
        conversations = srv.hub.conversations
        cid = conversations.create_conversation(conversations.create_visitor(), lang="en").id
        appended = conversations.append(cid, "customer", "hello", client_msg_id="x", awaiting_turn=True)
        assert appended is not None
        _age_marks(srv.db, 60)
        srv.call(_schedule_twice_and_resume(srv.hub, appended.message))
        await _wait(lambda: len(conversations.messages_after(cid, 0)) == 2, 10, "the turn answered")
        assert srv.call(srv.hub.resume_pending_turns(0.0)) == 0  # nothing left to resume
        await asyncio.sleep(0.7)
        assert brain.calls == ["hello"]
        assert [m.sender for m in conversations.messages_after(cid, 0)] == ["customer", "bot"]


async def _schedule_twice_and_resume(hub: Any, message: Any) -> None:
    hub.schedule_turn(message)
    hub.schedule_turn(message)
    assert await hub.resume_pending_turns(0.0) == 0


@pytest.mark.parametrize(("redis_url", "first_round"), [(None, 0.0), ("redis://127.0.0.1:1/0", 10.0)])
async def test_the_first_recovery_round_takes_in_flight_turns_only_when_alone(
    redis_url: str | None, first_round: float
) -> None:
    """One hub: at start-up every pending turn is its own previous run's. Several hubs: a pending
    turn may be in flight on another hub, so even the first round takes only overdue ones."""
    from types import SimpleNamespace

    from bot.hub.maintenance import run_turn_recovery

    rounds: list[float] = []
    done = asyncio.Event()

    async def resume_pending_turns(older_than: float) -> int:
        rounds.append(older_than)
        if len(rounds) == 2:
            done.set()
        return 0

    hub = SimpleNamespace(settings=SimpleNamespace(redis_url=redis_url, turn_retry_after_s=10.0),
                          resume_pending_turns=resume_pending_turns)
    task = asyncio.create_task(run_turn_recovery(hub, 0.001))  # type: ignore[arg-type]
    await asyncio.wait_for(done.wait(), 5)
    task.cancel()
    assert rounds[:2] == [first_round, 10.0]
