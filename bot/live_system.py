"""The whole system as a user meets it, for end-to-end tests, browser tests and the dialogue evaluation.

:func:`start_live_system` migrates a fresh SQLite database, creates agents, starts the rasa_sdk
action server and ``python -m bot serve`` on free ports with the trained model, and waits for
``/healthz``. Nothing is faked: the callers talk to the same processes ``make run`` starts.
(``tests/live_system.py`` re-exports it for the tests; :mod:`bot.dialogue_eval` uses it directly.)
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from bot.settings import ROOT

ALL_QUEUES = "general,service_supervision,finance_compliance,data_protection,account_services"


def free_port() -> int:
    """A TCP port that was free on the loopback interface a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class LiveSystem:
    url: str
    ws_url: str
    database_url: str
    workdir: Path

    def cli(self, *args: str) -> str:
        return _cli(list(args), self.database_url)


def _env(database_url: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update({"DATABASE_URL": database_url, "PYTHONUNBUFFERED": "1", "TF_CPP_MIN_LOG_LEVEL": "3",
                "SANIC_HOST": "127.0.0.1"})
    return env


def _cli(args: list[str], database_url: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "bot", *args], cwd=ROOT, env=_env(database_url), capture_output=True, text=True
    )
    if done.returncode != 0:
        raise RuntimeError(f"python -m bot {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
    return done.stdout


def _wait(url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 900) -> None:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}; log:\n{log.read_text()[-4000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except Exception:  # noqa: BLE001 - not ready yet
            time.sleep(0.2)
    raise TimeoutError(f"{url} not ready after {timeout} s; log:\n{log.read_text()[-4000:]}")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@contextmanager
def start_live_system(
    workdir: Path, model: Path, agents: list[tuple[str, str, str]], hub_env: dict[str, str] | None = None
) -> Iterator[LiveSystem]:
    """Run the action server and the hub; ``agents`` are (username, display name, password),
    ``hub_env`` extra environment variables of the hub process (e.g. ``HUMANLINE_BRAIN_TIMEOUT``)."""
    database_url = f"sqlite:///{workdir / 'live.db'}"
    _cli(["migrate"], database_url)
    for username, display, password in agents:
        _cli(
            ["create-agent", "--username", username, "--display-name", display, "--skills", ALL_QUEUES,
             "--password", password],
            database_url,
        )
    action_port, hub_port = free_port(), free_port()
    procs: list[subprocess.Popen[bytes]] = []
    try:
        alog = workdir / "actions.log"
        # The authenticated action server, as `python -m bot serve` runs it: hub and action
        # server share the bearer token.
        token = secrets.token_urlsafe(24)
        actions = subprocess.Popen(
            [sys.executable, "-m", "actions.server", "--port", str(action_port)],
            cwd=ROOT, env={**_env(database_url), "HUMANLINE_ACTION_TOKEN": token}, stdout=alog.open("wb"),
            stderr=subprocess.STDOUT, start_new_session=True,
        )
        procs.append(actions)
        _wait(f"http://127.0.0.1:{action_port}/health", actions, alog)
        env = _env(database_url)
        env.update(
            {
                "HUMANLINE_PORT": str(hub_port),
                "HUMANLINE_MODEL": str(model),
                "HUMANLINE_ACTION_ENDPOINT": f"http://127.0.0.1:{action_port}/webhook",
                "HUMANLINE_START_ACTION_SERVER": "0",
                "HUMANLINE_ACTION_TOKEN": token,
                # The browser and the tests connect from 127.0.0.1 many times a minute.
                "HUMANLINE_NEW_VISITORS_PER_MINUTE": "100000",
                "HUMANLINE_HELLOS_PER_MINUTE": "100000",
                "HUMANLINE_SOCKETS_PER_ADDRESS": "100000",
                "HUMANLINE_HANDOFFS_PER_ADDRESS": "100000",
                **(hub_env or {}),
            }
        )
        hlog = workdir / "hub.log"
        hub = subprocess.Popen(
            [sys.executable, "-m", "bot", "serve"], cwd=ROOT, env=env, stdout=hlog.open("wb"),
            stderr=subprocess.STDOUT, start_new_session=True,
        )
        procs.append(hub)
        _wait(f"http://127.0.0.1:{hub_port}/healthz", hub, hlog)
        yield LiveSystem(
            url=f"http://127.0.0.1:{hub_port}",
            ws_url=f"ws://127.0.0.1:{hub_port}/ws/chat",
            database_url=database_url,
            workdir=workdir,
        )
    finally:
        for p in reversed(procs):
            _stop(p)
