"""The abuse suite: ``python -m bench.abuse [--small]`` (numbers in docs/security.md).

It starts one hub in a child process (``python -m bench.abuse --serve``: the real app with the
default abuse limits, an echo brain instead of the model, SQLite, ``HUMANLINE_TRUSTED_PROXIES``
set to loopback so that each simulated client can come from its own address through
``X-Forwarded-For``) and runs, one after the other:

* ``anonymous_hellos`` — N anonymous hellos from one address (N = 1 000);
* ``scripted_handoffs`` — a script looping hello → "I want to talk to a human" from one address
  (30 tries): the new-visitor cap admits 10, the first 5 handoffs are ordinary, the rest held;
* ``logins_one_user`` — N parallel wrong-password logins for one username from N addresses, and
  ``logins_one_address`` — N parallel logins for N usernames from one address (N = 500);
* ``slow_reader`` — a second tab of a conversation that never reads while the first tab receives
  twenty 256 KiB replies;
* ``frames`` — frames above the pre-hello limit, above the frame limit, and 20 000-deep JSON;
* ``reconnect_storm`` — N returning visitors, each from its own address, reconnecting at once
  (N = 2 000).

Throughout, a well-behaved customer (its own address, its own process) sends a message every
0.55 s and times its bot reply; each scenario reports that probe's latency, the hub's CPU seconds and memory, and
whether its limits held. ``--small`` runs the same with small numbers (the pytest
``tests/test_abuse.py``). Writes ``bench/results/abuse[-small].json``; exits 1 when a limit did
not hold. ``--only NAME`` runs one scenario, ``--hub-cpu-share 0.25`` emulates a busy machine;
``ABUSE_SLOW_CALLBACKS=0.3`` (diagnosis) makes the hub log every event-loop step and every garbage
collection longer than that (``bench/results/abuse-hub.log``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import websockets

from bench.load import percentile
from bench.servers import ROOT, free_port, raise_file_limit, wait_http

RESULTS = ROOT / "bench" / "results"
SECRET = "abuse-suite-secret-" + "0" * 32
PROBE_ADDRESS = "198.51.100.1"
BIG_REPLY_CHARS = 256 * 1024


@dataclass(frozen=True)
class Sizes:
    hellos: int
    logins: int
    storm: int
    frames: int
    scripted: int
    #: the probe's p99 during a scenario may exceed its quiet p99 by at most this much
    probe_bound_ms: float
    #: the storm is CPU-bound on the hub: every hello is a few database calls
    storm_probe_bound_ms: float


# Bounds for a shared, loaded 2-core machine (docs/security.md has the measured figures).
FULL = Sizes(hellos=1000, logins=500, storm=2000, frames=20, scripted=30, probe_bound_ms=2000,
             storm_probe_bound_ms=4000)
SMALL = Sizes(hellos=100, logins=60, storm=150, frames=3, scripted=15, probe_bound_ms=2000,
              storm_probe_bound_ms=4000)


# ---- the hub under test (child process) ------------------------------------------------------


class EchoBrain:
    """Answers every message at once, differently each time and as a request of its own that an
    action resolved (so the guard never hands off: no repeated reply, no re-asked request);
    ``big:…`` gets a 256 KiB reply (for the slow reader)."""

    async def ready(self) -> bool:
        return True

    async def handle(self, conversation_id: str, text: str, metadata: dict[str, Any]) -> Any:
        from bot.brain import BotReply, BrainTurn

        reply = f"echo: {text}" + (" " + "x" * BIG_REPLY_CHARS if text.startswith("big:") else "")
        return BrainTurn(replies=[BotReply(reply)], intent=f"request_{text}", confidence=1.0, entities=[],
                         actions=["action_echo"], slots={}, resolved=True, slots_set={"resolution": "echoed"})


def serve(port: int, database_url: str) -> None:
    from bot.hub import create_app
    from bot.settings import Settings

    settings = replace(Settings.from_env(), host="127.0.0.1", port=port, database_url=database_url,
                       action_endpoint=None)
    app = create_app(settings, brain=EchoBrain())
    if os.environ.get("ABUSE_SLOW_CALLBACKS"):  # diagnosis: log event-loop steps and collections that long
        async def watch(app: Any, loop: Any) -> None:
            import logging
            logging.getLogger("asyncio").setLevel(logging.WARNING)
            loop.set_debug(True)
            loop.slow_callback_duration = float(os.environ["ABUSE_SLOW_CALLBACKS"])
            import gc
            started: list[float] = []

            def timed(phase: str, info: dict[str, Any]) -> None:
                if phase == "start":
                    started[:] = [time.perf_counter()]
                elif started and time.perf_counter() - started[0] > loop.slow_callback_duration / 6:
                    print(f"gc generation {info['generation']} took {time.perf_counter() - started[0]:.3f} s "
                          f"({info['collected']} collected, {len(gc.get_objects())} objects)", flush=True)

            gc.callbacks.append(timed)

        app.register_listener(watch, "after_server_start")
    from bot.hub.admission import serve_options

    app.run(host="127.0.0.1", port=port, access_log=False, debug=False, **serve_options())


def _hub_env(database_url: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update({
        "DATABASE_URL": database_url, "HUMANLINE_SECRET": SECRET, "HUMANLINE_TRUSTED_PROXIES": "127.0.0.1",
        "HUMANLINE_ACTION_ENDPOINT": "none", "PYTHONUNBUFFERED": "1",
    })
    # The defaults are what is measured; only an explicit scrypt cost from the caller is kept.
    for name in ("HUMANLINE_NEW_VISITORS_PER_MINUTE", "HUMANLINE_HELLOS_PER_MINUTE", "HUMANLINE_SOCKETS_PER_ADDRESS",
                 "HUMANLINE_HANDOFFS_PER_ADDRESS", "HUMANLINE_HANDOFF_WINDOW",
                 "HUMANLINE_LOGIN_ATTEMPTS_PER_ADDRESS", "HUMANLINE_RATE_LIMIT"):
        env.pop(name, None)
    return env


class Hub:
    """The child hub: its URL, process and database file.

    ``cpu_share`` below 1 emulates a machine busy with other work: the hub process is stopped
    (``SIGSTOP``) for the rest of every 50 ms period, so it gets at most that share of one core
    (a real loaded machine's share varies; this one is repeatable and costs nobody CPU).
    """

    def __init__(self, workdir: Path, cpu_share: float = 1.0) -> None:
        self.db_path = workdir / "abuse.db"
        self.database_url = f"sqlite:///{self.db_path}"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.ws = f"ws://127.0.0.1:{self.port}"
        env = _hub_env(self.database_url)
        subprocess.run([sys.executable, "-m", "bot", "migrate"], cwd=ROOT, env=env, check=True, capture_output=True)
        for i, name in enumerate(("alice", "sam")):
            subprocess.run([sys.executable, "-m", "bot", "create-agent", "--username", name, "--password",
                            "correct-horse-battery", "--skills", "general", *(["--supervisor"] if i else [])],
                           cwd=ROOT, env=env, check=True, capture_output=True)
        self.log = (workdir / "hub.log").open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.abuse", "--serve", str(self.port), self.database_url],
            cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        wait_http(self.url + "/healthz", 120, self.proc)
        self._throttle_stop = threading.Event()
        self._throttle: threading.Thread | None = None
        if cpu_share < 1.0:
            self._throttle = threading.Thread(target=self._duty_cycle, args=(max(0.05, cpu_share),), daemon=True)
            self._throttle.start()

    def _duty_cycle(self, share: float, period: float = 0.05) -> None:
        pid = self.proc.pid
        while not self._throttle_stop.is_set() and self.proc.poll() is None:
            time.sleep(period * share)
            os.kill(pid, signal.SIGSTOP)
            time.sleep(period * (1 - share))
            os.kill(pid, signal.SIGCONT)
        if self.proc.poll() is None:
            os.kill(pid, signal.SIGCONT)

    def cpu_s(self) -> float:
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def memory_kib(self) -> tuple[int, int]:
        """Current and peak resident memory (``VmRSS``, ``VmHWM``)."""
        values = {}
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(rest.split()[0])
        return values["VmRSS"], values["VmHWM"]

    def count(self, sql: str) -> int:
        with sqlite3.connect(self.db_path) as conn:
            return int(conn.execute(sql).fetchone()[0])

    def stop(self) -> None:
        self._throttle_stop.set()
        if self._throttle is not None:
            self._throttle.join()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.log.close()
        if os.environ.get("ABUSE_SLOW_CALLBACKS"):  # keep the hub's log with the slow steps
            RESULTS.mkdir(exist_ok=True)
            (RESULTS / "abuse-hub.log").write_bytes(Path(self.log.name).read_bytes())


def listen_overflows() -> int:
    """The kernel's count of connections dropped because a listen backlog was full (machine-wide:
    another program's overflow counts too; 0 when unknown)."""
    try:
        lines = Path("/proc/net/netstat").read_text().splitlines()
    except OSError:
        return 0
    for names, values in zip(lines[::2], lines[1::2], strict=False):
        if names.startswith("TcpExt:"):
            return int(dict(zip(names.split(), values.split(), strict=True)).get("ListenOverflows", 0))
    return 0


# ---- clients -----------------------------------------------------------------------------------


async def open_chat(hub: Hub, address: str, **kw: Any) -> Any:
    return await websockets.connect(  # type: ignore[attr-defined]
        hub.ws + "/ws/chat", extra_headers={"X-Forwarded-For": address}, open_timeout=60, close_timeout=1,
        max_size=None, **kw)


async def next_frame(ws: Any, predicate: Callable[[dict[str, Any]], bool], timeout: float = 30) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        frame: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), max(0.01, deadline - loop.time())))
        if predicate(frame):
            return frame


