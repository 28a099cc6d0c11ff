"""The store: migrations create every table, run idempotently, match the models; sessions roll back."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import func, inspect, select, text, update

from bot.store.db import Database
from bot.store.models import Base, CaseCounter, Visitor

TABLES = {
    "visitors",
    "conversations",
    "messages",
    "cases",
    "case_events",
    "case_counters",
    "queues",
    "agents",
    "agent_tokens",
    "handoffs",
    "outbox",
    "audit_log",
    "plan_changes",
    "hub_secrets",
    "canned_replies",
    "hub_outbox",
}


def _tables(db: Database) -> set[str]:
    with db.engine.connect() as conn:
        return set(inspect(conn).get_table_names())


def _revision(db: Database) -> list[str]:
    with db.engine.connect() as conn:
        return [r[0] for r in conn.execute(text("SELECT version_num FROM alembic_version"))]


def test_upgrade_on_empty_database_creates_all_16_tables(db: Database) -> None:
    assert len(TABLES) == 16
    assert _tables(db) - {"alembic_version"} == TABLES
    assert set(Base.metadata.tables) == TABLES
    assert _revision(db) == [_head()]


def _head() -> str:
    """The one head of the migration chain (several heads would fail here)."""
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    from bot.store.db import MIGRATIONS_DIR

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    head = ScriptDirectory.from_config(cfg).get_current_head()
    assert head is not None
    return head


def test_migrate_twice_is_a_noop(db: Database) -> None:
    with db.session() as s:
        s.add(CaseCounter(day="20261104", value=7))
    before = (_tables(db), _revision(db))
    db.migrate()
    assert (_tables(db), _revision(db)) == before
    with db.session() as s:
        assert s.execute(select(CaseCounter.value)).scalar_one() == 7


def test_migration_matches_the_models(db: Database) -> None:
    with db.engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        diff = compare_metadata(context, Base.metadata)
    assert diff == []


def test_session_rolls_back_everything_on_error(db: Database) -> None:
    with pytest.raises(RuntimeError), db.session() as s:
        s.add(Visitor(id="a" * 32))
        s.flush()
        raise RuntimeError("boom")
    with db.session() as s:
        assert s.execute(select(func.count()).select_from(Visitor)).scalar_one() == 0


def test_a_read_session_sees_committed_data_and_does_not_wait_for_a_writer(db: Database) -> None:
    """``read_session`` (the turn path's reads): while another thread's transaction has written
    and not committed — holding SQLite's per-process writer lock, or PostgreSQL's row lock — a
    read neither waits for it nor sees its write; after the commit it does. What a read session
    writes is rolled back."""
    import threading

    with db.session() as s:
        s.add(Visitor(id="v" * 32, lang="en"))
    written, release = threading.Event(), threading.Event()

    def writer() -> None:
        with db.session() as s:
            s.execute(update(Visitor).where(Visitor.id == "v" * 32).values(lang="zh-Hans"))
            written.set()
            assert release.wait(30)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        assert written.wait(30)
        seen: list[str | None] = []

        def read() -> None:
            with db.read_session() as s:
                seen.append(s.execute(select(Visitor.lang)).scalar_one())

        reader = threading.Thread(target=read)
        reader.start()
        reader.join(10)
        assert not reader.is_alive(), "the read waited for the writer"
        assert seen == ["en"]
    finally:
        release.set()
        thread.join(30)
    with db.read_session() as s:
        assert s.execute(select(Visitor.lang)).scalar_one() == "zh-Hans"
        s.add(Visitor(id="w" * 32))
        s.flush()
    with db.read_session() as s:
        assert s.execute(select(func.count()).select_from(Visitor)).scalar_one() == 1


@pytest.mark.postgres
def test_postgres_schema_survives_a_rollback(postgres_url: str) -> None:
    """Regression: the search_path set on connect must not be undone by the first rollback."""
    import uuid

    db = Database(postgres_url, schema=f"t_{uuid.uuid4().hex[:12]}")
    try:
        db.migrate()
        for _ in range(3):
            with db.engine.connect() as conn:  # ends in a rollback
                assert conn.execute(text("SELECT current_schema()")).scalar_one() == db.schema
        with db.session() as s:
            s.add(Visitor(id="b" * 32))
        with db.engine.connect() as conn:
            where = conn.execute(
                text("SELECT table_schema FROM information_schema.tables WHERE table_name = 'visitors'")
            ).scalars()
            assert db.schema in set(where)
            assert conn.execute(text("SELECT count(*) FROM visitors")).scalar_one() == 1
        assert db.engine.dialect.default_schema_name == db.schema
    finally:
        db.drop_schema()
        db.dispose()


def test_sqlite_file_database_default_url_shape(tmp_path) -> None:  # type: ignore[no-untyped-def]
    db = Database(f"sqlite:///{tmp_path / 'x.db'}")
    try:
        assert db.is_sqlite
        assert db.ping()
        db.migrate()
        assert _tables(db) >= TABLES
    finally:
        db.dispose()


def test_the_queue_catalogue_is_mirrored_into_the_queues_table(db: Database) -> None:
    from dataclasses import replace

    from bot.services.config import HumanlineConfig
    from bot.services.queues import QueueService
    from bot.store.models import Queue

    config = HumanlineConfig.load()
    QueueService(db, config).sync_catalogue()
    with db.session() as s:
        rows = {q.name: q for q in s.execute(select(Queue)).scalars()}
    assert set(rows) == set(config.queues)
    finance = config.queues["finance_compliance"]
    assert rows["finance_compliance"].display == dict(finance.display)
    # A changed target is updated in place on the next start, not duplicated.
    faster = replace(finance, first_response_minutes=42)
    changed = replace(config, queues={**config.queues, "finance_compliance": faster})
    QueueService(db, changed).sync_catalogue()
    with db.session() as s:
        again = {q.name: q.first_response_minutes for q in s.execute(select(Queue)).scalars()}
    assert again["finance_compliance"] == 42 and len(again) == len(config.queues)


def test_a_generated_secret_is_kept_and_shared(db: Database) -> None:
    first = db.stored_secret("visitor_token")
    assert len(first) == 64
    assert db.stored_secret("visitor_token") == first  # the same after a "restart"
    assert db.stored_secret("other") != first


def test_a_hub_without_a_configured_secret_uses_the_stored_one_only_on_sqlite(db: Database) -> None:
    """The embedded SQLite demo keeps its generated key; any other database refuses to start
    without a configured one (a backup must not be enough to forge visitors: docs/security.md)."""
    from dataclasses import replace

    from sanic import Sanic

    from bot.hub import create_app
    from bot.hub.app import MissingSecret
    from bot.settings import Settings

    Sanic.test_mode = True
    settings = replace(Settings(), secret="", database_url=str(db.url), action_endpoint=None)
    if not db.is_sqlite:
        with pytest.raises(MissingSecret):
            create_app(settings, brain=None, db=db)
        return
    one = create_app(settings, brain=None, db=db).ctx.hub.settings.secret
    two = create_app(settings, brain=None, db=db).ctx.hub.settings.secret
    assert one and one == two == db.stored_secret("visitor_token")


@pytest.mark.postgres
def test_a_pooled_connection_is_pinged_only_after_sitting_idle(postgres_url: str) -> None:
    """ping_when_idle: a connection returned a moment ago is used without a ping (its death then
    shows on use); one idle longer than the limit is pinged, found dead and replaced."""
    import time

    from sqlalchemy import create_engine
    from sqlalchemy.exc import OperationalError

    from bot.store.db import ping_when_idle

    engine = create_engine(postgres_url, future=True, pool_size=1, max_overflow=0)
    ping_when_idle(engine, idle_s=0.3)
    admin = create_engine(postgres_url, future=True, isolation_level="AUTOCOMMIT")

    def kill_pooled() -> int:
        with engine.connect() as conn:
            pid = int(conn.execute(text("SELECT pg_backend_pid()")).scalar_one())
        with admin.connect() as conn:
            conn.execute(text("SELECT pg_terminate_backend(:p)"), {"p": pid})
        time.sleep(0.05)
        return pid

    try:
        kill_pooled()
        # used at once: not pinged, so the dead one is met
        with pytest.raises(OperationalError), engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        dead = kill_pooled()
        time.sleep(0.4)  # idle past the limit: pinged on checkout, replaced
        with engine.connect() as conn:
            assert conn.execute(text("SELECT pg_backend_pid()")).scalar_one() != dead
    finally:
        engine.dispose()
        admin.dispose()


def test_a_customer_message_starts_the_reply_clock_only_of_an_assigned_agent(db: Database) -> None:
    """_append_in reads the conversation's status from its seq update (RETURNING on
    PostgreSQL): a bot-held conversation skips the handoff update; an agent's starts its clock."""
    from bot.services.agents import AgentService
    from bot.services.conversations import ConversationService
    from bot.store.models import Handoff

    conversations = ConversationService(db)
    conv = conversations.create_visitor_and_conversation("web", "en")
    first = conversations.append(conv.id, "customer", "hello", client_msg_id="a")
    assert first is not None and first.message.seq == 1
    agent = AgentService(db).create("ada", "Ada", "password-123", ["general"], "agent")
    assert conversations.queue(conv.id, "general", "customer_request") is not None
    assert conversations.assign(conv.id, agent.id) is not None
    second = conversations.append(conv.id, "customer", "anyone?", client_msg_id="b")
    assert second is not None and second.message.seq == 2
    with db.read_session() as s:
        waiting = s.execute(select(Handoff.awaiting_reply_since).where(Handoff.conversation_id == conv.id)).scalar_one()
    assert waiting is not None
