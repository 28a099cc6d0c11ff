"""The customer WebSocket protocol (PROTOCOL.md / docs/protocol.md) against a real hub."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import websockets

from bot.client import ChatClient
from bot.hub.auth import identity_token, sign_visitor
from tests.hubtools import GreeterBrain, RunningHub, ScriptedBrain, running_hub, settle, turn


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RunningHub]:
    with running_hub(tmp_path, GreeterBrain(), rate_limit_per_10s=1000) as srv:
        yield srv


async def test_hello_creates_a_visitor_and_a_conversation(server: RunningHub) -> None:
    async with ChatClient(server.ws_url, lang="en") as chat:
        assert chat.welcome is not None
        assert chat.welcome["status"] == "bot"
        assert chat.welcome["conversation_id"] and chat.welcome["visitor_token"]
        status = await chat.wait_for(lambda f: f["type"] == "status")
        assert status["status"] == "bot"


async def test_ack_comes_after_the_message_is_stored(server: RunningHub, monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    conversations = server.hub.conversations
    real_append = conversations.append
    committed: list[float] = []

    def slow_append(*args: Any, **kwargs: Any) -> Any:
        time.sleep(0.3)  # a slow disk: the ack must wait for the commit, however long it takes
        result = real_append(*args, **kwargs)
        if args[1] == "customer":
            committed.append(time.monotonic())
        return result

    monkeypatch.setattr(conversations, "append", slow_append)
    async with ChatClient(server.ws_url) as chat:
        ack = await chat.say_and_ack("hello")
        acked = time.monotonic()
        assert ack["seq"] == 1
        assert committed and committed[0] <= acked
        stored = real_append.__self__.messages_after(chat.conversation_id, 0)
        assert [(m.seq, m.sender, m.text) for m in stored][:1] == [(1, "customer", "hello")]
        bot = await chat.wait_for(lambda f: f["type"] == "message" and f["sender"] == "bot")
        assert bot["seq"] == 2 and bot["text"].startswith("Hello!")


async def test_a_message_that_could_not_be_stored_is_not_acknowledged(
    server: RunningHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    conversations = server.hub.conversations
    real_append = conversations.append

    def failing_append(*args: Any, **kwargs: Any) -> Any:
        raise OSError("disk full")

    async with ChatClient(server.ws_url) as chat:
        monkeypatch.setattr(conversations, "append", failing_append)
        await chat.say("important", client_msg_id="c-1")
        err = await chat.wait_for(lambda f: f["type"] in ("error", "ack"))
        assert err["type"] == "error" and err["code"] == "unavailable"
        monkeypatch.setattr(conversations, "append", real_append)
        # The client resends the same id once the store is back: stored once, acknowledged.
        ack = await chat.say_and_ack("important", client_msg_id="c-1")
        assert ack["seq"] == 1
        assert [m.text for m in conversations.messages_after(chat.conversation_id, 0)][:1] == ["important"]


async def test_resending_a_client_msg_id_gives_the_same_ack_and_no_duplicate(server: RunningHub) -> None:
    async with ChatClient(server.ws_url) as chat:
        first = await chat.say_and_ack("hello", client_msg_id="m-1")
        await chat.wait_for(lambda f: f["type"] == "message" and f["sender"] == "bot")
        again = await chat.say_and_ack("hello", client_msg_id="m-1")
        assert again == first
        await settle(server, chat)
        assert not [f for f in chat.frames if f["type"] == "message" and f["seq"] > 2]
        stored = server.hub.conversations.messages_after(chat.conversation_id, 0)
        assert [m.seq for m in stored] == [1, 2]


async def test_reconnect_replays_everything_after_last_seq_without_gaps(server: RunningHub) -> None:
    chat = ChatClient(server.ws_url)
    await chat.connect()
    for i in range(3):
        await chat.say_and_ack(f"hi {i}", client_msg_id=f"c{i}")
        await chat.wait_for(lambda f: f["type"] == "message" and f["sender"] == "bot")
    await chat.close()
    # A fresh client with the same credentials and last_seq 2 gets 3..6 in order.
    again = ChatClient(server.ws_url, visitor_token=chat.visitor_token, conversation_id=chat.conversation_id)
    welcome = await again.connect(last_seq=2)
    assert welcome["conversation_id"] == chat.conversation_id
    replay = [await again.wait_for(lambda f: f["type"] == "message") for _ in range(4)]
    assert [f["seq"] for f in replay] == [3, 4, 5, 6]
    assert replay[0]["sender"] == "customer" and replay[0]["client_msg_id"] == "c1"
    # From zero: everything, 1..6, no gaps.
    await again.close()
    full = ChatClient(server.ws_url, visitor_token=chat.visitor_token, conversation_id=chat.conversation_id)
    await full.connect(last_seq=0)
    frames = [await full.wait_for(lambda f: f["type"] == "message") for _ in range(6)]
    assert [f["seq"] for f in frames] == list(range(1, 7))
    await full.close()


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        ("not json", "invalid_json"),
        ("[1, 2]", "invalid_json"),
        (json.dumps({"type": "dance"}), "unknown_type"),
        (json.dumps({"type": "message", "text": "no id"}), "missing_field"),
        (json.dumps({"type": "message", "client_msg_id": "x"}), "missing_field"),
        (json.dumps({"type": "message", "client_msg_id": "x", "text": "y" * 5000}), "text_too_long"),
        # Above the old 64 KiB frame limit: still an error frame, not a dropped connection.
        (json.dumps({"type": "message", "client_msg_id": "x", "text": "长" * 70_000}), "text_too_long"),
    ],
)
async def test_bad_frames_get_an_error_and_the_connection_stays_usable(
    server: RunningHub, raw: str, code: str
) -> None:
    async with ChatClient(server.ws_url) as chat:
        await chat.send_frame(raw)
        err = await chat.wait_for(lambda f: f["type"] == "error")
        assert err["code"] == code and err["message"]
        ack = await chat.say_and_ack("still here")
        assert ack["seq"] == 1


async def test_message_before_hello_is_not_ready(server: RunningHub) -> None:
    chat = ChatClient(server.ws_url)
    await chat.open()
    await chat.say("too early", client_msg_id="e1")
    err = await chat.wait_for(lambda f: f["type"] == "error")
    assert err["code"] == "not_ready"
    # The same socket goes on: hello now, and the early message's id is still free.
    await chat.send_frame({"type": "hello"})
    await chat.wait_for(lambda f: f["type"] == "welcome")
    assert (await chat.say_and_ack("now", client_msg_id="e1"))["seq"] == 1
    await chat.close()


async def test_rate_limit_answers_rate_limited_and_keeps_the_connection(tmp_path: Path) -> None:
    with running_hub(tmp_path, GreeterBrain(), rate_limit_per_10s=3) as srv:
        async with ChatClient(srv.ws_url) as chat:
            for i in range(3):
                await chat.say_and_ack(f"m{i}")
            await chat.say("one too many")
            err = await chat.wait_for(lambda f: f["type"] == "error")
            assert err["code"] == "rate_limited"
            await chat.send_frame({"type": "ping"})
            assert (await chat.wait_for(lambda f: f["type"] == "pong"))["type"] == "pong"
            # A second socket of the same visitor shares the budget: no way around the limit.
            second = ChatClient(srv.ws_url, visitor_token=chat.visitor_token, conversation_id=chat.conversation_id)
            await second.connect()
            await second.say("from another tab")
            assert (await second.wait_for(lambda f: f["type"] == "error"))["code"] == "rate_limited"
            await second.close()


async def test_failed_logins_are_throttled(tmp_path: Path) -> None:
    with running_hub(tmp_path, GreeterBrain()) as srv:
        srv.create_agent("alice")
        statuses = []
        for _ in range(5):
            status, _body = await asyncio.to_thread(srv.post, "/api/agents/login", {"username": "alice",
                                                                                   "password": "guess"})
            statuses.append(status)
        # Three free failures, the fourth starts a delay (1 s, then doubling): the fifth waits.
        assert statuses[:4] == [401] * 4 and statuses[4] == 429
        # Throttled even with the right password until the window passes; other users are not.
        status, _ = await asyncio.to_thread(srv.post, "/api/agents/login", {"username": "alice",
                                                                           "password": "password-123"})
        assert status == 429
        srv.create_agent("bob")
        status, _ = await asyncio.to_thread(srv.post, "/api/agents/login", {"username": "bob",
                                                                           "password": "password-123"})
        assert status == 200


async def _closed_with(chat: ChatClient) -> tuple[str, int | None]:
    err = await chat.wait_for(lambda f: f["type"] == "error")
    with pytest.raises(websockets.ConnectionClosed):
        await chat.recv(timeout=5)
    return err["code"], chat._ws.close_code


async def test_forged_visitor_token_is_unauthorized(server: RunningHub) -> None:
    forged = sign_visitor("another-secret", "someone", 3600)
    chat = ChatClient(server.ws_url, visitor_token=forged)
    with pytest.raises(ConnectionError) as info:
        await chat.connect()
    assert info.value.args[0]["code"] == "unauthorized"
    with pytest.raises(websockets.ConnectionClosed):
        await chat.recv(timeout=5)
    assert chat._ws.close_code == 4001


async def test_expired_visitor_token_is_unauthorized(server: RunningHub) -> None:
    async with ChatClient(server.ws_url) as first:
        visitor = first.visitor_token.split(".")[0]
    expired = sign_visitor(server.settings.secret, visitor, 60, now=time.time() - 3600)
    chat = ChatClient(server.ws_url, visitor_token=expired)
    with pytest.raises(ConnectionError) as info:
        await chat.connect()
    assert info.value.args[0]["code"] == "unauthorized"


async def test_someone_elses_conversation_is_forbidden(server: RunningHub) -> None:
    async with ChatClient(server.ws_url) as alice:
        await alice.say_and_ack("my secret order")
    async with ChatClient(server.ws_url) as mallory:
        token = mallory.visitor_token
    intruder = ChatClient(server.ws_url, visitor_token=token, conversation_id=alice.conversation_id)
    with pytest.raises(ConnectionError) as info:
        await intruder.connect()
    assert info.value.args[0]["code"] == "forbidden"


async def test_signed_identity_resumes_the_same_user_and_a_bad_signature_is_rejected(server: RunningHub) -> None:
    good = {"user_id": "u-42", "token": identity_token("identity-secret", "u-42")}
    async with ChatClient(server.ws_url, identity=good) as first:
        await first.say_and_ack("from the app")
    async with ChatClient(server.ws_url, identity=good) as second:
        assert second.conversation_id == first.conversation_id
    bad = ChatClient(server.ws_url, identity={"user_id": "u-42", "token": identity_token("wrong-secret", "u-42")})
    with pytest.raises(ConnectionError) as info:
        await bad.connect()
    assert info.value.args[0]["code"] == "unauthorized"


async def test_disallowed_origin_is_rejected_with_4003(tmp_path: Path) -> None:
    with running_hub(tmp_path, GreeterBrain(), allowed_origins=("https://shop.example.com",)) as srv:
        ok = ChatClient(srv.ws_url, origin="https://shop.example.com")
        await ok.connect()
        await ok.close()
        bad = ChatClient(srv.ws_url, origin="https://evil.example.net")
        await bad.open()
        code, close = await _closed_with(bad)
        assert (code, close) == ("forbidden", 4003)


async def test_several_tabs_of_one_conversation_all_get_the_replies(server: RunningHub) -> None:
    async with ChatClient(server.ws_url) as tab1:
        tab2 = ChatClient(server.ws_url, visitor_token=tab1.visitor_token, conversation_id=tab1.conversation_id)
        await tab2.connect()
        await tab1.say_and_ack("hello from tab 1")
        echoed = await tab2.wait_for(lambda f: f["type"] == "message" and f["sender"] == "customer")
        assert echoed["text"] == "hello from tab 1"
        for tab in (tab1, tab2):
            bot = await tab.wait_for(lambda f: f["type"] == "message" and f["sender"] == "bot")
            assert bot["seq"] == 2
        await tab2.close()


async def test_concurrent_messages_get_gap_free_sequences(server: RunningHub) -> None:
    async with ChatClient(server.ws_url) as chat:
        ids = [f"p{i}" for i in range(15)]
        await asyncio.gather(*(chat.say(f"msg {i}", client_msg_id=c) for i, c in enumerate(ids)))
        acks = [await chat.wait_for(lambda f: f["type"] == "ack", 15) for _ in ids]
        assert sorted(a["seq"] for a in acks) == sorted(set(a["seq"] for a in acks))
        await settle(server, chat)
        seqs = [m.seq for m in server.hub.conversations.messages_after(chat.conversation_id, 0)]
        assert seqs == list(range(1, len(seqs) + 1))


async def test_healthz_and_static_files(server: RunningHub) -> None:
    status, body = await asyncio.to_thread(server.get, "/healthz")
    assert status == 200
    status, body = await asyncio.to_thread(server.get, "/widget.js")
    assert status == 200 and b"HumanlineWidget" in body


async def test_healthz_is_503_until_the_brain_is_ready_and_while_the_database_is_down(tmp_path: Path) -> None:
    class SlowStartingBrain(ScriptedBrain):
        loaded = False

        async def ready(self) -> bool:
            return self.loaded

    brain = SlowStartingBrain(lambda text, n: turn("Hello!", intent="greet", resolved=True))
    with running_hub(tmp_path, brain) as srv:
        status, body = await asyncio.to_thread(srv.get, "/healthz")
        assert status == 503 and json.loads(body)["status"] == "starting"
        brain.loaded = True
        assert (await asyncio.to_thread(srv.get, "/healthz"))[0] == 200
        real_ping = srv.db.ping
        srv.db.ping = lambda: False  # type: ignore[method-assign]
        try:
            assert (await asyncio.to_thread(srv.get, "/healthz"))[0] == 503
        finally:
            srv.db.ping = real_ping  # type: ignore[method-assign]
        assert (await asyncio.to_thread(srv.get, "/healthz"))[0] == 200


async def test_nothing_lost_nothing_doubled_on_both_databases(tmp_path: Path, db: Any) -> None:
    """Promise 3 on SQLite and PostgreSQL: two sockets of one conversation sending at once get
    distinct, gap-free seqs; resends are idempotent; a reconnect replays exactly what is missing."""
    with running_hub(tmp_path, GreeterBrain(), db=db, rate_limit_per_10s=1000) as srv:
        async with ChatClient(srv.ws_url) as first:
            second = ChatClient(srv.ws_url, visitor_token=first.visitor_token, conversation_id=first.conversation_id)
            await second.connect()
            for i in range(5):  # interleaved, without waiting for acks in between
                await first.say(f"a{i}", client_msg_id=f"a{i}")
                await second.say(f"b{i}", client_msg_id=f"b{i}")

            async def acks_of(chat: ChatClient, prefix: str) -> list[dict[str, Any]]:
                return [
                    await chat.wait_for(lambda f, i=i: f["type"] == "ack" and f["client_msg_id"] == f"{prefix}{i}")
                    for i in range(5)
                ]

            acks = [*(await acks_of(first, "a")), *(await acks_of(second, "b"))]
            again = await first.say_and_ack("a0", client_msg_id="a0")
            assert again["seq"] == acks[0]["seq"]
            await settle(srv, first)
            await settle(srv, second)
            await second.close()
            stored = srv.hub.conversations.messages_after(first.conversation_id, 0)
            seqs = [m.seq for m in stored]
            assert seqs == list(range(1, len(seqs) + 1))  # gap-free, each once
            assert sorted(m.text for m in stored if m.sender == "customer") == sorted(
                [f"a{i}" for i in range(5)] + [f"b{i}" for i in range(5)])
            assert len({a["seq"] for a in acks}) == 10
        late = ChatClient(srv.ws_url, visitor_token=first.visitor_token, conversation_id=first.conversation_id)
        await late.connect(last_seq=4)
        await late.drain(0.5)
        replayed = [f["seq"] for f in late.frames if f["type"] == "message"]
        assert replayed == seqs[4:]
        await late.close()


async def test_a_settle_ping_is_answered_only_after_the_turns_of_earlier_messages(tmp_path: Path) -> None:
    """``{"type": "ping", "settle": true}``: the signal tests use instead of waiting a fixed time
    for "nothing more arrives" — its pong comes after every frame of the turns before it."""
    brain = ScriptedBrain(lambda text, n: turn(f"slow answer {n}", intent=f"request_{text}", resolved=True,
                                               slots_set={"resolution": "answered"}, actions=["action_x"]),
                          delay_s=0.6)
    with running_hub(tmp_path, brain) as srv:
        async with ChatClient(srv.ws_url) as chat:
            await chat.say_and_ack("first")
            await chat.say_and_ack("second")
            started = time.monotonic()
            pong = await chat.settle()
            assert pong["settled"] is True
            assert time.monotonic() - started >= 0.6  # it waited for the brain, not just the socket
            types = [(f["type"], f.get("text")) for f in chat.frames]
            replies = [i for i, (kind, text) in enumerate(types) if kind == "message" and text and "slow" in text]
            assert [types[i][1] for i in replies] == ["slow answer 1", "slow answer 2"]
            assert max(replies) < types.index(("pong", None))
            assert brain.calls == ["first", "second"]
            # A plain ping still gets a plain pong; with no message sent, a settle ping is settled at once.
            await chat.send_frame({"type": "ping"})
            assert "settled" not in await chat.wait_for(lambda f: f["type"] == "pong")
        async with ChatClient(srv.ws_url) as fresh:
            assert (await fresh.settle())["settled"] is True
