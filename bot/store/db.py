"""The database: engine, sessions and migrations.

:class:`Database` is the single entry point to persistence. It accepts any SQLAlchemy URL;
Humanline is tested on SQLite (the embedded default) and PostgreSQL. Sessions follow
SQLAlchemy's 2.0 style (``future=True``): use :meth:`Database.session` as a context manager,
which commits on success and rolls back on any exception, so a failure never leaves
half-written rows.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import zlib
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, event, exc, text
from sqlalchemy.engine import Engine
from sqlalchemy.engine.url import URL, make_url
from sqlalchemy.orm import Session, sessionmaker

from bot.settings import DEFAULT_DATABASE_URL

logger = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
DEFAULT_URL = DEFAULT_DATABASE_URL


class FairRLock:
    """A reentrant lock that serves waiters in arrival order.

    :class:`threading.RLock` lets the thread that releases it take it again at once: a thread
    running transaction after transaction (a reconnect storm's hellos) kept another thread (a
    customer's turn) waiting for seconds, though each transaction was milliseconds long. Here a
    release hands the lock to the longest waiter directly, so nobody can take it out of turn.
    """

    def __init__(self) -> None:
        self._mutex = threading.Lock()
        self._owner: int | None = None
        self._count = 0
        self._waiters: deque[tuple[threading.Lock, int]] = deque()

    def acquire(self) -> bool:
        me = threading.get_ident()
        with self._mutex:
            if self._owner == me:
                self._count += 1
                return True
            if self._owner is None:
                self._owner, self._count = me, 1
                return True
            gate = threading.Lock()
            gate.acquire()
            self._waiters.append((gate, me))
        gate.acquire()  # released by the thread that hands the lock over (owner already set to us)
        return True

    def release(self) -> None:
        with self._mutex:
            if self._owner != threading.get_ident():
                raise RuntimeError("cannot release a lock held by another thread")
            self._count -= 1
            if self._count:
                return
            if self._waiters:
                gate, ident = self._waiters.popleft()
                self._owner, self._count = ident, 1
                gate.release()
            else:
                self._owner = None

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()

    def waiting(self) -> int:
        """Threads queued for the lock."""
        return len(self._waiters)


_SQLITE_LOCKS: dict[str, FairRLock] = {}
_SQLITE_LOCKS_GUARD = threading.Lock()


def sqlite_lock(path: str | None) -> FairRLock | None:
    """The in-process lock of one SQLite file (``None`` for in-memory databases).

    SQLite has one writer at a time; writers that collide wait in its busy handler, which sleeps
    in steps of up to 100 ms. Taking this lock around each transaction queues them in the process
    instead (the hub's store and the brain's tracker store share it when they share the file),
    first come first served (:class:`FairRLock`).
    """
    if not path or path == ":memory:" or path.startswith("file:"):
        return None
    key = os.path.realpath(path)
    with _SQLITE_LOCKS_GUARD:
        lock = _SQLITE_LOCKS.get(key)
        if lock is None:
            lock = _SQLITE_LOCKS[key] = FairRLock()
        return lock


class DatabaseUnavailable(RuntimeError):
    """The database cannot be reached or answered with an error."""


#: first half of the two-int advisory lock key: "Humanline conversation"
LOCK_NAMESPACE = 0x484C


class ConversationLock:
    """A held conversation lock (see :meth:`Database.try_conversation_lock`)."""

    def __init__(self, conn: Any) -> None:
        self._conn = conn

    def release(self) -> None:
        """End the lock's transaction (which releases it) and return its connection."""
        if self._conn is None:
            return
        conn, self._conn = self._conn, None
        try:
            conn.rollback()
        finally:
            conn.close()


class HubConflict(RuntimeError):
    """Another hub runs on this database in a mode that cannot share it (see
    :meth:`Database.register_hub`)."""


class HubRegistration:
    """This process's claim on the database as a hub (see :meth:`Database.register_hub`), held
    until :meth:`release` or the process's end."""

    def __init__(self, conn: Any, engine: Engine | None) -> None:
        self._conn = conn
        self._engine = engine

    def release(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()  # a session-level advisory lock ends with its connection
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None


#: a pooled PostgreSQL connection idle longer than this (seconds) is pinged before use
PING_IDLE_S = 1.0
#: PostgreSQL connections the conversation-lock pool keeps open
LOCK_POOL_SIZE = 16


class Database:
    """An engine plus a session factory for one database URL.

    :param url: SQLAlchemy URL, e.g. ``sqlite:///humanline.db`` or
        ``postgresql://user@127.0.0.1:5432/test``.
    :param schema: PostgreSQL only: a schema to create and use (``search_path``); tests use a
        fresh schema per run so that parallel runs never collide.
    """

    def __init__(self, url: str = DEFAULT_URL, *, schema: str | None = None, echo: bool = False):
        self.url: URL = make_url(url)
        self.schema = schema
        kwargs: dict[str, Any] = {"future": True, "echo": echo, "pool_pre_ping": True}
        if self.url.get_backend_name() == "sqlite":
            # The hub calls the store from worker threads; SQLite serialises writers itself.
            kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
            if self.url.database and self.url.database != ":memory:":
                # SQLAlchemy 1.4 would open a new connection (and rerun the pragmas) per session.
                from sqlalchemy.pool import QueuePool

                kwargs["poolclass"] = QueuePool
                kwargs["pool_size"] = 8
                kwargs["max_overflow"] = 16
                # A file opened in this process has no server to lose: no ping per transaction.
                kwargs["pool_pre_ping"] = False
        else:
            kwargs["pool_size"] = 10
            kwargs["max_overflow"] = 20
            # Pinged on checkout only after PING_IDLE_S idle (ping_when_idle), not every time.
            kwargs["pool_pre_ping"] = False
        self.engine: Engine = create_engine(self.url, **kwargs)
        if not self.is_sqlite:
            ping_when_idle(self.engine)
        if self.url.get_backend_name() == "sqlite":
            event.listen(self.engine, "connect", _sqlite_pragmas)
        if schema and not self.is_sqlite:
            # insert=True: run before the dialect's first-connect initialisation, so that
            # ``dialect.default_schema_name`` (used by the inspector and Alembic) is this schema.
            event.listen(self.engine, "connect", _search_path(schema), insert=True)
        self._sessions = sessionmaker(bind=self.engine, future=True, expire_on_commit=False)
        self._lock = sqlite_lock(self.url.database) if self.is_sqlite else None
        self._lock_engine: Engine | None = None

    @property
    def is_sqlite(self) -> bool:
        return self.url.get_backend_name() == "sqlite"

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A transaction: commits when the block ends, rolls back if it raises.

        On SQLite, transactions of this process run one at a time (:func:`sqlite_lock`).
        """
        lock = self._lock
        if lock is not None:
            lock.acquire()
        try:
            session = self._sessions()
            try:
                yield session
                session.commit()
            except BaseException:
                session.rollback()
                raise
            finally:
                session.close()
        finally:
            if lock is not None:
                lock.release()

    def register_hub(self, *, shared: bool) -> HubRegistration:
        """Claim this database (PostgreSQL: this schema) for a hub process, for its lifetime.

        A hub without ``REDIS_URL`` is alone by design: it serialises a conversation's turns with
        an in-process lock only (:mod:`bot.hub.locks`) and resumes every pending turn when it
        starts. A second hub on the same database would run turns of one conversation at once.
        So a lone hub (``shared=False``) takes an exclusive session-level advisory lock and hubs
        that share the database through Redis (``shared=True``) take it shared: a lone hub and
        any other hub exclude each other, and :class:`HubConflict` says so at start instead of a
        silent double turn. A hub killed with ``kill -9`` loses its connection, and PostgreSQL
        releases the lock at once. SQLite serves one process: nothing to claim.
        """
        if self.is_sqlite:
            return HubRegistration(None, None)
        from sqlalchemy.pool import NullPool

        engine = create_engine(self.url, future=True, poolclass=NullPool)
        conn = engine.connect()
        key = zlib.crc32((self.schema or "").encode()) - 2**31
        fn = "pg_try_advisory_lock_shared" if shared else "pg_try_advisory_lock"
        try:
            got = conn.execute(text(f"SELECT {fn}(:ns, :key)"), {"ns": LOCK_NAMESPACE + 2, "key": key}).scalar_one()
            conn.commit()  # the session-level lock outlives the transaction
        except BaseException:
            conn.close()
            engine.dispose()
            raise
        if not got:
            conn.close()
            engine.dispose()
            if shared:
                raise HubConflict("a hub without REDIS_URL is running on this database; stop it, or give every "
                                  "hub the same REDIS_URL (docs/deploy.md)")
            raise HubConflict("another hub is running on this database; several hubs need REDIS_URL (the same "
                              "Redis for all of them: docs/deploy.md), or stop the other one")
        return HubRegistration(conn, engine)

    def try_conversation_lock(self, conversation_id: str) -> ConversationLock | None:
        """PostgreSQL: take the conversation's advisory lock without waiting
        (``pg_try_advisory_xact_lock``, held by a transaction on a connection of its own until
        :meth:`ConversationLock.release`, or until that connection dies with its hub); ``None``
        when another transaction — of this or another hub — holds it. Several hubs sharing the
        database thus run one turn (or agent transition) of a conversation at a time. SQLite
        (one process) needs no lock: a handle that holds nothing.
        """
        if self.is_sqlite:
            return ConversationLock(None)
        if self._lock_engine is None:
            # Locks hold a connection for a whole turn: their own pool, off the store's.
            # 16 kept open: at tens of concurrent turns a pool of 4 opened (and closed) a new
            # PostgreSQL connection for most turns; the cap (64) is unchanged.
            self._lock_engine = create_engine(self.url, future=True, pool_size=LOCK_POOL_SIZE,
                                              max_overflow=64 - LOCK_POOL_SIZE, pool_timeout=10)
            ping_when_idle(self._lock_engine)
        conn = self._lock_engine.connect()
        try:
            key = zlib.crc32(conversation_id.encode()) - 2**31  # a signed int4
            got = conn.execute(text("SELECT pg_try_advisory_xact_lock(:ns, :key)"),
                               {"ns": LOCK_NAMESPACE, "key": key}).scalar_one()
        except BaseException:
            conn.close()
            raise
        if not got:
            conn.rollback()
            conn.close()
            return None
        return ConversationLock(conn)

    @contextmanager
    def read_session(self) -> Iterator[Session]:
        """A session for reads only: what it reads is committed data; it never commits (anything
        written in it is rolled back).

        On SQLite it does not take the process's writer lock (:func:`sqlite_lock`): in WAL mode
        readers neither wait for the writer nor block it. Each pooled connection serves one
        thread at a time. Elsewhere (no writer lock there) it is :meth:`session` ending in a
        rollback.
        """
        session = self._sessions()
        try:
            yield session
        finally:
            session.rollback()
            session.close()

    def ping(self) -> bool:
        """True when the database answers a trivial query."""
        try:
            with self.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
            return True
        except Exception:  # noqa: BLE001 - any failure means "not reachable"
            logger.warning("database ping failed", exc_info=True)
            return False

    def migrate(self) -> None:
        """Create the schema (if asked) and apply every Alembic migration not yet applied."""
        from alembic import command
        from alembic.config import Config

        if self.schema and not self.is_sqlite:
            with self.engine.begin() as conn:
                conn.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{self.schema}"'))
        cfg = Config()
        cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
        with self.engine.begin() as conn:
            if not self.is_sqlite:
                # Several hubs starting together on a new database: one migrates, the others
                # wait for it and then find nothing to do.
                conn.execute(text("SELECT pg_advisory_xact_lock(:ns, 0)"), {"ns": LOCK_NAMESPACE + 1})
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")

    def stored_secret(self, name: str) -> str:
        """The secret ``name`` kept in the ``hub_secrets`` table, generated on first use.

        Concurrent first calls (several hubs starting together) agree: the row is inserted only
        if absent and then read back, so every caller gets the value that won.
        """
        import secrets as _secrets

        from bot.store.models import HubSecret, utcnow

        with self.session() as s:
            insert_unless_present(s, HubSecret, {"name": name, "value": _secrets.token_hex(32), "created_at": utcnow()})
        with self.session() as s:
            return str(s.get(HubSecret, name).value)

    def drop_schema(self) -> None:
        """PostgreSQL test helper: drop this database's schema and everything in it."""
        if self.schema and not self.is_sqlite:
            with self.engine.begin() as conn:
                conn.execute(text(f'DROP SCHEMA IF EXISTS "{self.schema}" CASCADE'))

    def dispose(self) -> None:
        self.engine.dispose()
        if self._lock_engine is not None:
            self._lock_engine.dispose()


def insert_unless_present(session: Session, model: Any, values: dict[str, Any]) -> None:
    """``INSERT … ON CONFLICT DO NOTHING`` of one row of ``model`` in ``session``'s transaction:
    concurrent callers inserting the same key do not fail, and the first row stays."""
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        from sqlalchemy.dialects import postgresql

        session.execute(postgresql.insert(model).values(**values).on_conflict_do_nothing())
    elif dialect == "sqlite":
        from sqlalchemy.dialects import sqlite

        session.execute(sqlite.insert(model).values(**values).on_conflict_do_nothing())
    else:  # pragma: no cover - other backends: check, then insert (a race is retried by the caller)
        key = [values[c.name] for c in model.__table__.primary_key.columns]
        if session.get(model, key[0] if len(key) == 1 else tuple(key)) is None:
            session.add(model(**values))
            session.flush()


def ping_when_idle(engine: Engine, idle_s: float | None = None) -> None:
    """Check a pooled connection with ``SELECT 1`` on checkout only when it sat idle for more
    than ``idle_s`` (default :data:`PING_IDLE_S`); a dead one is replaced, as with
    ``pool_pre_ping``.

    Why not ``pool_pre_ping``: it pings on every checkout — a round trip (and ~10 % of the
    hub's database time on PostgreSQL) before each of the four or five transactions of a turn.
    A connection in steady use has just shown it works; one that sat idle (through a database
    restart, say) is checked as before. A disconnect met mid-use still invalidates the whole
    pool, so the connections that were idle with it are replaced too.
    """
    limit = PING_IDLE_S if idle_s is None else idle_s

    @event.listens_for(engine, "connect")
    def _fresh(_dbapi_conn: Any, record: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkin")
    def _returned(_dbapi_conn: Any, record: Any) -> None:
        if record is not None:
            record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _check(dbapi_conn: Any, record: Any, _proxy: Any) -> None:
        since = record.info.get("idle_since")
        if since is not None and time.monotonic() - since <= limit:
            return
        try:
            cursor = dbapi_conn.cursor()
            try:
                cursor.execute("SELECT 1")
            finally:
                cursor.close()
            dbapi_conn.rollback()
        except Exception as error:  # noqa: BLE001 - any failure: the pool tries another connection
            raise exc.DisconnectionError(f"stale pooled connection: {error}") from error
        record.info["idle_since"] = time.monotonic()


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()


def _search_path(schema: str) -> Any:
    """A connect listener that sets the PostgreSQL ``search_path`` to ``schema`` for good.

    The ``SET`` runs in autocommit mode: inside psycopg2's implicit transaction it would be undone
    by the first rollback (e.g. a read-only session closing), and the pooled connection would
    silently fall back to ``public``. A missing schema is created first, so that the dialect's
    first-connect probe (``current_schema()``) already sees it.
    """

    def set_path(dbapi_conn: Any, _record: Any) -> None:
        autocommit = dbapi_conn.autocommit
        dbapi_conn.autocommit = True
        try:
            cur = dbapi_conn.cursor()
            cur.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (schema,))
            if cur.fetchone() is None:
                cur.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
            cur.execute(f'SET SESSION search_path TO "{schema}"')
            cur.close()
        finally:
            dbapi_conn.autocommit = autocommit

    return set_path
