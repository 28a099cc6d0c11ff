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
