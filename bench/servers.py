"""Start and stop the processes a benchmark compares: the action server, stock ``rasa run``
(REST channel) and the Humanline hub, all on the same trained model and on free ports."""

from __future__ import annotations

import os
import resource
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def raise_file_limit() -> int:
    """Raise this process's open-file limit to the hard limit (children inherit it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else 1_048_576
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def rss_kib(pid: int) -> int:
    """Resident memory of a process in KiB (Linux /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def wait_http(url: str, timeout: float, proc: subprocess.Popen[bytes] | None = None) -> float:
    """Poll ``url`` until it answers 200; returns the seconds waited."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{url}: the server exited with {proc.returncode} before it was ready")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return time.monotonic() - start
        except Exception:  # noqa: BLE001 - not up yet
            pass
        time.sleep(0.1)
    raise TimeoutError(f"{url} not ready after {timeout:.0f} s")


@dataclass
class Server:
    name: str
    proc: subprocess.Popen[bytes]
    port: int
    log: Path
    started_at: float = field(default_factory=time.monotonic)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


def _spawn(name: str, cmd: list[str], env: dict[str, str], port: int, workdir: Path) -> Server:
    log = workdir / f"{name}.log"
    handle = log.open("wb")
    proc = subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True
    )
    return Server(name, proc, port, log)


def base_env(database_url: str) -> dict[str, str]:
    env = dict(os.environ)
    env["DATABASE_URL"] = database_url
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    env["PYTHONUNBUFFERED"] = "1"
    return env


def start_action_server(workdir: Path, database_url: str, name: str = "actions") -> Server:
    port = free_port()
    cmd = [str(VENV_BIN / "rasa"), "run", "actions", "--port", str(port), "--actions", "actions"]
    server = _spawn(name, cmd, base_env(database_url), port, workdir)
    wait_http(f"http://127.0.0.1:{port}/health", 120, server.proc)
    return server


def start_stock_rasa(
    workdir: Path, model: Path, action_port: int, database_url: str,
    stores: str | None = None, extra_env: dict[str, str] | None = None, name: str = "rasa",
) -> Server:
    """Stock ``rasa run`` with the REST channel and an SQL tracker store, as an operator would
    run this project without the hub. ``stores`` replaces the default SQLite ``tracker_store``
    section of ``endpoints.yml`` (e.g. PostgreSQL and a ``lock_store``); ``extra_env`` is added
    to its environment (e.g. ``SANIC_WORKERS``)."""
    port = free_port()
    endpoints = workdir / f"{name}-endpoints.yml"
    db_path = workdir / f"{name}-tracker.db"
    if stores is None:
        stores = f"tracker_store:\n  type: SQL\n  dialect: sqlite\n  db: {db_path}\n"
    endpoints.write_text(f"action_endpoint:\n  url: http://127.0.0.1:{action_port}/webhook\n" + stores)
    credentials = workdir / f"{name}-credentials.yml"
    credentials.write_text("rest:\n")
    cmd = [
        str(VENV_BIN / "rasa"), "run", "--model", str(model), "--port", str(port),
        "--endpoints", str(endpoints), "--credentials", str(credentials),
    ]
    env = base_env(database_url)
    env.update(extra_env or {})
    server = _spawn(name, cmd, env, port, workdir)
    wait_http(f"http://127.0.0.1:{port}/", 300, server.proc)
    return server


def start_hub(
    workdir: Path, model: Path, action_port: int, database_url: str, extra_env: dict[str, str],
    name: str = "hub",
) -> tuple[Server, float]:
    """The hub, without its own action server; returns it and its cold start in seconds."""
    port = free_port()
    env = base_env(database_url)
    env.update(
        {
            "HUMANLINE_PORT": str(port),
            "HUMANLINE_MODEL": str(model),
            "HUMANLINE_ACTION_ENDPOINT": f"http://127.0.0.1:{action_port}/webhook",
            "HUMANLINE_START_ACTION_SERVER": "0",
            "HUMANLINE_RATE_LIMIT": "100000",
            # Every simulated customer comes from 127.0.0.1: lift the per-address abuse limits.
            "HUMANLINE_NEW_VISITORS_PER_MINUTE": "1000000",
            "HUMANLINE_HELLOS_PER_MINUTE": "1000000",
            "HUMANLINE_SOCKETS_PER_ADDRESS": "1000000",
            "HUMANLINE_HANDOFFS_PER_ADDRESS": "1000000",
            # The product default (3 s) hands a conversation to a person when a turn waits longer
            # for the model; at 50+ concurrent conversations on 2 cores turns queue longer than
            # that in Rasa itself, so the bench lifts it to measure the bot, not the fallback.
            "HUMANLINE_BRAIN_TIMEOUT": os.environ.get("BENCH_BRAIN_TIMEOUT", "120"),
        }
    )
    env.update(extra_env)
    cmd = [sys.executable, "-m", "bot", "serve"]
    server = _spawn(name, cmd, env, port, workdir)
    cold = wait_http(f"http://127.0.0.1:{port}/healthz", 300, server.proc)
    return server, cold


def run_cli(args: list[str], database_url: str) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "bot", *args], cwd=ROOT, env=base_env(database_url),
        capture_output=True, text=True, check=True,
    )
    return out.stdout
