"""Alembic environment of the Humanline store.

Two ways in:

* :meth:`bot.store.db.Database.migrate` passes an open connection in
  ``config.attributes["connection"]``; the migrations run on it, inside the caller's
  transaction, with the connection's settings (e.g. the PostgreSQL ``search_path`` of a test
  schema).
* The ``alembic`` command line (``alembic -c bot/store/alembic.ini upgrade head``) builds an
  engine from ``sqlalchemy.url`` in the ini file, or from ``DATABASE_URL``, or falls back to
  ``sqlite:///humanline.db``.

``target_metadata`` is :data:`bot.store.models.Base.metadata`, so ``alembic revision
--autogenerate`` compares the database with the declared tables.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine
from sqlalchemy.engine import Connection

from bot.settings import database_url
from bot.store.models import Base

config = context.config
target_metadata = Base.metadata


def _url() -> str:
    return config.get_main_option("sqlalchemy.url") or database_url()


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",  # SQLite cannot ALTER most things
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_offline() -> None:
    """Emit the SQL to stdout (``alembic upgrade head --sql``) without connecting."""
    context.configure(url=_url(), target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    """Run the migrations on the given connection, or on a new engine's connection."""
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    engine = create_engine(_url(), future=True)
    try:
        with engine.begin() as conn:
            _run(conn)
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