async def hello(hub: Hub, address: str, timeout: float = 30, **fields: Any) -> tuple[Any, dict[str, Any]]:
    """A socket from ``address`` and the hub's answer to its hello (``welcome`` or ``error``)."""
    ws = await open_chat(hub, address)
    await ws.send(json.dumps({"type": "hello", **fields}))
    return ws, await next_frame(ws, lambda f: f["type"] in ("welcome", "error"), timeout)


class Probe:
    """The well-behaved customer: one message every ``interval`` seconds (at least 0.55 s, under
    the per-visitor message limit), bot reply timed. It runs in a process of its own (``python -m
    bench.abuse --probe WS_URL``), like a customer on another machine: the thousands of storm
    clients in this process must not delay its clock."""

    def __init__(self, hub: Hub, interval: float = 0.2) -> None:
        self.hub, self.interval = hub, interval
        self.samples: list[tuple[float, float]] = []  # (sent at, latency ms); monotonic clock, system-wide
        self.failures = 0
        self._task: asyncio.Task[None] | None = None
        self._proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        self._proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bench.abuse", "--probe", self.hub.ws, str(self.interval), cwd=ROOT,
            stdout=asyncio.subprocess.PIPE)
        assert self._proc.stdout is not None
        first = await asyncio.wait_for(self._proc.stdout.readline(), 60)
        assert first.startswith(b"READY"), first
        self._task = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        async for line in self._proc.stdout:
            kind, *values = line.decode().split()
            if kind == "S":
                self.samples.append((float(values[0]), float(values[1])))
            elif kind == "F":
                self.failures += 1

    def window(self, start: float, end: float) -> dict[str, Any]:
        lat = [ms for at, ms in self.samples if start <= at <= end]
        return {"samples": len(lat), "p50_ms": round(percentile(lat, 50), 1), "p99_ms": round(percentile(lat, 99), 1),
                "max_ms": round(max(lat), 1) if lat else float("nan"),
                # (seconds into the window it was sent, ms): where in a scenario the slow ones were
                "timeline": [(round(at - start, 2), ms) for at, ms in self.samples if start <= at <= end]}

    async def stop(self) -> None:
        if self._proc is not None and self._proc.returncode is None:
            self._proc.terminate()
            await self._proc.wait()
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)


