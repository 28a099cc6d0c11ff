"""Abuse and credential protections (docs/security.md): login throttling and hashing, secrets,
the demo supervisor, agent administration, per-address limits, identity tokens, visitor tokens,
redaction."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

import bot.hub.security as hub_security
import bot.services.agents as agents_module
from bot.hub.ratelimit import LoginThrottle
from bot.hub.security import client_address, parse_networks
from bot.services.agents import AgentService, hash_password, needs_rehash
from bot.settings import scrypt_cost
from bot.store.db import Database
from bot.store.models import Agent, AuditEntry
from tests.hubtools import GreeterBrain, RunningHub, running_hub


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RunningHub]:
    with running_hub(tmp_path, GreeterBrain()) as srv:
        srv.create_agent("alice")
        srv.create_agent("sam", role="supervisor")
        yield srv


# ---- item 2: logins ------------------------------------------------------------------------


def test_an_attempt_counts_before_its_outcome_so_parallel_attempts_are_refused() -> None:
    throttle = LoginThrottle(clock=Clock())
    assert throttle.begin("1.2.3.4", "alice") == 0
    # The first attempt's hash is still running: a parallel one for the same name must wait,
    # from the same or from another address.
    assert throttle.begin("1.2.3.4", "alice") > 0
    assert throttle.begin("5.6.7.8", "alice") > 0
    assert throttle.failures("alice") == 1  # counted already, before any outcome
    throttle.failed("1.2.3.4", "alice")
    assert throttle.begin("5.6.7.8", "alice") == 0


def test_delays_grow_per_address_and_username_and_are_capped() -> None:
    clock = Clock()
    throttle = LoginThrottle(clock=clock, free_pair=3, max_pair_delay_s=16)
    waits = []
    for _ in range(10):
        assert throttle.begin("1.2.3.4", "alice") == 0
        throttle.failed("1.2.3.4", "alice")
        waits.append(throttle.wait("1.2.3.4", "alice"))
        clock.now += waits[-1]
    assert waits == [0, 0, 0, 1, 2, 4, 8, 16, 16, 16]
    # The same username from another address is not delayed by this address's failures…
    assert throttle.wait("9.9.9.9", "alice") == 0
    # …and a success clears the name.
    assert throttle.begin("9.9.9.9", "alice") == 0
    throttle.succeeded("9.9.9.9", "alice")
    assert throttle.failures("alice") == 0


def test_the_address_limit_stops_a_guesser_before_a_username_is_locked_for_long() -> None:
    clock = Clock()
    throttle = LoginThrottle(clock=clock, attempts_per_address=5, free_user=10, max_user_delay_s=300)
    names = [f"user{i}" for i in range(20)]
    allowed = 0
    for name in names:
        if throttle.begin("6.6.6.6", name) == 0:
            allowed += 1
            throttle.failed("6.6.6.6", name)
    assert allowed == 5
    # Distributed guessing of one name: the name's delay never exceeds its cap (5 minutes).
    for i in range(40):
        clock.now += throttle.wait(f"10.0.{i}.1", "alice")
        assert throttle.begin(f"10.0.{i}.1", "alice") == 0
        throttle.failed(f"10.0.{i}.1", "alice")
    assert throttle.wait("10.1.1.1", "alice") <= 300
    throttle.unlock("alice")
    assert throttle.wait("10.1.1.1", "alice") == 0


def test_the_default_scrypt_cost_is_owasps_and_old_hashes_are_upgraded(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("HUMANLINE_SCRYPT_N", raising=False)
    assert scrypt_cost() == 2**17
    monkeypatch.setenv("HUMANLINE_SCRYPT_N", "1000")
    with pytest.raises(ValueError):
        scrypt_cost()
    old = hash_password("password-123", n=2**14)
    monkeypatch.setattr(agents_module, "SCRYPT_N", 2**15)
    assert needs_rehash(old)
    db = Database(f"sqlite:///{tmp_path / 'a.db'}")
    db.migrate()
    service = AgentService(db)
    service.create("alice", "Alice", "password-123", ["general"])
    with db.session() as s:
        s.execute(select(Agent)).scalar_one().password_hash = old
    assert service.login("alice", "password-123") is not None
    with db.session() as s:
        assert s.execute(select(Agent)).scalar_one().password_hash.startswith("scrypt$32768$8$1$")
    db.dispose()


async def test_parallel_logins_hash_at_most_once_per_username_on_the_dedicated_executor(
    server: RunningHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []
    real = hub_security.verify_password

    def counting(password: str, stored: str) -> bool:
        calls.append(threading.current_thread().name)
        return real(password, stored)

    monkeypatch.setattr(hub_security, "verify_password", counting)
    results = await asyncio.gather(*(
        asyncio.to_thread(server.post, "/api/agents/login", {"username": "alice", "password": f"guess-{i}"})
        for i in range(40)
    ))
    statuses = [status for status, _ in results]
    assert set(statuses) <= {401, 429, 503} and statuses.count(401) >= 1
    # Counted before hashing: the burst cannot buy more hashes than the free failures plus the
    # ones that waited out a delay — far fewer than the 40 attempts.
    assert len(calls) <= 4, calls
    assert all(name.startswith("password-hash") for name in calls)


async def test_failed_logins_do_not_keep_what_was_typed_and_a_supervisor_unlocks(server: RunningHub) -> None:
    typed = "Hunter2-my-real-password"
    for _ in range(5):
        await asyncio.to_thread(server.post, "/api/agents/login", {"username": typed, "password": "x"})
        await asyncio.to_thread(server.post, "/api/agents/login", {"username": "alice", "password": "wrong"})
    with server.db.session() as s:
        rows = [(e.actor, e.action, str(e.detail)) for e in s.execute(select(AuditEntry)).scalars()]
    assert not any(typed in " ".join(row) for row in rows), rows
    assert ("agent:alice", "login_failed", "{'known': True}") in rows
    status, _ = await asyncio.to_thread(server.post, "/api/agents/login",
                                        {"username": "alice", "password": "password-123"})
    assert status == 429  # alice is being delayed
    alice_token = None
    sam_token = await asyncio.to_thread(server.login, "sam")

    def unlock(token: str | None) -> tuple[int, Any]:
        import json
        import urllib.error
        import urllib.request

        req = urllib.request.Request(server.url + "/api/supervisor/unlock", data=json.dumps({"username": "alice"})
                                     .encode(), headers={"Authorization": f"Bearer {token}"})
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, None

    assert (await asyncio.to_thread(unlock, alice_token))[0] == 401
    assert (await asyncio.to_thread(unlock, sam_token))[0] == 200
    status, _ = await asyncio.to_thread(server.post, "/api/agents/login",
                                        {"username": "alice", "password": "password-123"})
    assert status == 200


# ---- item 1: client addresses --------------------------------------------------------------


def test_forwarded_for_is_believed_only_from_trusted_proxies() -> None:
    trusted = parse_networks(["10.0.0.0/8", "::1"])
    assert client_address("203.0.113.9", "1.1.1.1", trusted) == "203.0.113.9"  # not a proxy: ignored
    assert client_address("10.0.0.5", "198.51.100.7", trusted) == "198.51.100.7"
    # A client prepending a fake hop does not choose its address: the last untrusted one counts.
    assert client_address("10.0.0.5", "1.1.1.1, 198.51.100.7, 10.0.0.4", trusted) == "198.51.100.7"
    assert client_address("10.0.0.5", None, trusted) == "10.0.0.5"
    assert client_address("10.0.0.5", "1.1.1.1", ()) == "10.0.0.5"  # no trusted proxies: header ignored


# ---- item 5: secrets at rest ---------------------------------------------------------------


def test_without_a_secret_only_the_embedded_sqlite_demo_starts(tmp_path: Path, postgres_url: str) -> None:
    from dataclasses import replace

    from bot.hub.app import MissingSecret, resolve_secret
    from bot.settings import Settings

    no_secret = replace(Settings(), secret="")
    with pytest.raises(MissingSecret):
        resolve_secret(no_secret, Database(postgres_url))
    demo = Database(f"sqlite:///{tmp_path / 'demo.db'}")
    demo.migrate()
    resolved = resolve_secret(no_secret, demo)
    assert len(resolved.secret) >= 32 and resolved.secret_source == "database"
    configured = replace(Settings(), secret="k" * 40, secret_source="env")
    assert resolve_secret(configured, Database(postgres_url)) is configured
    demo.dispose()


def test_the_secret_can_come_from_a_key_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from bot.settings import Settings

    key = tmp_path / "humanline.key"
    key.write_text("f" * 64 + "\n")
    monkeypatch.delenv("HUMANLINE_SECRET", raising=False)
    monkeypatch.setenv("HUMANLINE_SECRET_FILE", str(key))
    settings = Settings.from_env()
    assert (settings.secret, settings.secret_source) == ("f" * 64, "file")
    key.write_text("short")
    with pytest.raises(ValueError):
        Settings.from_env()


def test_a_rotated_key_still_accepts_tokens_signed_with_the_previous_one() -> None:
    from bot.hub.auth import sign_visitor, verify_visitor

    old = sign_visitor("old-key", "v1", 3600)
    assert verify_visitor(("new-key", "old-key"), old) == "v1"
    assert verify_visitor(("new-key",), old) is None


# ---- item 3: identity tokens that expire -----------------------------------------------------


def _jwt(header: dict[str, Any], payload: dict[str, Any], key: str) -> str:
    import base64
    import hashlib
    import hmac
    import json

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    head, body = b64(json.dumps(header).encode()), b64(json.dumps(payload).encode())
    sig = hmac.new(key.encode(), f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{b64(sig)}"


def test_identity_jwts_are_checked_for_algorithm_signature_expiry_and_lifetime() -> None:
    import time

    from bot.hub.auth import identity_token, identity_user, verify_identity_token

    now = int(time.time())
    good = identity_token("app-key", "u-42", 600)
    assert verify_identity_token("app-key", good) == "u-42"
    assert verify_identity_token("other-key", good) is None
    hs = {"alg": "HS256", "typ": "JWT"}
    assert verify_identity_token("app-key", _jwt(hs, {"sub": "u-42", "iat": now - 7200, "exp": now - 3600},
                                                 "app-key")) is None  # expired
    assert verify_identity_token("app-key", _jwt(hs, {"sub": "u-42", "exp": now + 60}, "app-key")) is None  # no iat
    assert verify_identity_token("app-key", _jwt(hs, {"sub": "u-42", "iat": now, "exp": now + 400 * 86400},
                                                 "app-key")) is None  # lives too long
    assert verify_identity_token("app-key", _jwt(hs, {"sub": "u-42", "iat": now + 3600, "exp": now + 7200},
                                                 "app-key")) is None  # issued in the future
    unsigned = _jwt({"alg": "none"}, {"sub": "u-42", "iat": now, "exp": now + 60}, "app-key")
    assert verify_identity_token("app-key", unsigned.rsplit(".", 1)[0] + ".") is None
    assert verify_identity_token("app-key", _jwt({"alg": "HS512"}, {"sub": "u-42", "iat": now, "exp": now + 60},
                                                 "app-key")) is None
    # The hello's identity object: the JWT in `token` (or in `signature`), a user_id must match.
    assert identity_user("app-key", {"token": good}) == "u-42"
    assert identity_user("app-key", {"user_id": "u-42", "signature": good}) == "u-42"
    assert identity_user("app-key", {"user_id": "u-43", "token": good}) is None
    # The never-expiring HMAC form only when explicitly allowed.
    from bot.hub.auth import identity_signature

    legacy = {"user_id": "u-42", "signature": identity_signature("app-key", "u-42")}
    assert identity_user("app-key", legacy) is None
    assert identity_user("app-key", legacy, legacy=True) == "u-42"


# ---- items 3 and 4 through the hub: identity tokens, visitor tokens ---------------------------


async def _refused(chat: Any) -> tuple[str, int | None]:
    """The error code of a refused hello and the socket's close code."""
    import websockets

    from bot.client import ChatClient

    assert isinstance(chat, ChatClient)
    with pytest.raises(ConnectionError) as info:
        await chat.connect()
    with pytest.raises(websockets.ConnectionClosed):
        await chat.recv(timeout=5)
    return info.value.args[0]["code"], chat._ws.close_code


