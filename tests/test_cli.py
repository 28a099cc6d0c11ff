"""The command line's process management: what `python -m bot serve` starts beside the hub."""

from __future__ import annotations

from dataclasses import replace
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


def test_the_action_server_binds_loopback_not_every_interface(popen: list[_Recorded]) -> None:
    cli._start_action_server(replace(Settings(), action_endpoint="http://127.0.0.1:5077/webhook"))
    (call,) = popen
    assert call.kw["env"]["SANIC_HOST"] == "127.0.0.1"
    assert call.cmd[call.cmd.index("--port") + 1] == "5077"


def test_the_action_server_binds_the_configured_endpoint_host(popen: list[_Recorded]) -> None:
    cli._start_action_server(replace(Settings(), action_endpoint="http://10.1.2.3:5055/webhook"))
    assert popen[0].kw["env"]["SANIC_HOST"] == "10.1.2.3"


def test_no_action_server_without_an_endpoint(popen: list[_Recorded]) -> None:
    assert cli._start_action_server(replace(Settings(), action_endpoint=None)) is None
    assert popen == []


def test_the_action_server_is_tied_to_the_hub(popen: list[_Recorded]) -> None:
    """It gets the parent-death signal and carries its hub's pid (how a later start tells a
    stale one); tests/test_faults.py kills the hub with kill -9 and checks both."""
    import os

    cli._start_action_server(replace(Settings(), action_endpoint="http://127.0.0.1:5077/webhook"))
    (call,) = popen
    assert callable(call.kw["preexec_fn"])
    assert call.kw["env"][cli.ACTION_SERVER_OWNER] == str(os.getpid())


def test_a_port_on_another_machine_is_not_taken() -> None:
    assert cli._port_free("192.0.2.1", 5055)  # TEST-NET-1: not an address of this machine
