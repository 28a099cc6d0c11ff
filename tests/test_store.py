"""The store: migrations create every table, run idempotently, match the models; sessions roll back."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import func, inspect, select, text

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
}


def _tables(db: Database) -> set[str]:
    with db.engine.connect() as conn:
        return set(inspect(conn).get_table_names())


def _revision(db: Database) -> list[str]:
    with db.engine.connect() as conn:
        return [r[0] for r in conn.execute(text("SELECT version_num FROM alembic_version"))]


def test_upgrade_on_empty_database_creates_all_13_tables(db: Database) -> None:
    assert len(TABLES) == 13
    assert _tables(db) - {"alembic_version"} == TABLES
    assert set(Base.metadata.tables) == TABLES
    assert _revision(db) == ["0001"]


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