async def test_an_expired_identity_token_and_the_legacy_form_are_refused(tmp_path: Path) -> None:
    import time

    from bot.client import ChatClient
    from bot.hub.auth import identity_signature, identity_token

    with running_hub(tmp_path, GreeterBrain()) as srv:
        async with ChatClient(srv.ws_url, identity={"token": identity_token("identity-secret", "u-7")}) as ok:
            await ok.say_and_ack("hi")
        expired = identity_token("identity-secret", "u-7", 60, now=time.time() - 3600)
        assert await _refused(ChatClient(srv.ws_url, identity={"token": expired})) == ("unauthorized", 4001)
        legacy = {"user_id": "u-7", "signature": identity_signature("identity-secret", "u-7")}
        assert await _refused(ChatClient(srv.ws_url, identity=legacy)) == ("unauthorized", 4001)
    with running_hub(tmp_path, GreeterBrain(), identity_legacy_hmac=True) as srv:
        async with ChatClient(srv.ws_url, identity=legacy) as old_app:
            assert old_app.conversation_id


async def test_visitor_tokens_rotate_and_can_be_revoked_per_visitor_and_for_all(server: RunningHub) -> None:
    from bot.client import ChatClient
    from bot.services.credentials import VisitorCredentials

    async with ChatClient(server.ws_url) as first:
        token1 = first.visitor_token
    await asyncio.sleep(0.01)
    resumed = ChatClient(server.ws_url, visitor_token=token1)
    await resumed.connect()
    token2 = resumed.visitor_token
    await resumed.close()
    assert token2 != token1  # a fresh token on every hello
    visitor = str(token1).split(".")[0]
    assert int(str(token2).split(".")[2]) - int(str(token2).split(".")[1]) // 1000 <= 24 * 3600 + 1  # a day
    assert VisitorCredentials(server.db).revoke(visitor)
    assert await _refused(ChatClient(server.ws_url, visitor_token=token2)) == ("unauthorized", 4001)
    # A new visitor is unaffected until everyone's tokens are revoked.
    async with ChatClient(server.ws_url) as other:
        other_token = other.visitor_token
    await asyncio.sleep(0.01)
    VisitorCredentials(server.db).revoke_all()
    assert await _refused(ChatClient(server.ws_url, visitor_token=other_token)) == ("unauthorized", 4001)


