"""``python -m bot``: serve, train, eval, eval-dialogue, migrate, create-agent, chat.

* ``serve`` — refuse to start without ``HUMANLINE_SECRET`` unless the database is the embedded
  SQLite demo; apply migrations; start the authenticated action server (:mod:`actions.server`)
  as a child process on loopback (port 5055; it dies with the hub, even a ``kill -9``-ed one,
  and a stale one left on its port is reclaimed) unless ``HUMANLINE_ACTION_ENDPOINT=none`` or
  ``HUMANLINE_START_ACTION_SERVER=0``; create a demo supervisor (and a few canned replies) on an
  empty database only for the embedded demo or with ``--demo-agent`` / ``HUMANLINE_DEMO_AGENT=yes``;
  load the model and serve
  the hub; once ``/healthz`` answers 200 a box shows the widget and console URLs and the demo
  account's password (once) (:mod:`bot.banner`).
* ``train`` / ``eval`` — delegate to :func:`bot.training.main` / :func:`bot.evaluation.main`.
* ``eval-dialogue`` — the scripted multi-turn conversations through the real hub
  (:func:`bot.dialogue_eval.main`, docs/evaluation.md).
* ``migrate`` — only apply the migrations.
* ``create-agent`` — add an agent (password from ``--password`` or a prompt).
* ``disable-agent`` / ``enable-agent`` — lock an account out (its tokens are revoked) or back in.
* ``reset-password`` — set a new password (from ``--password`` or a prompt); revokes its tokens.
* ``rotate-tokens`` — revoke agent login tokens (``--agent NAME`` or ``--all-agents``) and visitor
  tokens (``--visitor ID`` or ``--all-visitors``).
* ``secret`` — print a new random key for ``HUMANLINE_SECRET`` (or a key file).
* ``chat`` — a terminal customer client over the WebSocket protocol.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import logging
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from bot.settings import ROOT, Settings

if TYPE_CHECKING:
    from bot.services.agents import AgentService
    from bot.store.db import Database


def _migrate(settings: Settings) -> None:
    from bot.store.db import Database

    db = Database(settings.database_url)
    db.migrate()
    db.dispose()


def cmd_migrate(args: argparse.Namespace) -> int:
    settings = Settings.from_env()
    _migrate(settings)
    print(f"database migrated: {settings.database_url}")
    return 0


def cmd_create_agent(args: argparse.Namespace) -> int:
    from bot.services.agents import AgentService
    from bot.store.db import Database

    settings = Settings.from_env()
    _migrate(settings)
    password = args.password or getpass.getpass(f"password for {args.username}: ")
    skills = [s.strip() for s in args.skills.split(",") if s.strip()]
    db = Database(settings.database_url)
    try:
        agent = AgentService(db).create(
            args.username, args.display_name or args.username, password, skills,
            "supervisor" if args.supervisor else "agent",
        )
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    finally:
        db.dispose()
    print(f"agent {agent.username} ({agent.display_name}) created; role {agent.role}; skills {', '.join(skills)}")
    return 0


# The environment variable that marks an action server started by ``serve``: its value is the
# pid of the hub that started it, so a later start can tell a stale one (its hub is gone) from
# an action server somebody else runs.
ACTION_SERVER_OWNER = "HUMANLINE_ACTION_SERVER_OF"


class PortTaken(RuntimeError):
    """The action server's port is held by a program that is not a stale Humanline action server."""


def _die_with_parent(parent: int) -> Callable[[], None]:
    """A ``preexec_fn``: the child gets SIGTERM when the process that started it dies, however
    it dies (``kill -9`` included). Linux only (``prctl(PR_SET_PDEATHSIG)``); elsewhere the
    start-up check (:func:`_reclaim_port`) clears a stale action server instead."""

    def preexec() -> None:
        if not sys.platform.startswith("linux"):
            return
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)
        if os.getppid() != parent:  # the parent died before the prctl: nobody would signal us
            os._exit(1)

    return preexec


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie is gone
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except (FileNotFoundError, IndexError):
        return False


def _listening_pids(port: int) -> list[int]:
    """The processes with a TCP socket listening on ``port`` (Linux ``/proc``; empty elsewhere)."""
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) > 9 and fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(f"socket:[{fields[9]}]")
    pids: list[int] = []
    if not inodes:
        return pids
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if any(os.readlink(fd) in inodes for fd in (proc / "fd").iterdir()):
                pids.append(int(proc.name))
        except OSError:
            continue
    return pids