async def probe_main(ws_url: str, interval: float) -> None:
    """The probe's own process: prints ``READY``, then ``S <sent at> <ms>`` per reply and ``F
    <sent at>`` per failure (no reply within 30 s)."""
    ws = await websockets.connect(  # type: ignore[attr-defined]
        ws_url + "/ws/chat", extra_headers={"X-Forwarded-For": PROBE_ADDRESS}, open_timeout=60, close_timeout=1)
    await ws.send(json.dumps({"type": "hello"}))
    welcome = await next_frame(ws, lambda f: f["type"] in ("welcome", "error"))
    assert welcome["type"] == "welcome", welcome
    print("READY", flush=True)
    n = 0
    while True:
        n += 1
        text = f"probe {n}"
        started = time.monotonic()
        try:
            await ws.send(json.dumps({"type": "message", "client_msg_id": f"p{n}", "text": text}))
            expected = f"echo: {text}"
            await next_frame(ws, lambda f, e=expected: f["type"] == "message"  # type: ignore[misc]
                             and f["sender"] == "bot" and f["text"] == e, timeout=30)
            print(f"S {started:.6f} {(time.monotonic() - started) * 1000:.1f}", flush=True)
        except Exception:  # noqa: BLE001 - counted; the probe must keep going
            print(f"F {started:.6f}", flush=True)
        # Stay under the per-visitor message limit (20 per 10 s).
        await asyncio.sleep(max(interval, 0.55) - (time.monotonic() - started))


