"""The brain pool: worker processes behind the ``Brain`` protocol.

Most tests run real worker processes with :func:`fake_brain` (this module is importable in the
worker, ``tests.test_brain_pool:fake_brain``), so they need no model: sharding, concurrency in a
worker, errors, cancellation with ``forget``, a crashing worker and its restart, closing, the
workers dying with their parent, a failed load, the wiring into the hub's guard and into
``Settings``. The ``model`` test loads the real model in one worker.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from bot.brain import ActionServerError, BotReply, BrainTurn
from bot.brain_pool import BrainPool, BrainWorkerError, make_brain, shard
from bot.settings import Settings
from tests.faultkit import alive

ROOT = Path(__file__).resolve().parent.parent
FAKE = "tests.test_brain_pool:fake_brain"


# ---- the fake brain, built in the worker processes ------------------------------------------


class FakeBrain:
    """Echoes; ``raise`` raises, ``action down`` fails as an unreachable action server would,
    ``crash`` kills the worker, ``sleep <s> [tag]`` waits, ``forgotten?``
    lists the conversations the worker was told to forget.

    An echo is a greeting answered by ``utter_greet`` (resolved small talk), except after
    ``sleep <s> <tag>``: that turn is a request of its own (intent ``request_<tag>``) that an
    action resolved, so a run of them is not a customer greeting again and again — which the
    guard counts as unresolved (re-asking, small talk past its cap)."""

    def __init__(self, options: dict[str, Any]):
        self.options = options
        self.forgotten: list[str] = []

    async def load(self) -> None:
        await asyncio.sleep(float(self.options.get("load_s", 0)))
        if self.options.get("fail_load"):
            raise RuntimeError("no such model")

    def forget(self, conversation_id: str) -> None:
        self.forgotten.append(conversation_id)

    async def handle(self, conversation_id: str, text: str, metadata: dict[str, Any]) -> BrainTurn:
        if text == "raise":
            raise ValueError("the model exploded")
        if text == "action down":
            raise ActionServerError("action_open_case: Couldn't connect to the server")
        if text == "crash":
            os._exit(7)
        if text.startswith("sleep "):
            await asyncio.sleep(float(text.split()[1]))
        reply = json.dumps(self.forgotten) if text == "forgotten?" else f"echo {text}"
        words = text.split()
        if text.startswith("sleep ") and len(words) > 2:
            intent, actions = f"request_{'_'.join(words[2:])}", ["action_echo"]
            slots_set = {"lang": metadata.get("lang"), "resolution": "echoed"}
        else:
            intent, actions, slots_set = "greet", ["utter_greet"], {"lang": metadata.get("lang")}
        return BrainTurn(
            replies=[BotReply(reply, [{"title": "Yes", "payload": "/affirm"}])],
            intent=intent, confidence=0.75, entities=[{"entity": "x", "value": "你好"}],
            actions=actions, slots={"lang": metadata.get("lang"), "pid": os.getpid()},
            resolved=True, slots_set=slots_set,
        )


class ParsingFakeBrain(FakeBrain):
    async def parse(self, text: str) -> tuple[str | None, float | None]:
        if text == "raise":
            raise ValueError("the NLU exploded")
        return f"intent_of_{text}", 0.5


def parsing_fake_brain(options: dict[str, Any]) -> ParsingFakeBrain:
    return ParsingFakeBrain(options)


def fake_brain(options: dict[str, Any]) -> FakeBrain:
    return FakeBrain(options)


def _wait_gone(pids: list[int], timeout: float = 15.0) -> list[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        running = [p for p in pids if alive(p)]
        if not running:
            return []
        time.sleep(0.1)
    return [p for p in pids if alive(p)]


def _cids_per_worker(workers: int) -> dict[int, str]:
    """One conversation id for each worker index."""
    found: dict[int, str] = {}
    n = 0
    while len(found) < workers:
        cid = f"conv-{n}"
        found.setdefault(shard(cid, workers), cid)
        n += 1
    return found


# ---- pure parts ------------------------------------------------------------------------------


def test_brain_turn_round_trips_through_json() -> None:
    turn = BrainTurn(
        replies=[BotReply("你好", [{"title": "是", "payload": "/affirm"}]), BotReply("bye")],
        intent="greet", confidence=0.5, entities=[{"entity": "script", "value": "zh-Hant"}],
        actions=["utter_greet", "action_handoff"], slots={"lang": "zh-Hant", "handoff_queue": None},
        resolved=False, slots_set={"handoff_queue": "general"},
    )
    back = BrainTurn.from_dict(json.loads(json.dumps(turn.to_dict())))
    assert back == turn
    assert back.handoff_requested and back.handoff_queue == "general"
    empty = BrainTurn([], None, None, [], [], {}, False)
    assert BrainTurn.from_dict(json.loads(json.dumps(empty.to_dict()))) == empty


def test_shard_is_stable_and_uses_every_worker() -> None:
    # crc32, not hash(): the same in every process and after restarts.
    assert shard("abc", 4) == 891568578 % 4
    assert {shard(f"c{i}", 3) for i in range(100)} == {0, 1, 2}
    assert all(shard(f"c{i}", 1) == 0 for i in range(10))


def test_brain_workers_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HUMANLINE_BRAIN_WORKERS", raising=False)
    assert Settings.from_env().brain_workers is None
    for value, expected in (("0", 0), ("3", 3), ("auto", None), ("", None)):
        monkeypatch.setenv("HUMANLINE_BRAIN_WORKERS", value)
        assert Settings.from_env().brain_workers == expected
    monkeypatch.setenv("HUMANLINE_BRAIN_WORKERS", "-1")
    with pytest.raises(ValueError):
        Settings.from_env()


def test_make_brain_in_process_or_pool() -> None:
    from bot.brain import RasaAgentBrain

    assert isinstance(make_brain("m.tar.gz", None, "sqlite://", 0), RasaAgentBrain)
    pool = make_brain("m.tar.gz", "http://a/webhook", "sqlite:///x.db", 3, "tok")
    assert isinstance(pool, BrainPool) and pool.size == 3
    # The action token travels to the workers in the init frame (never on a command line).
    assert pool.options == {"model_path": "m.tar.gz", "action_endpoint": "http://a/webhook",
                            "tracker_store": "sqlite:///x.db", "action_token": "tok"}
    assert make_brain("m.tar.gz", None, "sqlite://", None).size >= 1  # type: ignore[union-attr]


# ---- real worker processes ---------------------------------------------------------------------


@pytest.fixture
async def pool() -> Any:
    p = BrainPool({}, workers=2, factory=FAKE)
    assert not await p.ready()
    await p.load()
    yield p
    await p.close()


async def test_turns_are_sharded_and_round_trip(pool: BrainPool) -> None:
    assert await pool.ready()
    pids = pool.pids()
    assert len(set(pids)) == 2 and None not in pids
    cids = _cids_per_worker(2)
    for index, cid in cids.items():
        for _ in range(3):  # always the same worker
            turn = await pool.handle(cid, "hello", {"lang": "zh-Hant"})
            assert turn.slots["pid"] == pids[index]
        assert turn.replies == [BotReply("echo hello", [{"title": "Yes", "payload": "/affirm"}])]
        assert (turn.intent, turn.confidence, turn.resolved) == ("greet", 0.75, True)
        assert turn.entities == [{"entity": "x", "value": "你好"}]
        assert turn.slots_set == {"lang": "zh-Hant"}


async def test_a_worker_serves_several_turns_at_once(pool: BrainPool) -> None:
    cid = _cids_per_worker(2)[0]
    start = time.monotonic()
    turns = await asyncio.gather(*(pool.handle(f"{cid}", "sleep 0.5", {}) for _ in range(8)))
    assert len(turns) == 8
    assert time.monotonic() - start < 2.5  # 8 × 0.5 s one after another would be 4 s


async def test_a_failed_turn_raises_and_the_worker_forgets_the_conversation(pool: BrainPool) -> None:
    cid = _cids_per_worker(2)[1]
    with pytest.raises(BrainWorkerError, match="the model exploded"):
        await pool.handle(cid, "raise", {})
    turn = await pool.handle(cid, "forgotten?", {})
    assert json.loads(turn.replies[0].text) == [cid]
    assert await pool.ready()  # the worker lives on


async def test_an_action_server_failure_keeps_its_kind_across_the_pool(pool: BrainPool) -> None:
    """The hub tells the customer about an action failure: the pool must not blur it into a
    generic worker error."""
    with pytest.raises(ActionServerError, match="Couldn't connect"):
        await pool.handle("c-action", "action down", {})
    assert await pool.ready()


async def test_a_cancelled_turn_is_cancelled_in_the_worker_and_forgotten(pool: BrainPool) -> None:
    cid = _cids_per_worker(2)[0]
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(pool.handle(cid, "sleep 30", {}), 0.3)
    deadline = time.monotonic() + 5
    while True:
        forgotten = json.loads((await pool.handle(cid, "forgotten?", {})).replies[0].text)
        if forgotten == [cid] or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.05)
    assert forgotten == [cid]


async def test_a_dead_worker_fails_its_turns_and_is_restarted(pool: BrainPool) -> None:
    cids = _cids_per_worker(2)
    old = pool.pids()
    slow = asyncio.ensure_future(pool.handle(cids[0], "sleep 5", {}))
    await asyncio.sleep(0.2)
    other = cids[0] + "-x"
    while shard(other, 2) != 0:
        other += "x"
    with pytest.raises(BrainWorkerError):
        await pool.handle(other, "crash", {})
    with pytest.raises(BrainWorkerError):  # the pending turn of the same worker fails too
        await slow
    assert not await pool.ready()
    with pytest.raises(BrainWorkerError, match="not ready"):
        await pool.handle(cids[0], "hello", {})
    # The other worker goes on serving.
    assert (await pool.handle(cids[1], "hello", {})).slots["pid"] == old[1]
    assert _wait_gone([old[0]], 5) == []
    deadline = time.monotonic() + 30
    while not await pool.ready():
        assert time.monotonic() < deadline, "the worker was not restarted"
        await asyncio.sleep(0.1)
    new = pool.pids()
    assert new[1] == old[1] and new[0] not in (None, old[0])
    assert (await pool.handle(cids[0], "hello", {})).slots["pid"] == new[0]


async def test_close_stops_every_worker() -> None:
    p = BrainPool({}, workers=2, factory=FAKE)
    await p.load()
    pids = [pid for pid in p.pids() if pid is not None]
    assert len(pids) == 2 and all(alive(pid) for pid in pids)
    await p.close()
    assert _wait_gone(pids, 1) == []
    assert not await p.ready()
    with pytest.raises(BrainWorkerError):
        await p.handle("c", "hello", {})


async def test_a_failed_load_raises_and_is_not_retried() -> None:
    p = BrainPool({"fail_load": True}, workers=2, factory=FAKE)
    try:
        with pytest.raises(BrainWorkerError, match="no such model"):
            await p.load()
        await asyncio.sleep(1.5)  # longer than the first restart back-off
        assert not await p.ready()
        assert p.pids() == [None, None]  # both exited, neither restarted
    finally:
        await p.close()


def test_workers_die_with_their_parent(tmp_path: Path) -> None:
    """However the hub dies (here ``os._exit`` without any clean-up), its workers follow."""
    script = tmp_path / "parent.py"
    script.write_text(textwrap.dedent(f"""
        import asyncio, os
        from bot.brain_pool import BrainPool

        async def main():
            pool = BrainPool({{"load_s": 0}}, workers=2, factory={FAKE!r})
            await pool.load()
            print(" ".join(str(p) for p in pool.pids()), flush=True)
            # A turn in flight when the parent dies.
            asyncio.ensure_future(pool.handle("c", "sleep 30", {{}}))
            await asyncio.sleep(0.3)
            os._exit(9)

        asyncio.run(main())
    """))
    out = subprocess.run([sys.executable, str(script)], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 9, out.stderr
    pids = [int(p) for p in out.stdout.split()]
    assert len(pids) == 2
    assert _wait_gone(pids, 10) == []


async def test_load_while_still_loading_reports_not_ready() -> None:
    p = BrainPool({"load_s": 1.0}, workers=1, factory=FAKE)
    try:
        p.start()  # as `serve` does, before the event loop serves
        task = asyncio.ensure_future(p.load())
        await asyncio.sleep(0.3)
        assert not await p.ready()
        await task
        assert await p.ready()
    finally:
        await p.close()


def test_the_hub_hands_off_when_a_worker_dies(tmp_path: Path) -> None:
    """Wired into the real hub: a turn whose worker dies is a brain error, so the guard hands
    the conversation to a person (P1) and the bot says nothing more; stopping the hub stops the
    workers."""
    from bot.client import ChatClient
    from tests.hubtools import running_hub

    brain = BrainPool({}, workers=1, factory=FAKE)
    with running_hub(tmp_path, brain) as hub:
        deadline = time.monotonic() + 30
        while hub.get("/healthz")[0] != 200:
            assert time.monotonic() < deadline, "the pool never became ready"
            time.sleep(0.1)
        pids = [p for p in brain.pids() if p is not None]

        async def talk() -> list[dict[str, Any]]:
            chat = ChatClient(hub.ws_url, lang="en")
            await chat.connect()
            try:
                await chat.say("hello")
                echo = await chat.wait_for(lambda f: f["type"] == "message" and f["sender"] == "bot", 10)
                assert echo["text"] == "echo hello"
                await chat.say("crash")
                await chat.wait_for(lambda f: f["type"] == "status" and f["status"] == "queued", 10)
                return await chat.drain(0.5)
            finally:
                await chat.close()

        later = asyncio.run(talk())
        assert not any(f.get("type") == "message" and f.get("sender") == "bot" for f in later)
        assert hub.get("/healthz")[0] == 503  # the worker is restarting
    assert _wait_gone(pids, 10) == []
    assert all(p is None or not alive(p) for p in brain.pids())


# ---- the real model --------------------------------------------------------------------------


@pytest.mark.model
@pytest.mark.slow
async def test_a_rasa_worker_answers_with_the_trained_model(trained_model: Path, tmp_path: Path) -> None:
    from bot.store.db import Database

    database_url = f"sqlite:///{tmp_path / 'pool.db'}"
    db = Database(database_url)
    db.migrate()
    db.dispose()
    pool = make_brain(str(trained_model), None, database_url, 1)
    assert isinstance(pool, BrainPool)
    try:
        await pool.load()
        assert await pool.ready()
        turn = await pool.handle("pool-conv", "hello", {"lang": "en"})
        assert turn.intent == "greet" and turn.resolved and turn.replies
        again = await pool.handle("pool-conv", "你好", {"lang": "zh-Hans"})
        assert again.intent == "greet" and again.replies
        intent, confidence = await pool.parse("hello")  # the NLU alone, as for the agent's transcript
        assert intent == "greet" and confidence is not None and 0 < confidence <= 1
    finally:
        await pool.close()
    # The worker wrote the conversation to Rasa's tracker table, in the tracker's own SQLite file
    # beside the hub's (so that its writes never hold the hub's file), not in the hub's file.
    import sqlalchemy as sa

    engine = sa.create_engine(f"sqlite:///{tmp_path / 'pool.db.tracker.db'}")
    with engine.connect() as conn:
        users = conn.execute(
            sa.text("SELECT count(*) FROM events WHERE sender_id = 'pool-conv' AND type_name = 'user'")
        ).scalar_one()
    engine.dispose()
    assert users == 2
    assert "events" not in sa.inspect(sa.create_engine(database_url)).get_table_names()


_PREDICT = textwrap.dedent("""
    import asyncio, json, sys
    from bot.brain import install_fast_model_load
    if sys.argv[2] == "fast":
        install_fast_model_load()
    from rasa.core.agent import Agent
    from rasa.core.channels.channel import CollectingOutputChannel, UserMessage

    TEXTS = ["hello", "你好", "I want to cancel my subscription", "我要投诉", "退款", "are you a bot?",
             "我要真人客服", "my bill is wrong", "謝謝你喔", "訂單SO20261104 去咗邊"]

    async def main():
        agent = Agent.load(sys.argv[1])
        out = {"parse": [], "actions": []}
        for text in TEXTS:
            r = await agent.parse_message(text)
            out["parse"].append([r["intent"]["name"], r["intent"]["confidence"],
                                 sorted((e["entity"], str(e["value"])) for e in r.get("entities", []))])
        for i, text in enumerate(TEXTS):
            channel = CollectingOutputChannel()
            await agent.handle_message(UserMessage(text, channel, sender_id=f"s{i}"))
            tracker = await agent.tracker_store.retrieve(f"s{i}")
            out["actions"].append([e.as_dict().get("name") for e in tracker.events if e.type_name == "action"])
        print("RESULT " + json.dumps(out))

    asyncio.run(main())
