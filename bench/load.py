"""Load generators: the same multi-turn customer scripts against stock Rasa (REST) and the hub
(customer WebSocket), and the handoff and idle-connection measurements of the hub."""

from __future__ import annotations

import asyncio
import itertools
import json
import statistics
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import websockets

# Multi-turn scripts that stay with the bot: every turn is small talk the bot resolves, and no
# reply repeats within one conversation, so the handoff guard does not take over mid-script.
SCRIPTS: tuple[tuple[str, ...], ...] = (
    ("hello", "are you a bot?", "thanks a lot", "bye"),
    ("你好", "你是机器人吗", "谢谢", "再见"),
    ("哈囉", "你是機器人嗎", "謝謝你喔", "掰掰"),
)


@dataclass
class LevelResult:
    """One concurrency level against one target."""

    target: str
    concurrency: int
    messages: int = 0
    errors: int = 0
    seconds: float = 0.0
    bot_replies: int = 0  # bot utterances received (a turn may have more than one)
    handed_off: int = 0  # conversations the hub queued for a person (should stay 0)
    latencies_ms: list[float] = field(default_factory=list)

    @property
    def throughput(self) -> float:
        return self.messages / self.seconds if self.seconds else 0.0

    def pct(self, p: float) -> float:
        return percentile(self.latencies_ms, p)

    def as_dict(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "concurrency": self.concurrency,
            "messages": self.messages,
            "errors": self.errors,
            "seconds": round(self.seconds, 3),
            "bot_replies": self.bot_replies,
            "handed_off": self.handed_off,
            "msgs_per_s": round(self.throughput, 2),
            "p50_ms": round(self.pct(50), 1),
            "p95_ms": round(self.pct(95), 1),
            "p99_ms": round(self.pct(99), 1),
        }