# ---- scenarios -------------------------------------------------------------------------------


@dataclass
class Outcome:
    name: str
    counts: dict[str, Any] = field(default_factory=dict)
    limits: dict[str, bool] = field(default_factory=dict)
    seconds: float = 0.0
    cpu_s: float = 0.0
    rss_kib: int = 0
    peak_rss_kib: int = 0
    probe: dict[str, Any] = field(default_factory=dict)


async def anonymous_hellos(hub: Hub, sizes: Sizes) -> dict[str, Any]:
    before = hub.count("SELECT count(*) FROM visitors")
    sem = asyncio.Semaphore(50)
    results: list[str] = []

    async def one() -> None:
        async with sem:
            try:
                ws, frame = await hello(hub, "203.0.113.7")
                results.append(frame["type"] if frame["type"] == "welcome" else frame["code"])
                await ws.close()
            except Exception as exc:  # noqa: BLE001
                results.append(type(exc).__name__)

    await asyncio.gather(*(one() for _ in range(sizes.hellos)))
    created = hub.count("SELECT count(*) FROM visitors") - before
    welcomed = results.count("welcome")
    return {"counts": {"hellos": sizes.hellos, "welcomed": welcomed, "rate_limited": results.count("rate_limited"),
                       "other": len(results) - welcomed - results.count("rate_limited"), "visitors_created": created},
            "limits": {"new visitors per address per minute (10)": created <= 10 and welcomed <= 10,
                       "every hello answered": len(results) == sizes.hellos}}


async def scripted_handoffs(hub: Hub, sizes: Sizes) -> dict[str, Any]:
    """A script from one address loops hello → "I want to talk to a human" (no agent online)."""
    address = "203.0.113.77"
    cases0, outbox0 = hub.count("SELECT count(*) FROM cases"), hub.count("SELECT count(*) FROM outbox")
    handoffs0 = hub.count("SELECT count(*) FROM handoffs")
    answered = welcomed = 0
    for i in range(sizes.scripted):
        ws, frame = await hello(hub, address)
        if frame["type"] == "welcome":
            welcomed += 1
            await ws.send(json.dumps({"type": "message", "client_msg_id": f"h{i}",
                                      "text": "I want to talk to a human"}))
            try:  # every customer gets a place in the queue, held or not
                status = await next_frame(ws, lambda f: f["type"] == "status" and f["status"] == "queued", 30)
                answered += status.get("position", 0) >= 1
            except asyncio.TimeoutError:
                pass
        await ws.close()
    handoffs = hub.count("SELECT count(*) FROM handoffs") - handoffs0
    cases = hub.count("SELECT count(*) FROM cases") - cases0
    return {"counts": {"attempts": sizes.scripted, "welcomed": welcomed, "handoffs": handoffs,
                       "queued_with_a_place": answered, "cases_opened": cases,
                       "outbox_rows": hub.count("SELECT count(*) FROM outbox") - outbox0},
            "limits": {"every welcomed visitor queued with a place": answered == welcomed == handoffs,
                       # promise 4: with nobody online every handoff, held or not, has its case;
                       # the new-visitor limit (10 a minute per address) is what bounds them
                       "a case for every handoff, no more than new visitors allow": cases == handoffs <= 10}}


async def _post(hub: Hub, session: Any, path: str, body: dict[str, Any], address: str) -> int:
    async with session.post(hub.url + path, json=body, headers={"X-Forwarded-For": address}) as r:
        await r.read()
        return int(r.status)


