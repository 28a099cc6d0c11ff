"""``python -m bot.cluster`` (``make cluster``): several hubs behind HAProxy on one machine.

Starts one action server, ``N`` hubs (``python -m bot serve``, default 2) on PostgreSQL and Redis
(``DATABASE_URL``, default the machine's ``postgresql://postgres@127.0.0.1:5432/test``;
``REDIS_URL``, default ``redis://127.0.0.1:6379/0``) and HAProxy (Debian's package, installed by
``scripts/install-haproxy.sh`` when missing) round-robin in front of them, with the configuration
rendered from ``deploy/haproxy.cfg.tmpl``; prints the URL once every hub answers ``/healthz``
and stops everything on Ctrl-C. The tests use :func:`render_haproxy_config` and
:func:`start_haproxy` to build the same load balancer (tests/test_cluster.py).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from string import Template

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE = ROOT / "deploy" / "haproxy.cfg.tmpl"
INSTALL_SCRIPT = ROOT / "scripts" / "install-haproxy.sh"


def render_haproxy_config(bind: str, hubs: list[tuple[str, int]], check_interval_ms: int = 500) -> str:
    """The HAProxy configuration for ``hubs`` (``(name, port)`` on 127.0.0.1) listening on ``bind``."""
    servers = "\n".join(f"    server {name} 127.0.0.1:{port} check" for name, port in hubs)
    return Template(TEMPLATE.read_text()).substitute(bind=bind, servers=servers,
                                                     check_interval=f"{check_interval_ms}ms")


def ensure_haproxy() -> str:
    """The path of ``haproxy``, installing Debian's package first when it is missing."""
    found = shutil.which("haproxy")
    if found is None:
        subprocess.run(["bash", str(INSTALL_SCRIPT)], check=True)
        found = shutil.which("haproxy")
    if found is None:
        raise RuntimeError("haproxy is not installed and scripts/install-haproxy.sh could not install it")
    return found


def start_haproxy(config: str, workdir: Path, log: Path | None = None) -> subprocess.Popen[bytes]:
    """HAProxy in the foreground (``-db``) with ``config`` written to ``workdir/haproxy.cfg``;
    the configuration is checked first (``-c``)."""
    binary = ensure_haproxy()
    path = workdir / "haproxy.cfg"
    path.write_text(config)
    subprocess.run([binary, "-c", "-q", "-f", str(path)], check=True)
    out = (log or workdir / "haproxy.log").open("wb")
    return subprocess.Popen([binary, "-db", "-f", str(path)], stdout=out, stderr=subprocess.STDOUT,
                            start_new_session=True)


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return int(r.status) == 200
    except (urllib.error.URLError, OSError):
        return False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bot.cluster", description=__doc__.split("\n\n")[0])
    parser.add_argument("--hubs", type=int, default=int(os.environ.get("HUBS", "2")))
    parser.add_argument("--port", type=int, default=int(os.environ.get("CLUSTER_PORT", "8080")),
                        help="HAProxy's port (the URL to open)")
    parser.add_argument("--first-hub-port", type=int, default=8081)
    parser.add_argument("--action-port", type=int, default=5055)
    args = parser.parse_args(argv)

    database_url = os.environ.get("DATABASE_URL") or "postgresql://postgres@127.0.0.1:5432/test"
    redis_url = os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0"
    if database_url.startswith("sqlite"):
        print("make cluster needs PostgreSQL: several hubs cannot share a SQLite file", file=sys.stderr)
        return 2
    workdir = ROOT / ".cluster"
    workdir.mkdir(exist_ok=True)
    secret = os.environ.get("HUMANLINE_SECRET") or secrets.token_urlsafe(32)
    action_token = os.environ.get("HUMANLINE_ACTION_TOKEN") or secrets.token_urlsafe(32)
    endpoint = f"http://127.0.0.1:{args.action_port}/webhook"
    base = {**os.environ, "DATABASE_URL": database_url, "REDIS_URL": redis_url, "HUMANLINE_SECRET": secret,
            "HUMANLINE_ACTION_TOKEN": action_token, "HUMANLINE_ACTION_ENDPOINT": endpoint,
            "HUMANLINE_START_ACTION_SERVER": "0", "HUMANLINE_TRUSTED_PROXIES": "127.0.0.1"}
    procs: list[tuple[str, subprocess.Popen[bytes]]] = []

    def spawn(name: str, cmd: list[str], env: dict[str, str]) -> None:
        log = (workdir / f"{name}.log").open("wb")
        procs.append((name, subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                             start_new_session=True)))
        print(f"  {name}: {' '.join(cmd)} (log .cluster/{name}.log)", flush=True)

    def stop_all(*_: object) -> None:
        for _name, proc in reversed(procs):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        for _name, proc in procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(20)
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop_all)
    subprocess.run([sys.executable, "-m", "bot", "migrate"], cwd=ROOT, env=base, check=True)
    spawn("actions", [sys.executable, "-m", "actions.server", "--host", "127.0.0.1", "--port", str(args.action_port)],
          base)
    hubs = []
    for i in range(args.hubs):
        port = args.first_hub_port + i
        env = {**base, "HUMANLINE_PORT": str(port), "HUMANLINE_DEMO_AGENT": "yes" if i == 0 else "no"}
        spawn(f"hub{i + 1}", [sys.executable, "-m", "bot", "serve"], env)
        hubs.append((f"hub{i + 1}", port))
    try:
        deadline = time.monotonic() + 600
        while not all(http_ok(f"http://127.0.0.1:{p}/healthz") for _, p in hubs):
            for name, proc in procs:
                if proc.poll() is not None:
                    print(f"{name} exited with {proc.returncode}; see .cluster/{name}.log", file=sys.stderr)
                    stop_all()
            if time.monotonic() > deadline:
                print("the hubs did not become healthy within 10 minutes", file=sys.stderr)
                stop_all()
            time.sleep(1)
        config = render_haproxy_config(f"127.0.0.1:{args.port}", hubs)
        procs.append(("haproxy", start_haproxy(config, workdir)))
        while not http_ok(f"http://127.0.0.1:{args.port}/healthz"):
            time.sleep(0.2)
        print(f"\nHumanline cluster: {args.hubs} hubs behind HAProxy at http://127.0.0.1:{args.port}/ "
              f"(console: http://127.0.0.1:{args.port}/console); Ctrl-C stops it.", flush=True)
        while True:
            for name, proc in procs:
                if proc.poll() is not None:
                    print(f"{name} exited with {proc.returncode}; see .cluster/{name}.log", flush=True)
            time.sleep(5)
    except KeyboardInterrupt:
        stop_all()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
