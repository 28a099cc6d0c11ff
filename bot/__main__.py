"""``python -m bot``: serve, train, eval, migrate, create-agent, chat.

* ``serve`` — apply migrations, start the rasa_sdk action server as a child process (port 5055)
  unless ``HUMANLINE_ACTION_ENDPOINT=none`` or ``HUMANLINE_START_ACTION_SERVER=0``, create a demo
  agent when there is none, load the model and serve the hub; once ``/healthz`` answers 200 a box
  shows the widget and console URLs and the demo account's password (once) (:mod:`bot.banner`).
* ``train`` / ``eval`` — delegate to :func:`bot.training.main` / :func:`bot.evaluation.main`.
* ``migrate`` — only apply the migrations.
* ``create-agent`` — add an agent (password from ``--password`` or a prompt).
* ``chat`` — a terminal customer client over the WebSocket protocol.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import logging
import os
import secrets
import signal
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

from bot.settings import ROOT, Settings


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


def _start_action_server(settings: Settings) -> subprocess.Popen[bytes] | None:
    if settings.action_endpoint is None or os.environ.get("HUMANLINE_START_ACTION_SERVER", "1") == "0":
        return None
    port = urlsplit(settings.action_endpoint).port or 5055
    rasa = Path(sys.executable).parent / "rasa"
    cmd = [str(rasa) if rasa.exists() else "rasa", "run", "actions", "--port", str(port), "--actions", "actions"]
    # rasa_sdk binds 0.0.0.0 unless told otherwise, and its webhook has no authentication: anyone
    # reaching it could act for any visitor. Bind the host of the configured endpoint (loopback
    # by default); a remote action server is the operator's to secure (docs/operations.md).
    host = urlsplit(settings.action_endpoint).hostname or "127.0.0.1"
    env = {**os.environ, "SANIC_HOST": os.environ.get("SANIC_HOST") or host}
    print(f"starting the action server on {env['SANIC_HOST']}:{port}: {' '.join(cmd)}", flush=True)
    return subprocess.Popen(cmd, cwd=ROOT, start_new_session=True, env=env)


def _stop_child(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def _demo_agent(settings: Settings) -> tuple[str, str] | None:
    """Create the demo supervisor on an empty database; its ``(username, password)`` if it did."""
    from bot.services.agents import AgentService
    from bot.services.config import HumanlineConfig
    from bot.store.db import Database

    db = Database(settings.database_url)
    try:
        service = AgentService(db)
        if service.count() == 0:
            password = secrets.token_urlsafe(12)
            queues = list(HumanlineConfig.load(settings.config_path).queues)
            service.create("demo", "Demo Agent", password, queues, "supervisor")
            return "demo", password  # printed once, in the ready banner (bot.banner)
    finally:
        db.dispose()
    return None


def cmd_serve(args: argparse.Namespace) -> int:
    from bot.banner import announce_when_ready
    from bot.brain_pool import BrainPool, make_brain

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = Settings.from_env()
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
    brain = make_brain(model, settings.action_endpoint, settings.database_url, settings.brain_workers)
    if isinstance(brain, BrainPool):
        # The workers import TensorFlow and load the model while this process migrates, imports
        # the hub and starts serving (/healthz is 503 until every worker has loaded).
        brain.start()
    child = None
    try:
        _migrate(settings)
        demo = _demo_agent(settings)
        child = _start_action_server(settings)
        from bot.hub import create_app

        app = create_app(settings, brain=brain)
        print(f"Humanline hub on http://{settings.host}:{settings.port}/  (console: /console, model: {model})",
              flush=True)
        announce_when_ready(settings.host, settings.port, demo)  # the box with URLs and login, once /healthz is 200
        app.run(host=settings.host, port=settings.port, access_log=False)  # SIGINT/SIGTERM stop it gracefully
    finally:
        if isinstance(brain, BrainPool):
            brain.terminate()  # normally already closed by the app's stop listener
        _stop_child(child)
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
    parser = argparse.ArgumentParser(prog="python -m bot", description="Humanline customer-service hub")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("serve", help="migrate, start the action server and the hub").set_defaults(func=cmd_serve)
    sub.add_parser("migrate", help="apply the database migrations").set_defaults(func=cmd_migrate)
    sub.add_parser("train", help="train the Rasa model (bot.training)")
    sub.add_parser("eval", help="evaluate the NLU (bot.evaluation)")
    ca = sub.add_parser("create-agent", help="add an agent account")
    ca.add_argument("--username", required=True)
    ca.add_argument("--display-name", default=None)
    ca.add_argument("--skills", default="general", help="comma-separated queue names")
    ca.add_argument("--supervisor", action="store_true")
    ca.add_argument("--password", default=None, help="default: prompt")
    ca.set_defaults(func=cmd_create_agent)
    chat = sub.add_parser("chat", help="chat with the hub in the terminal")
    chat.add_argument("--url", default="ws://127.0.0.1:8080/ws/chat")
    chat.add_argument("--lang", default=None, choices=["en", "zh-Hans", "zh-Hant"])
    chat.set_defaults(func=cmd_chat)
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