async def logins(hub: Hub, sizes: Sizes, *, one_user: bool) -> dict[str, Any]:
    import aiohttp

    before = hub.count("SELECT count(*) FROM audit_log WHERE action = 'login_failed'")
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=120)) as session:
        statuses = await asyncio.gather(*(
            _post(hub, session, "/api/agents/login",
                  {"username": "alice" if one_user else f"user{i}", "password": f"guess-{i}"},
                  f"10.9.{i // 250}.{i % 250}" if one_user else "203.0.113.9")
            for i in range(sizes.logins)), return_exceptions=True)
        # The real agent, from her own address: delayed while her name is attacked; a supervisor unlocks.
        sam = await session.post(hub.url + "/api/agents/login", json={"username": "sam",
                                 "password": "correct-horse-battery"}, headers={"X-Forwarded-For": "198.51.100.50"})
        token = (await sam.json())["token"]
        await (await session.post(hub.url + "/api/supervisor/unlock", json={"username": "alice"},
                                  headers={"Authorization": f"Bearer {token}"})).read()
        alice = await _post(hub, session, "/api/agents/login", {"username": "alice",
                            "password": "correct-horse-battery"}, "198.51.100.51")
    hashed = hub.count("SELECT count(*) FROM audit_log WHERE action = 'login_failed'") - before
    codes = [str(s) if isinstance(s, int) else type(s).__name__ for s in statuses]
    counts = {"attempts": sizes.logins, "hashed": hashed, **{c: codes.count(c) for c in sorted(set(codes))},
              "real_agent_after_unlock": alice}
    bound = 12 if one_user else 30
    return {"counts": counts,
            "limits": {f"passwords hashed <= {bound}": hashed <= bound,
                       "the real agent logs in after a supervisor's unlock": alice == 200}}


async def slow_reader(hub: Hub, sizes: Sizes) -> dict[str, Any]:
    tab_a, welcome = await hello(hub, "192.0.2.10")
    assert welcome["type"] == "welcome"
    raw = socket.socket()
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    raw.connect(("127.0.0.1", hub.port))
    tab_b = await websockets.connect(  # type: ignore[attr-defined]
        hub.ws + "/ws/chat", sock=raw, extra_headers={"X-Forwarded-For": "192.0.2.10"}, max_size=None,
        max_queue=1, read_limit=2**12, close_timeout=1)
    await tab_b.send(json.dumps({"type": "hello", "visitor_token": welcome["visitor_token"],
                                 "conversation_id": welcome["conversation_id"], "last_seq": 10**6}))
    started = time.monotonic()
    for i in range(20):
        await tab_a.send(json.dumps({"type": "message", "client_msg_id": f"b{i}", "text": f"big:{i}"}))
    got = 0
    try:
        while got < 20:
            frame = await next_frame(tab_a, lambda f: f["type"] == "message" and f["sender"] == "bot", timeout=60)
            got += frame["text"].startswith("echo: big:")
    except asyncio.TimeoutError:
        pass
    seconds = time.monotonic() - started
    cut = None
    try:  # drain B: it was cut (1008) while it did not read
        while True:
            await asyncio.wait_for(tab_b.recv(), 10)
    except websockets.ConnectionClosed:
        cut = tab_b.close_code
    except asyncio.TimeoutError:
        cut = None
    await tab_a.close()
    await tab_b.close()
    return {"counts": {"replies_to_reading_tab": got, "seconds": round(seconds, 2), "stuck_tab_close_code": cut},
            "limits": {"the reading tab gets all 20 replies within 30 s": got == 20 and seconds < 30,
                       # 1008 when the close frame still got through, 1006 when its buffer was too full
                       "the stuck tab is cut (1008/1006)": cut in (1006, 1008)}}