def _stale_owner(pid: int) -> int | None:
    """The pid of the hub that started action server ``pid``, when that hub is gone; ``None``
    when ``pid`` is not a Humanline action server or its hub still runs."""
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return None
    prefix = ACTION_SERVER_OWNER.encode() + b"="
    owner = next((e[len(prefix):] for e in environ if e.startswith(prefix)), None)
    if owner is None or not owner.isdigit():
        return None
    owner_pid = int(owner)
    return owner_pid if owner_pid != os.getpid() and not _alive(owner_pid) else None


def _port_free(host: str, port: int) -> bool:
    """Nothing listens on ``host:port`` (an address that is not this machine's counts as free:
    the action server will say so itself)."""
    import errno
    import socket

    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as e:
            return e.errno != errno.EADDRINUSE
    return True


def _reclaim_port(host: str, port: int, timeout_s: float = 15.0) -> None:
    """Make sure the action server can bind ``host:port``: a stale Humanline action server (its
    hub died without stopping it) is stopped; anything else holding the port is an error."""
    if _port_free(host, port):
        return
    holders = _listening_pids(port)
    stale = [pid for pid in holders if _stale_owner(pid) is not None]
    if not holders or len(stale) != len(holders):
        raise PortTaken(f"port {port} of the action server is in use by another program (pids {holders or '?'}); "
                        "stop it or set HUMANLINE_ACTION_ENDPOINT to another port")
    for pid in stale:
        print(f"stopping a stale action server (pid {pid}) left by a hub that is gone", flush=True)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while any(_alive(pid) for pid in stale) and time.monotonic() < deadline:
        time.sleep(0.1)
    for pid in stale:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    while not _port_free(host, port) and time.monotonic() < deadline + 5:
        time.sleep(0.1)


def _start_action_server(settings: Settings) -> subprocess.Popen[bytes] | None:
    """Start :mod:`actions.server` for ``settings.action_endpoint`` (which must carry
    ``settings.action_token``), or nothing when the endpoint is off or started elsewhere. Its life
    is tied to this process: it dies with the hub (parent-death signal), and a stale one left on
    the port by a hub that died anyway is reclaimed first."""
    if settings.action_endpoint is None or not settings.start_action_server:
        return None
    if not settings.action_token:
        raise ValueError("the action server needs a token (settings.action_token)")
    port = urlsplit(settings.action_endpoint).port or 5055
    # rasa_sdk's own server binds 0.0.0.0 and has no authentication: anyone reaching it could
    # act for any visitor. Ours requires the bearer token and binds the host of the configured
    # endpoint (loopback by default). The token travels in the environment, not on the command line.
    host = urlsplit(settings.action_endpoint).hostname or "127.0.0.1"
    cmd = [sys.executable, "-m", "actions.server", "--host", host, "--port", str(port)]
    env = {**os.environ, "HUMANLINE_ACTION_TOKEN": settings.action_token, ACTION_SERVER_OWNER: str(os.getpid()),
           "HUMANLINE_PUBLIC_URL": settings.public_url}  # the case links in the bot's replies
    _reclaim_port(host, port)
    print(f"starting the action server on {host}:{port}: {' '.join(cmd)}", flush=True)
    # Its own session: Ctrl-C in the terminal reaches the hub, which stops it in order.
    return subprocess.Popen(cmd, cwd=ROOT, start_new_session=True, env=env, preexec_fn=_die_with_parent(os.getpid()))