def test_the_widget_public_api_does_not_expose_the_visitor_token() -> None:
    widget = (Path(__file__).resolve().parent.parent / "bot" / "web" / "widget.js").read_text()
    api = widget[widget.index("window.HumanlineWidget = {"):]
    assert "publicState()" in api and "delete copy.visitor_token" in widget


# ---- item 1: anonymous floods, item 9: frames before hello and nested JSON --------------------


async def test_new_visitors_hellos_and_sockets_are_capped_per_address(tmp_path: Path) -> None:
    import websockets

    from bot.client import ChatClient

    with running_hub(tmp_path, GreeterBrain(), new_visitors_per_minute=3, hellos_per_minute=6,
                     sockets_per_address=4) as srv:
        kept = []
        for _ in range(3):
            chat = ChatClient(srv.ws_url)
            await chat.connect()
            kept.append(chat)
        # A fourth anonymous visitor from the same address within the minute: refused, closed.
        assert await _refused(ChatClient(srv.ws_url)) == ("rate_limited", 4029)
        # A returning visitor (with a token) is not a new visitor: still welcome…
        back = ChatClient(srv.ws_url, visitor_token=kept[0].visitor_token, conversation_id=kept[0].conversation_id)
        await back.connect()
        # …but the open sockets of one address are capped (4 here: three kept plus `back`): the
        # fifth is refused as soon as it opens, before any frame.
        fifth = ChatClient(srv.ws_url)
        await fifth.open()
        assert (await fifth.wait_for(lambda f: f["type"] == "error"))["code"] == "rate_limited"
        with pytest.raises(websockets.ConnectionClosed):
            await fifth.recv(timeout=5)
        assert fifth._ws.close_code == 4029
        await back.close()
        for chat in kept:
            await chat.close()
        await _until(lambda: srv.hub.security.open_sockets("127.0.0.1") == 0)
        # Hellos are capped too (6 a minute; 5 so far, counting the refused ones).
        again = ChatClient(srv.ws_url, visitor_token=kept[2].visitor_token)
        await again.connect()
        await again.close()
        assert await _refused(ChatClient(srv.ws_url, visitor_token=kept[2].visitor_token)) == ("rate_limited", 4029)


