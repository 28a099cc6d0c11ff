"""The bounded accept pipeline (bot/hub/admission.py): at most N connections in their opening
handshake at once, the rest paused unread, let in oldest first; a served hub still answers."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import websockets

from bot.hub.admission import AdmissionGate, AdmittingProtocol, serve_options
from bot.hub.security import LISTEN_BACKLOG


class Transport:
    def __init__(self) -> None:
        self.paused = False
        self.closing = False

    def pause_reading(self) -> None:
        self.paused = True

    def resume_reading(self) -> None:
        self.paused = False

    def is_closing(self) -> bool:
        return self.closing


async def test_the_gate_admits_n_at_once_and_the_next_in_line_when_one_is_done() -> None:
    gate = AdmissionGate(limit=2, hold_s=60)
    protos = [object() for _ in range(5)]
    transports = [Transport() for _ in protos]
    for p, t in zip(protos, transports, strict=True):
        gate.arrive(p, t)
    assert [t.paused for t in transports] == [False, False, True, True, True]
    assert (gate.admitted, gate.waiting, gate.waited) == (2, 3, 3)
    transports[3].closing = True
    gate.leave(protos[0])  # done with its handshake: the oldest waiting one goes in
    assert [t.paused for t in transports] == [False, False, False, True, True]
    gate.leave(protos[4])  # gone while waiting: never admitted
    gate.leave(protos[1])  # the next is #3, closed meanwhile, then #4, gone: nobody left
    assert (gate.admitted, gate.waiting) == (1, 0)
    gate.leave(protos[1])  # leaving twice changes nothing
    assert gate.admitted == 1


async def test_an_admitted_connection_gives_its_place_back_after_the_hold_time() -> None:
    gate = AdmissionGate(limit=1, hold_s=0.05)
    first, second = Transport(), Transport()
    gate.arrive("a", first)
    gate.arrive("b", second)
    assert second.paused
    deadline = asyncio.get_running_loop().time() + 5
    while second.paused:  # the timer fires: a keep-alive HTTP client cannot hold the gate shut
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.01)
    assert gate.admitted == 1


def test_the_hub_is_served_with_the_gated_protocol_and_a_large_backlog() -> None:
    assert serve_options() == {"protocol": AdmittingProtocol, "backlog": LISTEN_BACKLOG}
    assert LISTEN_BACKLOG >= 2048


async def test_a_burst_of_connections_through_a_small_gate_is_served_in_full(tmp_path: object) -> None:
    """The real protocol behind a gate of 2: 40 customers connecting at once all get welcomed."""
    from pathlib import Path

    from sanic import Sanic

    from bot.hub import create_app
    from tests.hubtools import GreeterBrain, running_hub

    gate = AdmittingProtocol.gate
    AdmittingProtocol.gate = AdmissionGate(limit=2, hold_s=30)
    try:
        with running_hub(Path(str(tmp_path)), GreeterBrain()) as srv:
            app = create_app(srv.settings, brain=GreeterBrain(), db=srv.db)
            Sanic.test_mode = True
            server = await app.create_server(host="127.0.0.1", port=0, return_asyncio_server=True,
                                             access_log=False, protocol=AdmittingProtocol)
            assert server is not None
            await server.startup()
            port = server.server.sockets[0].getsockname()[1]

            async def customer() -> str:
                async with websockets.connect(f"ws://127.0.0.1:{port}/ws/chat", open_timeout=30) as ws:  # type: ignore[attr-defined]
                    await ws.send(json.dumps({"type": "hello"}))
                    while True:
                        frame = json.loads(await asyncio.wait_for(ws.recv(), 30))
                        if frame["type"] in ("welcome", "error"):
                            return str(frame["type"])

            async def until(predicate: Any) -> None:
                for _ in range(500):
                    if predicate():
                        return
                    await asyncio.sleep(0.01)
                g = AdmittingProtocol.gate
                raise AssertionError(f"the gate never got there: admitted {g.admitted}, waiting {g.waiting}, "
                                     f"waited {g.waited}")

            # Two connections that never send their request hold both places (hold_s = 30 s),
            # so the burst has to wait whatever the scheduling: no test that passes by timing.
            holders = [await asyncio.open_connection("127.0.0.1", port) for _ in range(2)]
            await until(lambda: AdmittingProtocol.gate.admitted == 2)
            burst = asyncio.gather(*(customer() for _ in range(40)))
            await until(lambda: AdmittingProtocol.gate.waited > 0)
            for _, writer in holders:  # their places free up: the waiting ones go in, in order
                writer.close()
            answers = await burst
            assert answers == ["welcome"] * 40
            assert AdmittingProtocol.gate.waited > 0  # the gate did make some of them wait
            assert AdmittingProtocol.gate.admitted == 0 or AdmittingProtocol.gate.waiting == 0
            await server.close()
    finally:
        AdmittingProtocol.gate = gate