def _stop_child(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def _embedded_demo(settings: Settings) -> bool:
    """The single-machine demo: an SQLite database (no server, nothing shared)."""
    return settings.database_url.startswith("sqlite")


def _demo_agent(settings: Settings, *, requested: bool = False) -> tuple[str, str] | None:
    """Create the demo supervisor on an empty database — only for the embedded demo, or when
    asked for (``--demo-agent`` or ``HUMANLINE_DEMO_AGENT=yes``); ``HUMANLINE_DEMO_AGENT=no`` never.
    Its ``(username, password)`` when it did."""
    from bot.services.agents import AgentService
    from bot.services.canned import CannedService
    from bot.services.config import HumanlineConfig
    from bot.services.conversations import ConversationService
    from bot.services.queues import QueueService
    from bot.store.db import Database

    wanted = requested or settings.demo_agent == "yes" or (settings.demo_agent == "auto" and _embedded_demo(settings))
    if not wanted or settings.demo_agent == "no":
        return None
    db = Database(settings.database_url)
    try:
        service = AgentService(db)
        if service.count() == 0:
            password = secrets.token_urlsafe(12)
            config = HumanlineConfig.load(settings.config_path)
            service.create("demo", "Demo Agent", password, list(config.queues), "supervisor")
            # A few canned replies per language, so the demo's reply box has something to insert.
            CannedService(db, ConversationService(db), QueueService(db, config)).seed_defaults("demo")
            return "demo", password  # printed once, in the ready banner (bot.banner)
    finally:
        db.dispose()
    return None


def cmd_serve(args: argparse.Namespace) -> int:
    from bot.banner import announce_when_ready
    from bot.brain_pool import BrainPool, make_brain

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = Settings.from_env()
    if not settings.secret and not _embedded_demo(settings):
        print("error: HUMANLINE_SECRET (or HUMANLINE_SECRET_FILE) is required outside the embedded SQLite demo; "
              "create one with `python -m bot secret` (docs/security.md)", file=sys.stderr)
        return 2
    if settings.webhook_url and not settings.webhook_secret:
        print("error: HUMANLINE_WEBHOOK_URL needs HUMANLINE_WEBHOOK_SECRET: every notification is signed "
              "(docs/security.md)", file=sys.stderr)
        return 2
    if settings.action_endpoint is not None and not settings.action_token:
        # One token per run, shared by the hub's brain and the action server it starts.
        settings = replace(settings, action_token=secrets.token_urlsafe(32))
    model = settings.model_path
    if model is None:
        from bot.training import current_model, latest_model

        # The model of the current config, domain and data; an older one only with a warning
        # (its answers may not match the domain the actions expect).
        found = current_model()
        if found is None and (found := latest_model()) is not None:
            print(f"warning: no model for the current config and data; serving the newest one, {found.name} "
                  "(run `make train`)", file=sys.stderr, flush=True)
        model = str(found) if found else None
    if model is None:
        print("no trained model in models/: run `python -m bot train` (or `make train`) first", file=sys.stderr)
        return 2
    brain = make_brain(model, settings.action_endpoint, settings.database_url, settings.brain_workers,
                       settings.action_token)
    if isinstance(brain, BrainPool):
        # The workers import TensorFlow and load the model while this process migrates, imports
        # the hub and starts serving (/healthz is 503 until every worker has loaded).
        brain.start()
    child = None
    registration = None
    try:
        _migrate(settings)
        from bot.store.db import Database, HubConflict

        try:
            # held until the process ends: a lone hub (no REDIS_URL) must be the only one
            registration = Database(settings.database_url).register_hub(shared=settings.redis_url is not None)
        except HubConflict as e:
            print(f"error: {e}", file=sys.stderr, flush=True)
            return 2
        demo = _demo_agent(settings, requested=getattr(args, "demo_agent", False))
        try:
            child = _start_action_server(settings)
        except PortTaken as e:
            print(f"error: {e}", file=sys.stderr, flush=True)
            return 2
        from bot.hub import create_app

        app = create_app(settings, brain=brain)
        print(f"Humanline hub on http://{settings.host}:{settings.port}/  (console: /console, model: {model})",
              flush=True)
        announce_when_ready(settings.host, settings.port, demo)  # the box with URLs and login, once /healthz is 200
        from bot.hub.admission import serve_options

        # SIGINT/SIGTERM stop it gracefully
        app.run(host=settings.host, port=settings.port, access_log=False, **serve_options())
    finally:
        if isinstance(brain, BrainPool):
            brain.terminate()  # normally already closed by the app's stop listener
        _stop_child(child)
        if registration is not None:
            registration.release()
    return 0


def _agents() -> tuple[Database, AgentService]:
    from bot.services.agents import AgentService
    from bot.store.db import Database

    settings = Settings.from_env()
    _migrate(settings)
    db = Database(settings.database_url)
    return db, AgentService(db)


def cmd_disable_agent(args: argparse.Namespace) -> int:
    db, service = _agents()
    try:
        agent = service.set_disabled(args.username, args.command == "disable-agent")
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    finally:
        db.dispose()
    state = "disabled; its tokens are revoked" if args.command == "disable-agent" else "enabled"
    print(f"agent {agent.username} {state}")
    return 0


def cmd_reset_password(args: argparse.Namespace) -> int:
    password = args.password or getpass.getpass(f"new password for {args.username}: ")
    db, service = _agents()
    try:
        agent = service.reset_password(args.username, password)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    finally:
        db.dispose()
    print(f"password of {agent.username} reset; its tokens are revoked")
    return 0


def cmd_rotate_tokens(args: argparse.Namespace) -> int:
    from bot.services.credentials import VisitorCredentials

    if not (args.agent or args.all_agents or args.visitor or args.all_visitors):
        print("error: say what to revoke: --agent NAME, --all-agents, --visitor ID or --all-visitors",
              file=sys.stderr)
        return 2
    db, service = _agents()
    try:
        if args.agent or args.all_agents:
            count = service.revoke_tokens(args.agent)
            print(f"{count} agent token(s) revoked")
        visitors = VisitorCredentials(db)
        if args.visitor:
            if not visitors.revoke(args.visitor):
                print(f"error: no visitor {args.visitor!r}", file=sys.stderr)
                return 2
            print(f"tokens of visitor {args.visitor} revoked")
        if args.all_visitors:
            visitors.revoke_all()
            print("every visitor token issued until now is revoked")
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    finally:
        db.dispose()
    return 0


def cmd_secret(args: argparse.Namespace) -> int:
    print(secrets.token_hex(32))
    return 0


def cmd_chat(args: argparse.Namespace) -> int:
    return asyncio.run(_chat(args.url, args.lang))


async def _chat(url: str, lang: str | None) -> int:
    from bot.client import ChatClient

    chat = ChatClient(url, lang=lang, channel="cli")
    await chat.connect()
    print(f"connected — conversation {chat.conversation_id}. Type a message; Ctrl-D to quit.")

    async def printer() -> None:
        while True:
            f = await chat.recv(timeout=3600)
            if f["type"] == "message" and f["sender"] != "customer":
                who = f.get("agent_name") or f["sender"]
                print(f"\n[{who}] {f['text']}")
                for b in f.get("buttons") or []:
                    print(f"   ({b['title']}: {b['payload']})")
            elif f["type"] == "status":
                extra = {k: f[k] for k in ("queue", "position", "eta_seconds", "agent_name", "case_id") if k in f}
                print(f"\n-- {f['status']} {extra}")
            elif f["type"] == "error":
                print(f"\n!! {f['code']}: {f['message']}")

    task = asyncio.ensure_future(printer())
    loop = asyncio.get_running_loop()
    try:
        while True:
            line = await loop.run_in_executor(None, sys.stdin.readline)
            if not line:
                break
            if line.strip():
                await chat.say(line.strip())
    finally:
        task.cancel()
        await chat.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "train":
        from bot.training import main as train

        return int(train(argv[1:]) or 0)
    if argv and argv[0] == "eval":
        from bot.evaluation import main as evaluate

        return int(evaluate(argv[1:]) or 0)
    if argv and argv[0] == "eval-dialogue":
        from bot.dialogue_eval import main as evaluate_dialogues

        return int(evaluate_dialogues(argv[1:]) or 0)
    parser = argparse.ArgumentParser(prog="python -m bot", description="Humanline customer-service hub")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="migrate, start the action server and the hub")
    serve.add_argument("--demo-agent", action="store_true",
                       help="create the demo supervisor on an empty database even outside the SQLite demo")
    serve.set_defaults(func=cmd_serve)
    sub.add_parser("migrate", help="apply the database migrations").set_defaults(func=cmd_migrate)
    sub.add_parser("train", help="train the Rasa model (bot.training)")
    sub.add_parser("eval", help="evaluate the NLU (bot.evaluation)")
    sub.add_parser("eval-dialogue", help="play the scripted conversations through the real hub (bot.dialogue_eval)")
    ca = sub.add_parser("create-agent", help="add an agent account")
    ca.add_argument("--username", required=True)
    ca.add_argument("--display-name", default=None)
    ca.add_argument("--skills", default="general", help="comma-separated queue names")
    ca.add_argument("--supervisor", action="store_true")
    ca.add_argument("--password", default=None, help="default: prompt")
    ca.set_defaults(func=cmd_create_agent)
    for name, text in (("disable-agent", "lock an agent out and revoke its tokens"),
                       ("enable-agent", "let a disabled agent log in again")):
        cmd = sub.add_parser(name, help=text)
        cmd.add_argument("--username", required=True)
        cmd.set_defaults(func=cmd_disable_agent)
    rp = sub.add_parser("reset-password", help="set a new password for an agent and revoke its tokens")
    rp.add_argument("--username", required=True)
    rp.add_argument("--password", default=None, help="default: prompt")
    rp.set_defaults(func=cmd_reset_password)
    rt = sub.add_parser("rotate-tokens", help="revoke agent and/or visitor tokens")
    rt.add_argument("--agent", default=None, metavar="USERNAME")
    rt.add_argument("--all-agents", action="store_true")
    rt.add_argument("--visitor", default=None, metavar="VISITOR_ID")
    rt.add_argument("--all-visitors", action="store_true")
    rt.set_defaults(func=cmd_rotate_tokens)
    sub.add_parser("secret", help="print a new random signing key").set_defaults(func=cmd_secret)
    chat = sub.add_parser("chat", help="chat with the hub in the terminal")
    chat.add_argument("--url", default="ws://127.0.0.1:8080/ws/chat")
    chat.add_argument("--lang", default=None, choices=["en", "zh-Hans", "zh-Hant"])
    chat.set_defaults(func=cmd_chat)
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