async def _until(condition: Any, timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        assert loop.time() < deadline, "condition not reached"
        await asyncio.sleep(0.02)


async def test_a_big_frame_before_hello_is_refused_but_a_long_message_after_it_gets_an_error(
    server: RunningHub,
) -> None:
    import websockets

    from bot.client import ChatClient

    early = ChatClient(server.ws_url)
    await early.open()
    await early.send_frame('{"type":"hello","pad":"' + "x" * 100_000 + '"}')
    with pytest.raises(websockets.ConnectionClosed):
        await early.recv(timeout=5)
    assert early._ws.close_code == 1009
    async with ChatClient(server.ws_url) as chat:
        await chat.say("y" * 10_000)
        assert (await chat.wait_for(lambda f: f["type"] == "error"))["code"] == "text_too_long"
        await chat.say_and_ack("still usable")


async def test_deeply_nested_json_gets_an_error_frame_and_no_traceback(
    server: RunningHub, caplog: pytest.LogCaptureFixture
) -> None:
    from bot.client import ChatClient

    async with ChatClient(server.ws_url) as chat:
        await chat.send_frame("[" * 50_000 + "]" * 50_000)
        assert (await chat.wait_for(lambda f: f["type"] == "error"))["code"] == "invalid_json"
        await chat.say_and_ack("still here")
    assert not [r for r in caplog.records if r.levelname == "ERROR"]


# ---- item 7: the action server requires the hub's token ---------------------------------------


def test_the_action_server_refuses_calls_without_the_token_and_the_brain_sends_it(tmp_path: Path) -> None:
    import json
    import urllib.error
    import urllib.request

    from rasa.utils.endpoints import EndpointConfig
    from sanic import Sanic

    from actions.server import authorized, create_action_app
    from bot.brain import action_endpoint_config
    from tests.hubtools import free_port

    assert authorized("Bearer s3cret", "s3cret") and authorized("bearer s3cret", "s3cret")
    assert not authorized("Bearer s3cre", "s3cret") and not authorized(None, "s3cret")
    assert not authorized("Bearer ", "")
    with pytest.raises(ValueError):
        create_action_app("")
    endpoint = action_endpoint_config(EndpointConfig, "http://127.0.0.1:5055/webhook", "s3cret")
    assert endpoint.headers == {"Authorization": "Bearer s3cret"} and not endpoint.token

    Sanic.test_mode = True
    app = create_action_app("s3cret")
    port = free_port()
    loop = asyncio.new_event_loop()
    started, stop = threading.Event(), threading.Event()

    def serve() -> None:
        asyncio.set_event_loop(loop)
        server = loop.run_until_complete(app.create_server(host="127.0.0.1", port=port, return_asyncio_server=True,
                                                           access_log=False))
        loop.run_until_complete(server.startup())
        started.set()

        async def wait() -> None:
            while not stop.is_set():
                await asyncio.sleep(0.05)

        loop.run_until_complete(wait())
        server.close()
        loop.run_until_complete(server.wait_closed())

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    assert started.wait(30)

    def call(path: str, headers: dict[str, str], body: Any = None) -> int:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data,
                                     headers={"Content-Type": "application/json", **headers})
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return int(r.status)
        except urllib.error.HTTPError as e:
            return int(e.code)

    try:
        cancel = {"next_action": "action_change_plan", "sender_id": "c1", "version": "3.6.2",
                  "tracker": {"sender_id": "c1", "slots": {}, "latest_message": {"metadata": {"visitor_id": "v"}},
                              "events": []}, "domain": {}}
        assert call("/health", {}) == 200
        assert call("/webhook", {}, cancel) == 401
        assert call("/webhook", {"Authorization": "Bearer wrong"}, cancel) == 401
        assert call("/actions", {}) == 401
        assert call("/actions", {"Authorization": "Bearer s3cret"}) == 200
    finally:
        stop.set()
        thread.join(10)


