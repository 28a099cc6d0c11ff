"""Periodic work of a hub: delivering the notification outbox, recording SLA breaches and
sending the follow-ups of resolved cases when they come due; resuming turns left pending by a
crash or a database outage (:func:`run_turn_recovery`).

Both are idempotent and safe to run in several hub processes at once: delivery claims rows with
``SKIP LOCKED`` on PostgreSQL (one transaction per row), and a breach is recorded once per
clock and due time (:meth:`bot.services.cases.CaseService.check_breaches`), a follow-up once per
scheduled time (:meth:`~bot.services.cases.CaseService.send_due_follow_ups`).
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from bot.services.cases import CaseService
from bot.services.notifications import LoggingSender, Sender, WebhookSender, deliver_pending
from bot.settings import Settings
from bot.store.db import Database

if TYPE_CHECKING:
    from bot.hub.core import Hub

logger = logging.getLogger(__name__)


def sender_for(settings: Settings) -> Sender:
    """The webhook sender (signing with ``HUMANLINE_WEBHOOK_SECRET``) when ``HUMANLINE_WEBHOOK_URL``
    is set, else the logging sender (redacted unless ``HUMANLINE_LOG_PERSONAL_DATA``)."""
    if settings.webhook_url:
        return WebhookSender(settings.webhook_url, secret=settings.webhook_secret)
    return LoggingSender(personal_data=settings.log_personal_data)


async def run_maintenance(db: Database, cases: CaseService, settings: Settings, sender: Sender | None = None) -> None:
    """Forever: deliver pending notifications every ``outbox_interval_s``; check SLA clocks and
    due follow-ups every ``sla_check_interval_s``. Cancel the task to stop it."""
    sender = sender or sender_for(settings)
    loop = asyncio.get_running_loop()
    next_sla = loop.time()
    while True:
        try:
            await asyncio.to_thread(deliver_pending, db, sender)
            if loop.time() >= next_sla:
                breaches = await asyncio.to_thread(cases.check_breaches)
                if breaches:
                    logger.warning("%d new SLA breach(es) recorded", len(breaches))
                followed = await asyncio.to_thread(cases.send_due_follow_ups)
                if followed:
                    logger.info("follow-up sent for %s", ", ".join(followed))
                next_sla = loop.time() + settings.sla_check_interval_s
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - the next round tries again
            logger.exception("maintenance round failed")
        await asyncio.sleep(settings.outbox_interval_s)


async def run_turn_recovery(hub: Hub, interval_s: float) -> None:
    """Forever: resume the turns a crash or a database outage left pending, and retry the
    fail-safe handoffs the database refused (:meth:`bot.hub.core.Hub.resume_pending_turns`).

    The first round once the brain is ready (after a restart, when the model has loaded) takes
    every pending turn (those of this hub's previous run) — unless several hubs share the
    database (``REDIS_URL``): then it too takes only the overdue ones; later rounds, every ``interval_s``,
    only those pending for more than ``settings.turn_retry_after_s`` (a turn in flight on
    another hub is not taken). A round the database refuses is tried again at the next one.
    Cancel the task to stop it.
    """
    # With several hubs (REDIS_URL), a pending turn at start-up may be in flight on another hub,
    # not left over from this one: even the first round waits for it to be overdue.
    older_than = 0.0 if hub.settings.redis_url is None else hub.settings.turn_retry_after_s
    failing = False
    while True:
        try:
            if await hub.resume_pending_turns(older_than) is not None:
                older_than = hub.settings.turn_retry_after_s
            if failing:
                logger.info("turn recovery works again")
            failing = False
        except asyncio.CancelledError:
            raise
        except Exception as e:  # noqa: BLE001 - the database may be away: next round
            if not failing:
                logger.warning("turn recovery round failed (retrying every %.1f s): %s", interval_s, e)
            failing = True
        await asyncio.sleep(interval_s)