async def frames(hub: Hub, sizes: Sizes) -> dict[str, Any]:
    outcomes: dict[str, int] = {"pre_hello_1009": 0, "oversized_1009": 0, "nested_error_and_usable": 0}

    async def closed_code(ws: Any) -> int | None:
        try:
            while True:
                await asyncio.wait_for(ws.recv(), 10)
        except websockets.ConnectionClosed:
            return int(ws.close_code or 0)
        except asyncio.TimeoutError:
            return None

    async def send_big(ws: Any, frame: str) -> None:
        # The hub may close (1009) while the client is still writing the frame: the close code
        # is what counts, not whether the client's send finished.
        with contextlib.suppress(websockets.ConnectionClosed):
            await ws.send(frame)

    for i in range(sizes.frames):
        ws = await open_chat(hub, f"192.0.2.{20 + i}")
        await send_big(ws, '{"type":"hello","x":"' + "a" * (2 * 2**20) + '"}')
        outcomes["pre_hello_1009"] += await closed_code(ws) == 1009
        ws, welcome = await hello(hub, f"192.0.2.{120 + i}")
        await ws.send(json.dumps({"type": "ping"}))  # a small frame first: the next one gets the full limit
        await next_frame(ws, lambda f: f["type"] == "pong")
        await send_big(ws, '{"type":"message","client_msg_id":"x","text":"' + "a" * (2 * 2**20) + '"}')
        outcomes["oversized_1009"] += await closed_code(ws) == 1009
        ws, welcome = await hello(hub, f"192.0.2.{220 + i % 30}")
        await ws.send("[" * 20_000 + "]" * 20_000)
        error = await next_frame(ws, lambda f: f["type"] == "error")
        await ws.send(json.dumps({"type": "ping"}))
        await next_frame(ws, lambda f: f["type"] == "pong")
        outcomes["nested_error_and_usable"] += error["code"] == "invalid_json"
        await ws.close()
    log = hub.log.name
    tracebacks = Path(log).read_text(errors="replace").count("Traceback")
    return {"counts": {**outcomes, "tracebacks_in_log": tracebacks},
            "limits": {"every oversized or nested frame handled": all(v == sizes.frames for v in outcomes.values()),
                       "no traceback logged": tracebacks == 0}}


async def reconnect_storm(hub: Hub, sizes: Sizes) -> dict[str, Any]:
    sem = asyncio.Semaphore(100)
    visitors: list[tuple[str, dict[str, Any]]] = []

    def address(i: int) -> str:
        return f"10.{100 + i // 62500}.{(i // 250) % 250}.{i % 250 + 1}"

    async def first(i: int) -> None:
        async with sem:
            ws, welcome = await hello(hub, address(i))
            visitors.append((address(i), welcome))
            await ws.close()

    await asyncio.gather(*(first(i) for i in range(sizes.storm)))
    cpu0 = hub.cpu_s()
    sockets: list[Any] = []
    answers: list[str] = []
    started = time.monotonic()

    async def back(addr: str, welcome: dict[str, Any]) -> None:
        try:
            # A storm takes a while to absorb: returning visitors wait up to two minutes.
            ws, frame = await hello(hub, addr, 120, visitor_token=welcome["visitor_token"],
                                    conversation_id=welcome["conversation_id"], last_seq=welcome["last_seq"])
            sockets.append(ws)
            answers.append(frame["type"] if frame["type"] == "welcome" else frame["code"])
        except Exception as exc:  # noqa: BLE001
            answers.append(type(exc).__name__)

    await asyncio.gather(*(back(a, w) for a, w in visitors))
    seconds = time.monotonic() - started
    await asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True)
    welcomed = answers.count("welcome")
    failures = sorted({a for a in answers if a != "welcome"})
    counts = {"clients": sizes.storm, "welcomed": welcomed, "seconds_until_all_answered": round(seconds, 2),
              "storm_cpu_s": round(hub.cpu_s() - cpu0, 2), "refused_or_failed": len(answers) - welcomed,
              "failures": failures}
    return {"probe_window": (started, started + seconds), "counts": counts,
            "limits": {"no returning visitor refused by a limit": all(f == "TimeoutError" for f in failures),
                       "every returning visitor welcomed within 120 s": welcomed == sizes.storm}}


SCENARIOS: tuple[tuple[str, Callable[[Hub, Sizes], Awaitable[dict[str, Any]]]], ...] = (
    ("anonymous_hellos", anonymous_hellos),
    ("scripted_handoffs", scripted_handoffs),
    ("logins_one_user", lambda hub, sizes: logins(hub, sizes, one_user=True)),
    ("logins_one_address", lambda hub, sizes: logins(hub, sizes, one_user=False)),
    ("slow_reader", slow_reader),
    ("frames", frames),
    ("reconnect_storm", reconnect_storm),
)


