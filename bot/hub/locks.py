"""One turn at a time per conversation: in this hub and across hubs (issue #15).

:class:`ConversationLocks` gives the hub its ``async with hub.lock(conversation_id)``: the
conversation's :class:`asyncio.Lock` in this process, then — on PostgreSQL — the conversation's
advisory lock (:meth:`bot.store.db.Database.try_conversation_lock`, a ``pg_try_advisory_xact_lock``
held by a transaction of its own for the whole block). Several hubs sharing the database thus
run one turn, or one agent transition, of a conversation at a time; a hub killed while holding
it loses its connection, and PostgreSQL releases the lock at once.

The database lock is taken only when hubs can share the database: on PostgreSQL with
``REDIS_URL`` set (``shared``). Without Redis a hub is alone by design (docs/architecture.md; it
even resumes every pending turn at start, :func:`bot.hub.maintenance.run_turn_recovery`), so the
asyncio lock is the whole story there too, and a turn saves the lock's connection and its three
round trips (at 50 concurrent conversations most turns also opened that connection anew).

The database lock is taken without waiting and retried with a short sleep, never by a blocking
call in a worker thread: a thread blocked on a lock held by a turn that itself needs worker
threads to finish could starve the pool.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from bot.store.db import Database

#: how long to sleep between two attempts at a lock another hub holds
RETRY_S = (0.005, 0.01, 0.02, 0.05)


class ConversationLocks:
    def __init__(self, db: Database, shared: bool = True) -> None:
        self.db = db
        #: other hubs may run turns on this database: take its advisory lock too
        self.shared = shared and not db.is_sqlite
        self._local: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()

    def local(self, conversation_id: str) -> asyncio.Lock:
        lock = self._local.get(conversation_id)
        if lock is None:
            lock = asyncio.Lock()
            self._local[conversation_id] = lock
        return lock

    @asynccontextmanager
    async def __call__(self, conversation_id: str) -> AsyncIterator[None]:
        async with self.local(conversation_id):
            if not self.shared:  # one process: the asyncio lock is the whole story
                yield
                return
            attempt = 0
            while True:
                held = await asyncio.to_thread(self.db.try_conversation_lock, conversation_id)
                if held is not None:
                    break
                await asyncio.sleep(RETRY_S[min(attempt, len(RETRY_S) - 1)])
                attempt += 1
            try:
                yield
            finally:
                await asyncio.to_thread(held.release)