# ---- item 9: plan-button payloads render without a Rasa ERROR ---------------------------------


def test_button_payloads_render_to_intent_json_without_a_template_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import json

    import yaml
    from rasa.core.nlg import interpolator

    errors: list[Any] = []

    class Recorder:
        def exception(self, *args: Any, **kwargs: Any) -> None:
            errors.append((args, kwargs))

        def error(self, *args: Any, **kwargs: Any) -> None:
            errors.append((args, kwargs))

    monkeypatch.setattr(interpolator, "structlogger", Recorder())
    domain = yaml.safe_load((Path(__file__).resolve().parent.parent / "domain.yml").read_text())
    payloads = [b["payload"] for variants in domain["responses"].values() for v in variants
                for b in v.get("buttons") or []]
    assert any("plan" in p for p in payloads)
    import string

    for payload in payloads:
        # variables an action passes when it sends the response (e.g. the Undo button's plan)
        given = {name: "standard" for _, name, _, _ in string.Formatter().parse(payload) if name}
        rendered = interpolator.interpolate({"payload": payload}, {"lang": "en", "plan": None, **given})["payload"]
        if "{" in rendered:
            intent, _, entities = rendered.partition("{")
            assert intent.startswith("/") and isinstance(json.loads("{" + entities), dict), rendered
    assert errors == []


