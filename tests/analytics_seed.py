"""Thirty days of plausible traffic for the analytics page (its browser test and screenshot),
written through the real services at fixed clocks — deterministic for one ``now``.

Every handoff ends (resolved) and every conversation is closed, so a hub started on the seeded
database has nothing to assign or time out.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta

from bot.services import conversations as conversations_module
from bot.services.agents import AgentService
from bot.services.cases import CaseService
from bot.services.config import HumanlineConfig
from bot.services.conversations import ConversationService
from bot.store.db import Database
from tests.conftest import FakeClock

REASONS = (("customer_request", 6), ("frustration", 3), ("turn_budget", 2), ("repeated_fallback", 2),
           ("action_request", 2), ("danger", 1), ("brain_error", 1))
QUEUES = (("general", 5), ("finance_compliance", 3), ("account_services", 2), ("service_supervision", 2),
          ("data_protection", 1))
CATEGORIES = ("billing", "refund", "service", "plan_change", "privacy")


@contextmanager
def frozen(clock: FakeClock) -> Iterator[None]:
    """The conversation service reads its time from ``clock`` inside the block."""
    real = conversations_module.utcnow
    conversations_module.utcnow = clock  # type: ignore[assignment]
    try:
        yield
    finally:
        conversations_module.utcnow = real  # type: ignore[assignment]


def _pick(rng: random.Random, weighted: tuple[tuple[str, int], ...]) -> str:
    return rng.choices([w[0] for w in weighted], [w[1] for w in weighted])[0]


def seed_month(db: Database, now: datetime, agent_names: tuple[str, ...] = ("alice",), days: int = 30) -> None:
    """Traffic on each of the ``days`` UTC days before the day of ``now`` (nothing today)."""
    rng = random.Random(16)
    config = HumanlineConfig.load()
    clock = FakeClock(now)
    convs = ConversationService(db)
    cases = CaseService(db, config, clock=clock)
    agents = AgentService(db)
    ids = [a.id for a in agents.all() if a.username in agent_names]
    for name in ("bob", "carol"):
        ids.append(agents.create(name, name.title() + " Demo", "password-123", ["general"]).id)
    today = datetime(now.year, now.month, now.day, tzinfo=now.tzinfo)
    with frozen(clock):
        for back in range(days, 0, -1):
            day = today - timedelta(days=back)
            busy = 1.0 + 0.5 * (back % 7 in (1, 2))           # two busy days a week
            for _ in range(int(rng.randint(8, 14) * busy)):
                t = day + timedelta(minutes=rng.randint(8 * 60, 20 * 60))
                clock.set(t)
                cid = convs.create_conversation(convs.create_visitor("en"), lang="en").id
                convs.append(cid, "customer", "hello")
                if rng.random() < 0.62:                       # the bot handles it alone
                    continue
                convs.queue(cid, _pick(rng, QUEUES), _pick(rng, REASONS))
                agent = rng.choice(ids)
                t += timedelta(seconds=rng.randint(20, int(240 * busy)))
                clock.set(t)
                convs.assign(cid, agent)
                t += timedelta(seconds=rng.randint(15, 200))
                clock.set(t)
                convs.append(cid, "agent", "Hello, I can help.", agent_id=agent)
                convs.mark_agent_reply(cid)
                clock.set(t + timedelta(minutes=rng.randint(10, int(150 * busy))))
                convs.release(cid, agent, "closed", "resolved")
            for _ in range(rng.randint(1, 3)):
                t = day + timedelta(minutes=rng.randint(8 * 60, 18 * 60))
                clock.set(t)
                visitor = convs.create_visitor("en")
                number = cases.open_case(rng.choice(CATEGORIES), visitor_id=visitor, description="demo").number
                steps = [(timedelta(minutes=rng.randint(3, 14)), "verifying"),
                         (timedelta(hours=rng.randint(18, 30)), "resolved")]
                done = True
                for delay, stage in steps:
                    t += delay
                    if t >= now:
                        done = False
                        break
                    clock.set(t)
                    cases.advance(number, stage, "agent:alice")
                t += timedelta(hours=rng.randint(1, 20))
                if done and t < now and rng.random() < 0.8:
                    clock.set(t)
                    cases.rate(number, visitor, rng.choices([2, 3, 4, 5], [1, 2, 4, 4])[0])
    clock.set(now)
