"""Agents through the real hub: login, notifications, claims, live chat, transfer, hand-back,
resolve, reply timeout and reconnection with missed events."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from bot.client import ChatClient
from bot.services.agents import hash_password, verify_password
from bot.store.models import AuditEntry
from tests.hubtools import AgentClient, GreeterBrain, RunningHub, running_hub, settle

ALL = ("general", "finance_compliance", "account_services")


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RunningHub]:
    with running_hub(tmp_path, GreeterBrain(), agent_reply_timeout_s=300) as srv:
        srv.create_agent("alice", skills=ALL, display_name="Alice Chen")
        srv.create_agent("bob", skills=ALL, display_name="Bob Li")
        yield srv


async def _agent(srv: RunningHub, username: str, available: bool = False) -> AgentClient:
    token = await asyncio.to_thread(srv.login, username)
    agent = AgentClient(srv.agent_ws_url, token)
    ready = await agent.connect()
    assert ready["type"] == "ready", ready
    if not available:
        await agent.send({"type": "availability", "available": False})
        await asyncio.sleep(0.2)
    return agent


async def _queued_customer(srv: RunningHub) -> ChatClient:
    chat = ChatClient(srv.ws_url, lang="en")
    await chat.connect()
    await chat.say_and_ack("I want to talk to a human")
    await chat.wait_for(lambda f: f["type"] == "status" and f["status"] == "queued")
    return chat


def test_password_hashes_are_salted_and_verified() -> None:
    a, b = hash_password("secret-pass"), hash_password("secret-pass")
    assert a != b and a.startswith("scrypt$")
    assert verify_password("secret-pass", a) and not verify_password("wrong", a)


async def test_login_with_a_bad_password_is_401(server: RunningHub) -> None:
    status, body = await asyncio.to_thread(server.post, "/api/agents/login", {"username": "alice", "password": "nope"})
    assert status == 401 and body["error"] == "unauthorized"
    status, body = await asyncio.to_thread(server.post, "/api/agents/login", {"username": "zed", "password": "x"})
    assert status == 401
    status, body = await asyncio.to_thread(
        server.post, "/api/agents/login", {"username": "alice", "password": "password-123"}
    )
    assert status == 200 and body["token"] and body["expires_at"] and body["agent"]["display_name"] == "Alice Chen"
    assert "password_hash" not in body["agent"]


async def test_a_bad_agent_token_is_closed_with_4001(server: RunningHub) -> None:
    agent = AgentClient(server.agent_ws_url, "forged")
    frame = await agent.connect()
    assert frame["type"] == "error" and frame["code"] == "unauthorized"
    await asyncio.sleep(0.1)
    assert agent.ws.close_code == 4001


async def test_handoff_notification_claim_and_live_chat(server: RunningHub) -> None:
    alice = await _agent(server, "alice")
    chat = await _queued_customer(server)
    handoff = await alice.wait_for(lambda f: f["type"] == "handoff")
    assert handoff["conversation_id"] == chat.conversation_id and handoff["queue"] == "general"
    assert handoff["reason"] == "customer_request" and isinstance(handoff["event_id"], int)

    await alice.send({"type": "claim", "conversation_id": chat.conversation_id})
    assigned = await alice.wait_for(lambda f: f["type"] == "assigned")
    transcript = assigned["transcript"]
    assert transcript[0]["sender"] == "customer" and "intent" in transcript[0]
    status = await chat.wait_for(lambda f: f["type"] == "status" and f["status"] == "agent")
    assert status["agent_name"] == "Alice Chen"

    await alice.send({"type": "message", "conversation_id": chat.conversation_id, "text": "Hi, Alice here",
                      "client_msg_id": "a1"})
    msg = await chat.wait_for(lambda f: f["type"] == "message" and f["sender"] == "agent")
    assert msg["text"] == "Hi, Alice here" and msg["agent_name"] == "Alice Chen"

    await chat.say_and_ack("thanks, my bill is wrong")
    got = await alice.wait_for(lambda f: f["type"] == "message" and f.get("sender") == "customer")
    assert got["text"] == "thanks, my bill is wrong" and got["conversation_id"] == chat.conversation_id
    await settle(server, chat)
    assert chat.messages("bot") == []  # the bot stays silent while the agent holds it

    with server.db.session() as s:
        actions = set(s.execute(select(AuditEntry.action).where(AuditEntry.actor == "agent:alice")).scalars())
    assert {"login", "claim", "message"} <= actions
    await chat.close()
    await alice.close()


async def test_two_agents_claiming_at_once_only_one_wins(server: RunningHub) -> None:
    alice, bob = await _agent(server, "alice"), await _agent(server, "bob")
    chat = await _queued_customer(server)
    await alice.wait_for(lambda f: f["type"] == "handoff")
    await bob.wait_for(lambda f: f["type"] == "handoff")
    claim = {"type": "claim", "conversation_id": chat.conversation_id}
    await asyncio.gather(alice.send(claim), bob.send(claim))

    async def outcome(agent: AgentClient) -> str:
        f = await agent.wait_for(lambda f: f["type"] in ("assigned", "error"))
        return str(f["type"])

    results = sorted(await asyncio.gather(outcome(alice), outcome(bob)))
    assert results == ["assigned", "error"]
    await chat.close()


async def test_automatic_assignment_to_an_available_agent(server: RunningHub) -> None:
    alice = await _agent(server, "alice", available=True)
    chat = await _queued_customer(server)
    assigned = await alice.wait_for(lambda f: f["type"] == "assigned")
    assert assigned["conversation_id"] == chat.conversation_id
    status = await chat.wait_for(lambda f: f["type"] == "status" and f["status"] == "agent")
    assert status["agent_name"] == "Alice Chen"


async def test_hand_back_gives_the_bot_a_fresh_budget(server: RunningHub) -> None:
    alice = await _agent(server, "alice")
    chat = await _queued_customer(server)
    await alice.send({"type": "claim", "conversation_id": chat.conversation_id})
    await alice.wait_for(lambda f: f["type"] == "assigned")
    await alice.send({"type": "hand_back", "conversation_id": chat.conversation_id})
    released = await alice.wait_for(lambda f: f["type"] == "released")
    assert released["reason"] == "handed_back"
    await chat.wait_for(lambda f: f["type"] == "status" and f["status"] == "bot")
    await chat.say_and_ack("hello again")
    bot = await chat.wait_for(lambda f: f["type"] == "message" and f["sender"] == "bot")
    assert bot["text"].startswith("Hello!")


async def test_transfer_moves_the_customer_to_another_queue(server: RunningHub) -> None:
    alice = await _agent(server, "alice")
    chat = await _queued_customer(server)
    await alice.send({"type": "claim", "conversation_id": chat.conversation_id})
    await alice.wait_for(lambda f: f["type"] == "assigned")
    await alice.send({"type": "transfer", "conversation_id": chat.conversation_id, "queue": "finance_compliance"})
    released = await alice.wait_for(lambda f: f["type"] == "released")
    assert released["reason"] == "transferred"
    queued = await chat.wait_for(lambda f: f["type"] == "status" and f.get("queue") == "finance_compliance")
    assert queued["status"] == "queued" and queued["position"] == 1
    handoff = await alice.wait_for(lambda f: f["type"] == "handoff" and f["queue"] == "finance_compliance")
    assert handoff["conversation_id"] == chat.conversation_id


async def test_resolve_closes_the_conversation(server: RunningHub) -> None:
    alice = await _agent(server, "alice")
    chat = await _queued_customer(server)
    await alice.send({"type": "claim", "conversation_id": chat.conversation_id})
    await alice.wait_for(lambda f: f["type"] == "assigned")
    await alice.send({"type": "resolve", "conversation_id": chat.conversation_id})
    assert (await alice.wait_for(lambda f: f["type"] == "released"))["reason"] == "resolved"
    await chat.wait_for(lambda f: f["type"] == "status" and f["status"] == "closed")
    # writing again reopens it with the bot
    await chat.say_and_ack("one more thing")
    await chat.wait_for(lambda f: f["type"] == "status" and f["status"] == "bot")


async def _claimed_by_alice(srv: RunningHub) -> tuple[AgentClient, ChatClient]:
    """A new agent alice who claimed a freshly queued customer."""
    srv.create_agent("alice", skills=ALL, display_name="Alice Chen")
    alice = await _agent(srv, "alice")
    chat = await _queued_customer(srv)
    await alice.send({"type": "claim", "conversation_id": chat.conversation_id})
    await alice.wait_for(lambda f: f["type"] == "assigned")
    return alice, chat


async def test_an_agent_who_does_not_reply_loses_the_conversation(tmp_path: Path) -> None:
    with running_hub(tmp_path, GreeterBrain(), agent_reply_timeout_s=0.6) as srv:
        alice, chat = await _claimed_by_alice(srv)
        released = await alice.wait_for(lambda f: f["type"] == "released", timeout=10)
        assert released["reason"] == "reply_timeout"
        queued = await chat.wait_for(lambda f: f["type"] == "status" and f["status"] == "queued", timeout=10)
        assert queued["position"] == 1


async def test_an_agent_who_answered_once_then_went_silent_loses_the_conversation(tmp_path: Path) -> None:
    with running_hub(tmp_path, GreeterBrain(), agent_reply_timeout_s=0.8) as srv:
        alice, chat = await _claimed_by_alice(srv)
        await alice.send({"type": "message", "conversation_id": chat.conversation_id, "text": "Hello, Alice here."})
        await chat.wait_for(lambda f: f["type"] == "message" and f.get("sender") == "agent")
        # The agent has the last word: waiting longer than the timeout releases nothing.
        await asyncio.sleep(1.6)
        assert not [f for f in alice.frames if f["type"] == "released"]
        # The customer writes again and the agent stays silent: back to the queue.
        await chat.say_and_ack("Are you still there?")
        released = await alice.wait_for(lambda f: f["type"] == "released", timeout=10)
        assert released["reason"] == "reply_timeout"
        await chat.wait_for(lambda f: f["type"] == "status" and f["status"] == "queued", timeout=10)
        await chat.close()
        await alice.close()


async def test_queue_positions_and_eta_are_pushed_and_no_agent_online_is_said(server: RunningHub) -> None:
    first = await _queued_customer(server)
    assert first.frames[-1]["agents_online"] == 0
    notice = [m for m in first.messages("system")][-1]
    assert "10 minutes" in notice["text"]
    second = await _queued_customer(server)
    status = [f for f in second.frames if f["type"] == "status" and f["status"] == "queued"][-1]
    assert status["position"] == 2
    alice = await _agent(server, "alice")
    await alice.send({"type": "claim", "conversation_id": first.conversation_id})
    await alice.wait_for(lambda f: f["type"] == "assigned")
    moved = await second.wait_for(lambda f: f["type"] == "status" and f.get("position") == 1)
    # alice is online but unavailable: nobody can take it, so the estimate is the SLA target
    assert moved["status"] == "queued" and moved["eta_seconds"] == 600 and moved["agents_online"] == 0


async def test_a_reconnecting_agent_gets_the_events_it_missed(server: RunningHub) -> None:
    alice = await _agent(server, "alice")
    last = alice.last_event_id
    await alice.close()
    chat = await _queued_customer(server)
    again = AgentClient(server.agent_ws_url, alice.token)
    await again.connect(last_event_id=last)
    handoff = await again.wait_for(lambda f: f["type"] == "handoff")
    assert handoff["conversation_id"] == chat.conversation_id and handoff["event_id"] > last
    (waiting,) = [w for w in again.ready["waiting"] if w["conversation_id"] == chat.conversation_id]
    # The SLA countdown's deadline: the queue's 10-minute first-response target from the handoff.
    from datetime import datetime, timedelta

    due = datetime.fromisoformat(waiting["due_at"]) - datetime.fromisoformat(waiting["ts"])
    assert abs(due - timedelta(minutes=10)) < timedelta(seconds=2), waiting


async def test_supervisor_overview_needs_a_supervisor(server: RunningHub) -> None:
    server.create_agent("sam", skills=("general",), role="supervisor")
    alice_token = await asyncio.to_thread(server.login, "alice")
    status, _ = await asyncio.to_thread(
        server.get, "/api/supervisor/overview", {"Authorization": f"Bearer {alice_token}"}
    )
    assert status == 403
    sam_token = await asyncio.to_thread(server.login, "sam")
    status, body = await asyncio.to_thread(
        server.get, "/api/supervisor/overview", {"Authorization": f"Bearer {sam_token}"}
    )
    assert status == 200 and b'"queues"' in body


async def test_case_work_over_the_agent_socket_is_authorised_and_audited(tmp_path: Path) -> None:
    from bot.services.cases import CaseService

    with running_hub(tmp_path, GreeterBrain()) as srv:
        srv.create_agent("alice", skills=ALL, display_name="Alice Chen")
        srv.create_agent("gus", skills=("general",), display_name="Gus General")
        case = CaseService(srv.db).open_case("billing", visitor_id="v-9", description="charged twice", lang="en")
        assert case.queue == "finance_compliance"
        alice, gus = await _agent(srv, "alice"), await _agent(srv, "gus")
        # Not his queue, not his conversation: refused, and nothing changes — with the very same
        # answer as for a case that does not exist, so numbers cannot be probed.
        await gus.send({"type": "case_stage", "case_number": case.number, "stage": "verifying"})
        err = await gus.wait_for(lambda f: f["type"] == "error")
        assert err["code"] == "invalid_case"
        await gus.send({"type": "note", "case_number": case.number, "text": "peek"})
        other = await gus.wait_for(lambda f: f["type"] == "error" and f is not err)
        await gus.send({"type": "note", "case_number": "HL-20000101-9999", "text": "peek"})
        missing = await gus.wait_for(lambda f: f["type"] == "error" and f is not err and f is not other)
        assert other["code"] == missing["code"] == "invalid_case"
        assert other["message"].replace(case.number, "N") == missing["message"].replace("HL-20000101-9999", "N")
        cid = "conv-view"
        await alice.send({"type": "case_stage", "case_number": case.number, "stage": "verifying",
                          "conversation_id": cid})
        view = await alice.wait_for(lambda f: f["type"] == "case" and f["case"]["stage"] == "verifying")
        assert view["conversation_id"] == cid
        await alice.send({"type": "case_progress", "case_number": case.number, "text": "Refund approved",
                          "conversation_id": cid})
        await alice.wait_for(lambda f: f["type"] == "case" and any(
            e["kind"] == "progress_update" for e in f["case"]["timeline"]))
        # An extension needs a reason and a sane number of hours.
        await alice.send({"type": "case_extend", "case_number": case.number, "reason": " ", "hours": 12})
        assert (await alice.wait_for(lambda f: f["type"] == "error"))["code"] == "missing_field"
        await alice.send({"type": "case_extend", "case_number": case.number, "reason": "bank", "hours": -1})
        assert (await alice.wait_for(lambda f: f["type"] == "error" and f["code"] == "invalid_field"))
        await alice.send({"type": "case_extend", "case_number": case.number, "reason": "waiting for the bank",
                          "hours": 12, "conversation_id": cid})
        extended = await alice.wait_for(lambda f: f["type"] == "case" and any(
            e["kind"] == "sla_extended" for e in f["case"]["timeline"]))
        assert "waiting for the bank" in [e for e in extended["case"]["timeline"] if e["kind"] == "sla_extended"][0][
            "detail"]
        await alice.close()
        await gus.close()
        with srv.db.session() as s:
            actions = [a.action for a in s.execute(select(AuditEntry).order_by(AuditEntry.id)).scalars()]
        assert [a for a in actions if a.startswith("case_")] == ["case_stage", "case_progress", "case_extend"]


async def test_an_open_agent_socket_ends_with_its_token(tmp_path: Path) -> None:
    import websockets

    with running_hub(tmp_path, GreeterBrain(), agent_token_ttl_s=4) as srv:
        srv.create_agent("alice", skills=ALL)
        alice = await _agent(srv, "alice")
        err = await alice.wait_for(lambda f: f["type"] == "error", timeout=10)
        assert err["code"] == "unauthorized" and "expired" in err["message"]
        with pytest.raises(websockets.ConnectionClosed):
            await alice.ws.recv()
        assert alice.ws.close_code == 4001


async def test_logout_revokes_the_token_and_closes_its_sockets(server: RunningHub) -> None:
    import json
    import urllib.request

    import websockets

    alice = await _agent(server, "alice")
    bob = await _agent(server, "bob")

    def logout(token: str) -> int:
        req = urllib.request.Request(server.url + "/api/agents/logout", data=b"{}", method="POST",
                                     headers={"Authorization": f"Bearer {token}"})
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return int(r.status) if json.loads(r.read())["status"] == "logged_out" else -1
        except urllib.error.HTTPError as e:
            return int(e.code)

    assert await asyncio.to_thread(logout, alice.token) == 200
    await alice.wait_for(lambda f: f["type"] == "error" and f["code"] == "unauthorized")
    with pytest.raises(websockets.ConnectionClosed):
        await alice.ws.recv()
    assert await asyncio.to_thread(logout, alice.token) == 401  # already revoked
    again = AgentClient(server.agent_ws_url, alice.token)
    assert (await again.connect())["code"] == "unauthorized"
    # Bob's session is untouched.
    await bob.send({"type": "ping"})
    assert (await bob.wait_for(lambda f: f["type"] == "pong"))["type"] == "pong"
    await bob.close()


async def test_automatic_assignment_picks_the_least_busy_agent_with_the_skill(tmp_path: Path) -> None:
    with running_hub(tmp_path, GreeterBrain()) as srv:
        srv.create_agent("alice", skills=("general",), display_name="Alice Chen")
        srv.create_agent("bob", skills=("general",), display_name="Bob Li")
        srv.create_agent("fay", skills=("finance_compliance",), display_name="Fay Finance")
        fay = await _agent(srv, "fay", available=True)  # available, but not for "general"
        alice = await _agent(srv, "alice", available=True)
        first = await _queued_customer(srv)
        assert (await alice.wait_for(lambda f: f["type"] == "assigned"))["conversation_id"] == first.conversation_id
        bob = await _agent(srv, "bob", available=True)  # alice now holds one, bob none
        second = await _queued_customer(srv)
        assert (await bob.wait_for(lambda f: f["type"] == "assigned"))["conversation_id"] == second.conversation_id
        await fay.drain(0.5)
        assert not [f for f in fay.frames if f["type"] == "assigned"]
        for client in (first, second, alice, bob, fay):
            await client.close()


async def test_the_first_agent_reply_stops_the_first_response_clock_in_the_case_panel(server: RunningHub) -> None:
    alice = await _agent(server, "alice")
    chat = await _queued_customer(server)  # nobody available: the handoff opened a case
    await alice.send({"type": "claim", "conversation_id": chat.conversation_id})
    assigned = await alice.wait_for(lambda f: f["type"] == "assigned")
    assert assigned["case"] and assigned["case"]["first_responded_at"] is None
    await alice.send({"type": "message", "conversation_id": chat.conversation_id, "text": "Hi, Alice here."})
    case = await alice.wait_for(lambda f: f["type"] == "case")
    assert case["conversation_id"] == chat.conversation_id and case["case"]["first_responded_at"]
    await alice.close()
    await chat.close()


async def test_messages_the_bot_never_saw_get_their_intent_for_the_agent(tmp_path: Path) -> None:
    from tests.hubtools import ScriptedBrain, turn

    class ParsingBrain(ScriptedBrain):
        async def parse(self, text: str) -> tuple[str | None, float | None]:
            return ("request_refund", 0.87) if "refund" in text else ("request_human", 0.95)

    brain = ParsingBrain(lambda text, n: turn("Hello!", intent="greet", resolved=True))
    with running_hub(tmp_path, brain) as srv:
        srv.create_agent("alice", skills=ALL, display_name="Alice Chen")
        alice = await _agent(srv, "alice")
        chat = await _queued_customer(srv)  # "I want to talk to a human": the keyword rule, no brain turn
        assert brain.calls == []
        await asyncio.sleep(0.3)
        await alice.send({"type": "claim", "conversation_id": chat.conversation_id})
        assigned = await alice.wait_for(lambda f: f["type"] == "assigned")
        first = [m for m in assigned["transcript"] if m["sender"] == "customer"][0]
        assert (first["intent"], first["confidence"]) == ("request_human", 0.95)
        await chat.say_and_ack("I also want a refund")
        live = await alice.wait_for(lambda f: f["type"] == "message" and f["sender"] == "customer")
        nlu = await alice.wait_for(lambda f: f["type"] == "nlu")
        assert nlu["seq"] == live["seq"] and nlu["intent"] == "request_refund" and nlu["confidence"] == 0.87
        assert brain.calls == []  # parsed only: the bot did not answer
        await alice.close()
        await chat.close()


async def test_an_agent_cannot_act_outside_their_queues_or_on_a_conversation_they_do_not_hold(
    tmp_path: Path,
) -> None:
    with running_hub(tmp_path, GreeterBrain(), agent_reply_timeout_s=300) as srv:
        srv.create_agent("alice", skills=ALL, display_name="Alice Chen")
        srv.create_agent("bob", skills=ALL, display_name="Bob Li")
        srv.create_agent("fay", skills=("finance_compliance",), display_name="Fay Finance")
        chat = await _queued_customer(srv)  # queued in `general`
        cid = chat.conversation_id
        fay = await _agent(srv, "fay")
        await fay.send({"type": "claim", "conversation_id": cid})
        assert (await fay.wait_for(lambda f: f["type"] == "error"))["code"] == "forbidden"  # not her queue
        alice, bob = await _agent(srv, "alice"), await _agent(srv, "bob")
        await alice.send({"type": "claim", "conversation_id": cid})
        await alice.wait_for(lambda f: f["type"] == "assigned")
        # Bob serves the queue but does not hold the conversation: every action is refused.
        refused = []
        for frame in ({"type": "message", "text": "Bob here"}, {"type": "transfer", "queue": "account_services"},
                      {"type": "hand_back"}, {"type": "resolve"}, {"type": "claim"}):
            await bob.send({**frame, "conversation_id": cid})
            refused.append((await bob.wait_for(lambda f: f["type"] == "error"))["code"])
        assert refused == ["forbidden", "forbidden", "forbidden", "forbidden", "already_claimed"]
        await settle(srv, chat)
        assert chat.messages("agent") == [] and chat.status != "bot"
        conv = srv.hub.conversations.get(cid)
        assert conv is not None and conv.status == "agent" and conv.queue == "general"
        for client in (alice, bob, fay):
            await client.close()
        await chat.close()