# ---- item 9: agent sockets follow account changes; the event ring says when it overflowed -------


async def _closes(ws: Any, timeout: float = 10.0) -> None:
    """The socket closes within ``timeout``: frames sent before the close are read and dropped."""
    import websockets

    with pytest.raises(websockets.ConnectionClosed):
        while True:
            await asyncio.wait_for(ws.recv(), timeout)


async def test_an_agent_socket_ends_when_the_account_is_disabled_or_its_queues_change(server: RunningHub) -> None:
    from sqlalchemy import update

    from tests.hubtools import AgentClient

    async def connected(username: str) -> AgentClient:
        client = AgentClient(server.agent_ws_url, await asyncio.to_thread(server.login, username))
        assert (await client.connect())["type"] == "ready"
        return client

    alice = await connected("alice")
    with server.db.session() as s:
        s.execute(update(Agent).where(Agent.username == "alice").values(skills=["finance_compliance"]))
    await alice.send({"type": "ping"})
    err = await alice.wait_for(lambda f: f["type"] == "error")
    assert err["code"] == "session_changed"
    await _closes(alice.ws)  # frames already on their way (a queue broadcast) may come first
    assert alice.ws.close_code == 4005
    again = await connected("alice")
    assert again.ready is not None and again.ready["agent"]["skills"] == ["finance_compliance"]
    # Disabled from the CLI (another process): the open socket loses its rights at the next frame.
    AgentService(server.db).set_disabled("alice", True)
    await again.send({"type": "availability", "available": True})
    err = await again.wait_for(lambda f: f["type"] == "error")
    assert err["code"] == "unauthorized"
    await _closes(again.ws)
    assert again.ws.close_code == 4001