def percentile(values: Sequence[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = (len(ordered) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


async def _rest_conversation(
    session: aiohttp.ClientSession, url: str, script: Sequence[str], result: LevelResult
) -> None:
    sender = uuid.uuid4().hex
    for text in script:
        start = time.perf_counter()
        try:
            async with session.post(url, json={"sender": sender, "message": text}) as resp:
                body = await resp.json()
            if resp.status != 200 or not body:
                result.errors += 1
                continue
            result.bot_replies += len(body)
        except Exception:  # noqa: BLE001 - counted, the run goes on
            result.errors += 1
            continue
        result.latencies_ms.append((time.perf_counter() - start) * 1000)
        result.messages += 1


async def _ws_conversation(url: str, script: Sequence[str], result: LevelResult, timeout: float) -> None:
    done = 0
    try:
        async with websockets.connect(url, max_size=2**20, open_timeout=60) as ws:
            await ws.send(json.dumps({"type": "hello", "lang": "en"}))
            while json.loads(await asyncio.wait_for(ws.recv(), timeout))["type"] != "welcome":
                pass
            queued = False
            for text in script:
                start = time.perf_counter()
                await ws.send(json.dumps({"type": "message", "client_msg_id": uuid.uuid4().hex, "text": text}))
                ack_seq: int | None = None
                got = False
                while not got:
                    frame = json.loads(await asyncio.wait_for(ws.recv(), timeout))
                    kind = frame["type"]
                    if kind == "ack":
                        ack_seq = frame["seq"]
                    elif kind == "status" and frame.get("status") == "queued":
                        queued = True
                        if got or ack_seq is not None:
                            break
                    elif kind == "message" and frame.get("sender") in ("bot", "system", "agent"):
                        if frame["sender"] == "bot":
                            result.bot_replies += 1
                        # A reply to this turn comes after its ack (a late second utterance of
                        # the previous turn has a lower seq) — it is counted, not timed.
                        if ack_seq is not None and frame["seq"] > ack_seq:
                            got = True
                    elif kind == "error":
                        break
                done += 1
                if got:
                    result.latencies_ms.append((time.perf_counter() - start) * 1000)
                    result.messages += 1
                else:
                    result.errors += 1
                if queued:  # handed off to a person: the bot will not answer the rest
                    result.errors += len(script) - done
                    done = len(script)
                    break
            if queued:
                result.handed_off += 1
    except Exception:  # noqa: BLE001 - a broken conversation counts as errors for its remaining turns
        result.errors += len(script) - done


async def run_level(
    target: str, url: str, concurrency: int, conversations: int, timeout: float = 60.0
) -> LevelResult:
    """Run ``conversations`` scripted conversations, ``concurrency`` at a time."""
    result = LevelResult(target, concurrency)
    scripts = itertools.cycle(SCRIPTS)
    queue: asyncio.Queue[Sequence[str]] = asyncio.Queue()
    for _ in range(conversations):
        queue.put_nowait(next(scripts))

    async def worker(session: aiohttp.ClientSession | None) -> None:
        while not queue.empty():
            script = queue.get_nowait()
            if target == "rasa":
                assert session is not None
                await _rest_conversation(session, url, script, result)
            else:
                await _ws_conversation(url, script, result, timeout)

    start = time.perf_counter()
    conn = aiohttp.TCPConnector(limit=concurrency + 10)
    async with aiohttp.ClientSession(connector=conn, timeout=aiohttp.ClientTimeout(total=timeout)) as session:
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
    result.seconds = time.perf_counter() - start
    return result


async def handoff_latency(ws_url: str, agent_ws_url: str, agent_token: str, samples: int) -> list[float]:
    """Milliseconds from a customer's "I want a person" to the frame arriving at a connected agent."""
    latencies: list[float] = []
    async with websockets.connect(agent_ws_url, open_timeout=30) as agent:
        await agent.send(json.dumps({"type": "auth", "token": agent_token}))
        while json.loads(await asyncio.wait_for(agent.recv(), 30))["type"] != "ready":
            pass
        # Unavailable: the agent is notified of every handoff but not auto-assigned, so the
        # measurement is the notification path alone and conversations do not pile up on it.
        await agent.send(json.dumps({"type": "availability", "available": False}))
        for i in range(samples):
            async with websockets.connect(ws_url, open_timeout=30) as cust:
                await cust.send(json.dumps({"type": "hello", "lang": "en"}))
                welcome = json.loads(await asyncio.wait_for(cust.recv(), 30))
                conv = welcome["conversation_id"]
                text = ("I want to talk to a human", "转人工", "我要真人客服")[i % 3]
                start = time.perf_counter()
                await cust.send(json.dumps({"type": "message", "client_msg_id": uuid.uuid4().hex, "text": text}))
                while True:
                    frame = json.loads(await asyncio.wait_for(agent.recv(), 30))
                    if frame.get("type") in ("handoff", "assigned") and frame.get("conversation_id") == conv:
                        latencies.append((time.perf_counter() - start) * 1000)
                        break
    return latencies


async def idle_connections(ws_url: str, count: int, probe: int, rss: Any) -> dict[str, Any]:
    """Open ``count`` customer WebSockets that stay idle; measure the hub's memory per connection
    and check that all stay connected and that a sample still gets answers."""
    before = rss()
    sockets: list[Any] = []
    failures = 0
    sem = asyncio.Semaphore(200)

    async def open_one() -> None:
        nonlocal failures
        async with sem:
            try:
                ws = await websockets.connect(ws_url, open_timeout=120, ping_interval=None, max_queue=4)
                await ws.send(json.dumps({"type": "hello", "lang": "en"}))
                frame = json.loads(await asyncio.wait_for(ws.recv(), 120))
                if frame.get("type") != "welcome":
                    failures += 1
                sockets.append(ws)
            except Exception:  # noqa: BLE001
                failures += 1

    start = time.perf_counter()
    await asyncio.gather(*(open_one() for _ in range(count)))
    opened_s = time.perf_counter() - start
    await asyncio.sleep(2)
    after = rss()
    still_open = sum(1 for ws in sockets if ws.open)
    answered = 0
    for ws in sockets[:: max(1, len(sockets) // probe)][:probe]:
        try:
            await ws.send(json.dumps({"type": "message", "client_msg_id": uuid.uuid4().hex, "text": "hello"}))
            while True:
                frame = json.loads(await asyncio.wait_for(ws.recv(), 30))
                if frame["type"] == "message" and frame.get("sender") != "customer":
                    answered += 1
                    break
        except Exception:  # noqa: BLE001
            pass
    await asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True)
    opened = len(sockets)
    return {
        "requested": count,
        "opened": opened,
        "failed": failures,
        "still_open": still_open,
        "probe": min(probe, opened),
        "probe_answered": answered,
        "open_seconds": round(opened_s, 1),
        "rss_before_kib": before,
        "rss_after_kib": after,
        "kib_per_conn": round((after - before) / opened, 2) if opened else float("nan"),
    }


def summarise(latencies: list[float]) -> dict[str, float]:
    return {
        "samples": len(latencies),
        "p50_ms": round(percentile(latencies, 50), 2),
        "p99_ms": round(percentile(latencies, 99), 2),
        "mean_ms": round(statistics.fmean(latencies), 2) if latencies else float("nan"),
    }
