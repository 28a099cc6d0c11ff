"""Tools of the fault suite (``tests/test_faults.py``): hub processes to kill, a TCP proxy to
cut a database away, a fresh PostgreSQL database, and bounded waits.

Everything listens on 127.0.0.1 only, and every wait has a deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text
from sqlalchemy.engine.url import make_url

from tests.hubtools import free_port

ROOT = Path(__file__).resolve().parent.parent


def wait_until(condition: Callable[[], Any], timeout: float, what: str, interval: float = 0.1) -> Any:
    """Poll ``condition`` until it returns a true value (returned), or fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        time.sleep(interval)


async def async_wait_until(condition: Callable[[], Any], timeout: float, what: str, interval: float = 0.1) -> Any:
    """:func:`wait_until` for async tests (``condition`` is a plain, quick function)."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        await asyncio.sleep(interval)


def http_status(url: str) -> int | None:
    """The status of a GET, ``None`` when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return int(r.status)
    except urllib.error.HTTPError as e:
        return int(e.code)
    except OSError:
        return None


def alive(pid: int) -> bool:
    """The process runs (a zombie does not count)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except (FileNotFoundError, IndexError):
        return False


def children(pid: int) -> list[int]:
    """The direct children of ``pid`` (Linux ``/proc``)."""
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            with contextlib.suppress(OSError, IndexError):
                stat = (proc / "stat").read_text()
                if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                    found.append(int(proc.name))
    return found


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


# ---- processes -------------------------------------------------------------------------------------


class HubProcess:
    """A hub process (``python -m tests.fault_hub`` or ``python -m bot serve``) on a free port,
    its output in ``log``. :meth:`kill9` kills it the hard way; :meth:`stop` the soft way."""

    def __init__(self, workdir: Path, database_url: str, module: str = "tests.fault_hub",
                 env: dict[str, str] | None = None, port: int | None = None, name: str = "hub"):
        self.workdir = workdir
        self.database_url = database_url
        self.module = module
        self.port = port or free_port()
        self.extra_env = dict(env or {})
        self.name = name
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws/chat"

    @property
    def agent_ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws/agent"

    @property
    def log(self) -> Path:
        return self.workdir / f"{self.name}-{self.starts}.log"

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update({
            "DATABASE_URL": self.database_url, "HUMANLINE_PORT": str(self.port), "HUMANLINE_HOST": "127.0.0.1",
            "HUMANLINE_SECRET": "fault-suite-secret", "PYTHONUNBUFFERED": "1", "TF_CPP_MIN_LOG_LEVEL": "3",
            "HUMANLINE_ACTION_ENDPOINT": "none", "HUMANLINE_RATE_LIMIT": "1000",
            "HUMANLINE_TURN_RETRY_AFTER": "2", "HUMANLINE_TURN_RECOVERY_INTERVAL": "0.3",
            "HUMANLINE_OUTBOX_INTERVAL": "1", "SANIC_HOST": "127.0.0.1",
            # Every client of the fault suite comes from 127.0.0.1: no handoff is held as scripted.
            "HUMANLINE_HANDOFFS_PER_ADDRESS": "100000",
        })
        env.update(self.extra_env)
        return env

    def start(self) -> HubProcess:
        self.starts += 1
        self.proc = subprocess.Popen(
            [sys.executable, "-m", *self.module.split()], cwd=ROOT, env=self.env(),
            stdout=self.log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True,
        )
        return self

    def wait_healthy(self, timeout: float = 120) -> None:
        def healthy() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"{self.name} exited with {self.proc.returncode}:\n{self.tail()}")
            return http_status(self.url + "/healthz") == 200

        try:
            wait_until(healthy, timeout, f"{self.name} /healthz 200")
        except AssertionError as e:
            raise AssertionError(f"{e}\n{self.tail()}") from None

    def tail(self, chars: int = 4000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def kill9(self) -> None:
        """``kill -9`` of the hub process alone (not its process group): its children are on
        their own, as after a crash."""
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        """Stop the hub and whatever it left: its process group, SIGTERM then SIGKILL."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)


@contextlib.contextmanager
def hub_process(workdir: Path, database_url: str, **kwargs: Any) -> Iterator[HubProcess]:
    hub = HubProcess(workdir, database_url, **kwargs)
    try:
        yield hub
    finally:
        hub.stop()


# ---- a TCP proxy to cut ----------------------------------------------------------------------------


class TcpProxy:
    """``127.0.0.1:<port>`` → ``target``, in a thread of its own. :meth:`cut` closes every
    connection and stops listening (new connections are refused, as when a database host goes
    away); :meth:`restore` listens again on the same port."""

    def __init__(self, target_host: str, target_port: int):
        self.target = (target_host, target_port)
        self.port = free_port()
        self.loop = asyncio.new_event_loop()
        self._server: asyncio.AbstractServer | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._hold: asyncio.Event | None = None  # set: new connections wait before going upstream
        self.held = 0  # connections waiting now
        self._thread = threading.Thread(target=self.loop.run_forever, name=f"proxy-{self.port}", daemon=True)
        self._thread.start()
        self.restore()

    def _call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(10)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    async def _handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        hold = self._hold
        if hold is not None:
            self.held += 1
            try:
                await hold.wait()
            finally:
                self.held -= 1
        try:
            server_r, server_w = await asyncio.open_connection(*self.target)
        except OSError:
            client_w.transport.abort()  # the request dies mid-flight
            return
        self._writers.update((client_w, server_w))
        try:
            await asyncio.gather(self._pipe(client_r, server_w), self._pipe(server_r, client_w))
        finally:
            self._writers.discard(client_w)
            self._writers.discard(server_w)

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port, reuse_address=True)

    async def _cut(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for w in list(self._writers):
            with contextlib.suppress(Exception):
                w.transport.abort()  # a reset, not a polite close
        self._writers.clear()

    def cut(self) -> None:
        self._call(self._cut())

    def restore(self) -> None:
        if self._server is None:
            self._call(self._listen())

    def hold(self) -> None:
        """New connections are accepted but wait (a request caught in flight) until :meth:`release`."""

        async def make() -> None:
            self._hold = asyncio.Event()

        self._call(make())

    def release(self) -> None:
        async def go() -> None:
            if self._hold is not None:
                self._hold.set()
                self._hold = None

        self._call(go())

    @property
    def connections(self) -> int:
        return len(self._writers) // 2

    def close(self) -> None:
        self._call(self._cut())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)


# ---- a fresh PostgreSQL database -----------------------------------------------------------------


@contextlib.contextmanager
def fresh_postgres_database(server_url: str) -> Iterator[str]:
    """A new, empty database on the server of ``server_url``; its URL; dropped afterwards."""
    name = f"faults_{uuid.uuid4().hex[:10]}"
    admin = create_engine(server_url, future=True, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield str(make_url(server_url).set(database=name))
    finally:
        with admin.connect() as conn:
            conn.execute(text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n"),
                         {"n": name})
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
        admin.dispose()


def via_proxy(url: str, proxy: TcpProxy) -> str:
    """``url`` with its host and port replaced by the proxy's."""
    return str(make_url(url).set(host="127.0.0.1", port=proxy.port))


def tcp_connectable(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0