""")


@pytest.mark.model
@pytest.mark.slow
def test_fast_model_load_predicts_exactly_like_the_stock_load(trained_model: Path, tmp_path: Path) -> None:
    """The same intents, confidences, entities and next actions as Rasa's own ``RasaModel.load``
    (each load in its own interpreter, both at once)."""
    script = tmp_path / "predict.py"
    script.write_text(_PREDICT)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    procs = {
        mode: subprocess.Popen([sys.executable, str(script), str(trained_model), mode], cwd=ROOT, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        for mode in ("stock", "fast")
    }
    results = {}
    for mode, proc in procs.items():
        out, _ = proc.communicate(timeout=600)
        assert proc.returncode == 0, (mode, out[-2000:])
        line = next(ln for ln in out.splitlines() if ln.startswith("RESULT "))
        results[mode] = json.loads(line[len("RESULT "):])
    stock, fast = results["stock"], results["fast"]
    assert fast["actions"] == stock["actions"]
    assert [p[0] for p in fast["parse"]] == [p[0] for p in stock["parse"]]
    assert [p[2] for p in fast["parse"]] == [p[2] for p in stock["parse"]]
    assert [p[1] for p in fast["parse"]] == pytest.approx([p[1] for p in stock["parse"]], abs=1e-6)


async def test_terminate_stops_workers_without_the_event_loop() -> None:
    """``terminate`` (atexit, `serve`'s last resort) works while the streams are still open."""
    p = BrainPool({}, workers=2, factory=FAKE)
    await p.load()
    pids = [pid for pid in p.pids() if pid is not None]
    start = time.monotonic()
    p.terminate()
    assert time.monotonic() - start < 2  # SIGTERM, not the 2 s grace then SIGKILL
    assert _wait_gone(pids, 1) == []
    assert not await p.ready()
    await p.close()  # still safe afterwards


async def test_parse_runs_the_nlu_alone_on_a_worker() -> None:
    p = BrainPool({}, workers=2, factory=FAKE.replace("fake_brain", "parsing_fake_brain"))
    await p.load()
    try:
        assert await p.parse("hello") == ("intent_of_hello", 0.5)
        assert await asyncio.gather(*(p.parse(f"t{i}") for i in range(4))) == [
            (f"intent_of_t{i}", 0.5) for i in range(4)]
        with pytest.raises(BrainWorkerError):
            await p.parse("raise")
    finally:
        await p.close()
    plain = BrainPool({}, workers=1, factory=FAKE)  # a brain without parse says so
    await plain.load()
    try:
        with pytest.raises(BrainWorkerError):
            await plain.parse("hello")
    finally:
        await plain.close()


def test_the_tracker_store_has_its_own_sqlite_file_and_shares_postgresql() -> None:
    """SQLite: the brain workers' tracker events go to ``<hub file>.tracker.db``, so their writes
    never hold the hub's file; PostgreSQL: the same database as the hub."""
    from bot.brain import tracker_store_kwargs

    assert tracker_store_kwargs("sqlite:////data/humanline.db") == {"dialect": "sqlite",
                                                                     "db": "/data/humanline.db.tracker.db"}
    assert tracker_store_kwargs("sqlite:///humanline.db")["db"] == "humanline.db.tracker.db"
    pg = tracker_store_kwargs("postgresql://hl:pw@db.local:5433/humanline")
    assert (pg["dialect"], pg["host"], pg["port"], pg["db"], pg["username"]) == (
        "postgresql", "db.local", 5433, "humanline", "hl")
