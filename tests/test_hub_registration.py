"""A hub without REDIS_URL must be alone on its database (``Database.register_hub``).

Such a hub serialises a conversation's turns with an in-process lock only (bot.hub.locks), so a
second hub on the same database would run two turns of one conversation at once. The
registration turns that configuration mistake into an error at start.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from bot.store.db import Database, HubConflict


@pytest.fixture
def schema() -> str:
    return f"t_{uuid.uuid4().hex[:12]}"


def _db(url: str, schema: str) -> Database:
    return Database(url, schema=schema)


@pytest.mark.postgres
def test_a_lone_hub_excludes_any_other_until_it_stops(postgres_url: str, schema: str) -> None:
    first = _db(postgres_url, schema).register_hub(shared=False)
    try:
        with pytest.raises(HubConflict, match="several hubs need REDIS_URL"):
            _db(postgres_url, schema).register_hub(shared=False)
        with pytest.raises(HubConflict, match="a hub without REDIS_URL is running"):
            _db(postgres_url, schema).register_hub(shared=True)
    finally:
        first.release()
    again = _db(postgres_url, schema).register_hub(shared=False)  # released with its connection
    again.release()


@pytest.mark.postgres
def test_hubs_sharing_redis_coexist_but_keep_a_lone_hub_out(postgres_url: str, schema: str) -> None:
    a = _db(postgres_url, schema).register_hub(shared=True)
    b = _db(postgres_url, schema).register_hub(shared=True)
    try:
        with pytest.raises(HubConflict, match="several hubs need REDIS_URL"):
            _db(postgres_url, schema).register_hub(shared=False)
    finally:
        a.release()
        b.release()


@pytest.mark.postgres
def test_hubs_on_other_schemas_do_not_conflict(postgres_url: str, schema: str) -> None:
    a = _db(postgres_url, schema).register_hub(shared=False)
    b = _db(postgres_url, schema + "x").register_hub(shared=False)
    a.release()
    b.release()


def test_sqlite_has_nothing_to_claim(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'h.db'}")
    db.register_hub(shared=False).release()
    db.register_hub(shared=False).release()