def test_the_event_ring_says_when_it_no_longer_reaches_back() -> None:
    from bot.hub.events import AgentEventLog

    log = AgentEventLog(size=3, start=0)
    ids = [log.add([1], {"type": "x"})["event_id"] for _ in range(3)]
    assert log.complete_since(0) and [e["event_id"] for e in log.missed(1, 0)] == ids
    log.add([1], {"type": "x"})  # event 1 is pushed out
    assert not log.complete_since(0)
    assert log.complete_since(1) and log.complete_since(3)


async def test_a_socket_that_stops_reading_is_cut_instead_of_holding_the_sender(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import bot.hub.events as events

    monkeypatch.setattr(events, "SEND_TIMEOUT_S", 0.2)

    class Stuck:
        failed: tuple[int, str] | None = None

        async def send(self, data: str) -> None:
            await asyncio.sleep(3600)  # the client's window is full and it never reads

        def fail_connection(self, code: int, reason: str) -> None:
            self.failed = (code, reason)

    class Healthy:
        def __init__(self) -> None:
            self.got: list[str] = []

        async def send(self, data: str) -> None:
            self.got.append(data)

    registry = events.Registry()
    stuck, healthy = Stuck(), Healthy()
    registry.add("c1", stuck)
    registry.add("c1", healthy)
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert await registry.send("c1", {"type": "message", "text": "hi"}) == 1
    assert loop.time() - started < 2
    assert healthy.got and stuck.failed is not None and stuck.failed[0] == 1008
    assert registry.count() == 1  # the stuck socket is gone from the registry


def test_the_hubs_per_conversation_memos_are_bounded(server: RunningHub) -> None:
    from bot.hub.core import MAX_CONVERSATION_MEMOS
    from bot.hub.events import LRUDict

    memo: LRUDict[str, set[int]] = LRUDict(3)
    for i in range(10):
        memo.setdefault(f"c{i}", set()).add(i)
    assert list(memo) == ["c7", "c8", "c9"] and memo["c9"] == {9}
    memo["c8"] = {1}
    memo["new"] = set()
    assert list(memo) == ["c9", "c8", "new"]
    for name in ("_last_status", "_timed_out"):
        bounded = getattr(server.hub, name)
        assert isinstance(bounded, LRUDict) and bounded.max_size == MAX_CONVERSATION_MEMOS


# ---- item 9: the console cannot be framed and runs only its own code ----------------------------


def test_the_console_and_demo_page_send_csp_and_frame_ancestors(server: RunningHub) -> None:
    import urllib.request

    for path in ("/console", "/"):
        with urllib.request.urlopen(server.url + path, timeout=10) as r:
            csp = r.headers["Content-Security-Policy"]
            assert "frame-ancestors 'none'" in csp and "script-src 'self'" in csp, csp
            assert f"ws://127.0.0.1:{server.settings.port}" in csp
            assert r.headers["X-Frame-Options"] == "DENY" and r.headers["X-Content-Type-Options"] == "nosniff"
    with urllib.request.urlopen(server.url + "/console", timeout=10) as r:
        assert "unsafe-inline" not in r.headers["Content-Security-Policy"]
    from bot.hub.app import security_headers

    assert "ws://" not in security_headers("console.html", "evil'; script-src *")["Content-Security-Policy"]


async def test_identity_hellos_from_one_relaying_backend_are_not_under_the_anonymous_caps(tmp_path: Path) -> None:
    from bot.client import ChatClient
    from bot.hub.auth import identity_token

    with running_hub(tmp_path, GreeterBrain(), new_visitors_per_minute=1, hellos_per_minute=2,
                     sockets_per_address=2) as srv:
        users = []
        for i in range(6):  # more users, hellos and sockets than any anonymous cap allows
            chat = ChatClient(srv.ws_url, identity={"token": identity_token("identity-secret", f"u-{i}")})
            await chat.connect()
            users.append(chat)
        assert srv.hub.security.open_sockets("127.0.0.1") == 0
        anonymous = ChatClient(srv.ws_url)
        await anonymous.connect()
        assert await _refused(ChatClient(srv.ws_url)) == ("rate_limited", 4029)  # the second new visitor
        for chat in [*users, anonymous]:
            await chat.close()
