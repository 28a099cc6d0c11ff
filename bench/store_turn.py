"""The store's share of one bot turn, in isolation: CPU milliseconds and transactions.

``python -m bench.store_turn [--turns 2000] [--url sqlite:///…]`` runs the hub's store calls of
a customer turn answered by the bot, one thread, no brain, no sockets, in two ways:

* ``separate``: as the hub did before (store the message; read the conversation and its guard
  state; ``finish_turn``; store the reply; ``turn_done``) — five sessions;
* ``folded``: as it does now (store the message; read; ``finish_bot_turn``, which also stores the
  reply and clears the pending mark) — three sessions (the read without the writer lock).

CPU time is the thread's (``time.thread_time``); it still grows when the machine is busy
(shared caches and cores), so the two ways alternate, ``--rounds`` times. Prints one line per run.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

from sqlalchemy import event

from bot.guard import GuardConfig, HandoffGuard, TurnOutcome
from bot.services.conversations import ConversationService
from bot.store.db import Database


def run(db: Database, way: str, turns: int) -> tuple[float, float]:
    """CPU ms per turn and sessions (pooled connection checkouts: transactions and reads) per turn."""
    conversations = ConversationService(db)
    guard = HandoffGuard(GuardConfig())
    commits = 0

    def count(*_args: Any) -> None:
        nonlocal commits
        commits += 1

    event.listen(db.engine.pool, "checkout", count)
    # One turn per conversation: the guard sees no repetition and hands nothing off.
    cids = [conversations.create_conversation(conversations.create_visitor()).id for _ in range(turns)]
    commits = 0
    started = time.thread_time()
    for i in range(turns):
        cid = cids[i % len(cids)]
        outcome = TurnOutcome(intent="greet", confidence=0.9, replies=(f"Hello, number {i}!",), resolved=True,
                              handoff_requested=False, handoff_queue=None, error=None)
        message = conversations.append(cid, "customer", "hello", client_msg_id=f"m{i}", awaiting_turn=True)
        assert message is not None
        got = conversations.get_with_guard_state(cid)
        assert got is not None
        if way == "separate":
            decision = conversations.finish_turn(cid, lambda s, o=outcome: guard.after_turn(s, o),
                                                 message.message.seq, "greet", 0.9)
            assert decision.deliver
            for text in decision.deliver:
                conversations.append(cid, "bot", text, only_if_status="bot")
            conversations.turn_done(cid, message.message.seq)
        else:
            finished = conversations.finish_bot_turn(cid, lambda s, o=outcome: guard.after_turn(s, o),
                                                     message.message.seq, "greet", 0.9,
                                                     lambda d: [(text, None) for text in d.deliver])
            assert finished.stored and not finished.dropped
    cpu = time.thread_time() - started
    event.remove(db.engine.pool, "checkout", count)
    return cpu * 1000 / turns, commits / turns


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.store_turn")
    parser.add_argument("--turns", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--url", help="database URL (default: a new SQLite file)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        db = Database(args.url or f"sqlite:///{Path(tmp) / 'store.db'}")
        db.migrate()
        try:
            for way in ("separate", "folded") * args.rounds:
                ms, tx = run(db, way, args.turns)
                print(f"STORE way={way} cpu_ms_per_turn={ms:.2f} sessions_per_turn={tx:.1f}")
        finally:
            db.dispose()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
