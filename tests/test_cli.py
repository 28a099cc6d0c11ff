"""The command line's process management: what `python -m bot serve` starts beside the hub."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

import bot.__main__ as cli
from bot.settings import Settings


class _Recorded:
    def __init__(self, cmd: list[str], **kw: Any) -> None:
        self.cmd, self.kw = cmd, kw


@pytest.fixture
def popen(monkeypatch: pytest.MonkeyPatch) -> list[_Recorded]:
    calls: list[_Recorded] = []

    def fake(cmd: list[str], **kw: Any) -> _Recorded:
        calls.append(_Recorded(cmd, **kw))
        return calls[-1]

    monkeypatch.setattr(cli.subprocess, "Popen", fake)
    monkeypatch.setattr(cli, "_reclaim_port", lambda host, port: None)  # tests/test_faults.py covers it
    monkeypatch.delenv("SANIC_HOST", raising=False)
    monkeypatch.delenv("HUMANLINE_START_ACTION_SERVER", raising=False)
    return calls


def test_the_authenticated_action_server_binds_loopback_with_the_token_in_its_environment(
    popen: list[_Recorded],
) -> None:
    cli._start_action_server(replace(Settings(), action_endpoint="http://127.0.0.1:5077/webhook",
                                     action_token="tok-123"))
    (call,) = popen
    assert call.cmd[1:3] == ["-m", "actions.server"]  # not rasa_sdk's unauthenticated `rasa run actions`
    assert call.cmd[call.cmd.index("--host") + 1] == "127.0.0.1"
    assert call.cmd[call.cmd.index("--port") + 1] == "5077"
    assert call.kw["env"]["HUMANLINE_ACTION_TOKEN"] == "tok-123" and "tok-123" not in call.cmd


def test_the_action_server_binds_the_configured_endpoint_host(popen: list[_Recorded]) -> None:
    cli._start_action_server(replace(Settings(), action_endpoint="http://10.1.2.3:5055/webhook", action_token="t"))
    assert popen[0].cmd[popen[0].cmd.index("--host") + 1] == "10.1.2.3"


def test_no_action_server_without_an_endpoint_and_none_without_a_token(popen: list[_Recorded]) -> None:
    assert cli._start_action_server(replace(Settings(), action_endpoint=None)) is None
    with pytest.raises(ValueError):
        cli._start_action_server(replace(Settings(), action_endpoint="http://127.0.0.1:5055/webhook"))
    assert popen == []


def test_the_action_server_is_tied_to_the_hub(popen: list[_Recorded]) -> None:
    """It gets the parent-death signal and carries its hub's pid (how a later start tells a
    stale one); tests/test_faults.py kills the hub with kill -9 and checks both."""
    import os

    cli._start_action_server(
        replace(Settings(), action_endpoint="http://127.0.0.1:5077/webhook", action_token="t" * 32)
    )
    (call,) = popen
    assert callable(call.kw["preexec_fn"])
    assert call.kw["env"][cli.ACTION_SERVER_OWNER] == str(os.getpid())


def test_a_port_on_another_machine_is_not_taken() -> None:
    assert cli._port_free("192.0.2.1", 5055)  # TEST-NET-1: not an address of this machine


# ---- items 5 and 6: secrets, the demo supervisor, account commands ------------------------------


@pytest.fixture
def sqlite_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    monkeypatch.setenv("DATABASE_URL", url)
    for name in ("HUMANLINE_SECRET", "HUMANLINE_SECRET_FILE", "HUMANLINE_DEMO_AGENT"):
        monkeypatch.delenv(name, raising=False)
    return url


def test_serve_refuses_to_start_without_a_secret_outside_the_sqlite_demo(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://nobody@127.0.0.1:1/none")
    monkeypatch.delenv("HUMANLINE_SECRET", raising=False)
    monkeypatch.delenv("HUMANLINE_SECRET_FILE", raising=False)
    assert cli.main(["serve"]) == 2
    assert "HUMANLINE_SECRET" in capsys.readouterr().err


def test_the_demo_supervisor_is_created_only_for_the_embedded_demo_or_on_request(
    sqlite_env: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from sqlalchemy import func, select

    from bot.services.agents import AgentService
    from bot.store.db import Database
    from bot.store.models import CannedReply

    cli._migrate(Settings.from_env())
    db = Database(sqlite_env)
    monkeypatch.setattr(cli, "_embedded_demo", lambda settings: False)  # as on PostgreSQL
    cli._demo_agent(Settings.from_env())
    assert AgentService(db).count() == 0
    monkeypatch.setenv("HUMANLINE_DEMO_AGENT", "no")
    cli._demo_agent(Settings.from_env(), requested=True)
    assert AgentService(db).count() == 0
    monkeypatch.delenv("HUMANLINE_DEMO_AGENT")
    with db.session() as s:
        assert s.execute(select(func.count(CannedReply.id))).scalar_one() == 0
    cli._demo_agent(Settings.from_env(), requested=True)  # `serve --demo-agent`
    assert [a.role for a in AgentService(db).all()] == ["supervisor"]
    with db.session() as s:  # with a few canned replies in every language
        langs = set(s.execute(select(CannedReply.lang)).scalars())
    assert langs == {"en", "zh-Hans", "zh-Hant"}
    monkeypatch.undo()
    assert cli._embedded_demo(replace(Settings(), database_url="sqlite:///x.db"))
    assert not cli._embedded_demo(replace(Settings(), database_url="postgresql://h/db"))
    db.dispose()


def test_disable_reset_password_and_rotate_tokens(sqlite_env: str, capsys: pytest.CaptureFixture[str]) -> None:
    from bot.services.agents import AgentService
    from bot.services.conversations import ConversationService
    from bot.services.credentials import VisitorCredentials
    from bot.store.db import Database

    assert cli.main(["create-agent", "--username", "alice", "--password", "password-123"]) == 0
    db = Database(sqlite_env)
    agents = AgentService(db)
    token = agents.login("alice", "password-123")
    assert token is not None and agents.authenticate(token[0]) is not None
    assert cli.main(["disable-agent", "--username", "alice"]) == 0
    assert agents.authenticate(token[0]) is None and agents.login("alice", "password-123") is None
    assert cli.main(["enable-agent", "--username", "alice"]) == 0
    token = agents.login("alice", "password-123")
    assert token is not None
    assert cli.main(["reset-password", "--username", "alice", "--password", "another-pass-1"]) == 0
    assert agents.authenticate(token[0]) is None and agents.login("alice", "password-123") is None
    token = agents.login("alice", "another-pass-1")
    assert token is not None
    assert cli.main(["rotate-tokens", "--all-agents"]) == 0
    assert agents.authenticate(token[0]) is None
    visitor = ConversationService(db).create_visitor("en")
    assert VisitorCredentials(db).accepts(visitor, 10**13)
    assert cli.main(["rotate-tokens", "--visitor", visitor]) == 0
    assert not VisitorCredentials(db).accepts(visitor, 1)
    assert cli.main(["rotate-tokens", "--visitor", "nobody"]) == 2
    assert cli.main(["disable-agent", "--username", "nobody"]) == 2
    assert cli.main(["rotate-tokens"]) == 2
    capsys.readouterr()
    assert cli.main(["secret"]) == 0
    assert len(capsys.readouterr().out.strip()) == 64
    db.dispose()


def test_serve_refuses_an_unsigned_webhook(
    sqlite_env: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("HUMANLINE_WEBHOOK_URL", "https://hooks.example.com/humanline")
    monkeypatch.delenv("HUMANLINE_WEBHOOK_SECRET", raising=False)
    assert cli.main(["serve"]) == 2
    assert "HUMANLINE_WEBHOOK_SECRET" in capsys.readouterr().err