async def run(sizes: Sizes, workdir: Path, only: tuple[str, ...] = (), cpu_share: float = 1.0) -> dict[str, Any]:
    hub = Hub(workdir, cpu_share)
    probe = Probe(hub)
    report: dict[str, Any] = {"sizes": sizes.__dict__, "scenarios": [], "hub_cpu_share": cpu_share,
                              "load_average_at_start": os.getloadavg()}
    try:
        await probe.start()
        quiet_start = time.monotonic()
        await asyncio.sleep(4)
        baseline = probe.window(quiet_start, time.monotonic())
        report["probe_quiet"] = baseline
        for name, scenario in SCENARIOS:
            if only and name not in only:
                continue
            cpu0, t0, overflows0 = hub.cpu_s(), time.monotonic(), listen_overflows()
            result = await scenario(hub, sizes)
            t1 = time.monotonic()
            await asyncio.sleep(1)  # the probe's last in-flight message belongs to the scenario
            result["counts"]["listen_overflows"] = listen_overflows() - overflows0
            outcome = Outcome(name, result["counts"], result["limits"], round(t1 - t0, 2),
                              round(hub.cpu_s() - cpu0, 2), *hub.memory_kib())
            outcome.probe = probe.window(*result.get("probe_window", (t0, t1)))
            bound = sizes.storm_probe_bound_ms if name == "reconnect_storm" else sizes.probe_bound_ms
            limit = baseline["p99_ms"] + bound
            outcome.limits[f"probe p99 <= quiet p99 + {bound:.0f} ms"] = not outcome.probe["p99_ms"] > limit
            report["scenarios"].append(outcome.__dict__)
            print(_line(outcome), flush=True)
        report["probe_failures"] = probe.failures
    finally:
        await probe.stop()
        hub.stop()
    report["load_average_at_end"] = os.getloadavg()
    report["held"] = all(all(s["limits"].values()) for s in report["scenarios"]) and report["probe_failures"] == 0
    return report


def _line(o: Outcome) -> str:
    counts = " ".join(f"{k}={v}" for k, v in o.counts.items())
    held = "held" if all(o.limits.values()) else "BROKEN: " + ", ".join(k for k, v in o.limits.items() if not v)
    return (f"{o.name:20s} {o.seconds:6.1f} s  cpu {o.cpu_s:5.1f} s  rss {o.rss_kib // 1024} MiB "
            f"(peak {o.peak_rss_kib // 1024})  probe p50 {o.probe['p50_ms']} / p99 {o.probe['p99_ms']} ms  "
            f"{counts}  [{held}]")


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["--serve"]:
        serve(int(args[1]), args[2])
        return 0
    if args[:1] == ["--probe"]:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(probe_main(args[1], float(args[2])))
        return 0
    parser = argparse.ArgumentParser(prog="python -m bench.abuse", description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="small numbers (the test suite's variant)")
    parser.add_argument("--only", action="append", choices=[name for name, _ in SCENARIOS], default=[],
                        help="run only this scenario (repeatable); the results file gets its name")
    parser.add_argument("--hub-cpu-share", type=float, default=1.0, metavar="SHARE",
                        help="emulate a busy machine: the hub gets at most this share of one core (e.g. 0.3)")
    options = parser.parse_args(args)
    raise_file_limit()
    sizes = SMALL if options.small else FULL
    with tempfile.TemporaryDirectory(prefix="humanline-abuse-") as tmp:
        report = asyncio.run(run(sizes, Path(tmp), tuple(options.only), options.hub_cpu_share))
    RESULTS.mkdir(exist_ok=True)
    stem = ("abuse-small" if options.small else "abuse") + (
        f"-cpu{options.hub_cpu_share:g}" if options.hub_cpu_share < 1 else "")
    out = RESULTS / (stem + "".join(f"-{name}" for name in options.only) + ".json")
    out.write_text(json.dumps(report, indent=2))
    print(f"probe quiet: {report['probe_quiet']}  probe failures: {report['probe_failures']}  load average: "
          f"{report['load_average_at_start']} -> {report['load_average_at_end']}")
    print(f"ABUSE {'held' if report['held'] else 'BROKEN'} -> {out}")
    return 0 if report["held"] else 1


if __name__ == "__main__":
    sys.exit(main())
