"""The brain's tracker cache with several writers (issue #15): two hubs' brains, each with its
own :func:`bot.brain.cached_sql_tracker_store`, take turns on one conversation on one PostgreSQL
database. A cached tracker is used only while the stored events are those it was built from."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.faultkit import fresh_postgres_database

pytestmark = [pytest.mark.postgres]


@pytest.fixture
def pg_database(postgres_url: str) -> Iterator[str]:
    with fresh_postgres_database(postgres_url) as url:
        yield url


async def test_a_turn_written_by_another_hub_is_read_back(pg_database: str) -> None:
    from rasa.core.tracker_store import SQLTrackerStore
    from rasa.shared.core.domain import Domain
    from rasa.shared.core.events import UserUttered

    from bot.brain import cached_sql_tracker_store, tracker_store_kwargs

    kwargs = {**tracker_store_kwargs(pg_database), "domain": Domain.empty()}
    hub_a = cached_sql_tracker_store(SQLTrackerStore, kwargs)
    hub_b = cached_sql_tracker_store(SQLTrackerStore, kwargs)
    try:
        tracker = await hub_a.get_or_create_tracker("c-1")
        tracker.update(UserUttered("first, on hub A"))
        await hub_a.save(tracker)

        on_b = await hub_b.retrieve("c-1")  # hub B reads (and caches) it
        on_b.update(UserUttered("second, on hub B"))
        await hub_b.save(on_b)

        # Hub A's cache still holds the tracker of the first turn: it must not be used.
        back_on_a = await hub_a.retrieve("c-1")
        texts = [e.text for e in back_on_a.events if isinstance(e, UserUttered)]
        assert texts == ["first, on hub A", "second, on hub B"]
        back_on_a.update(UserUttered("third, on hub A"))
        await hub_a.save(back_on_a)

        # and hub B sees the third turn; nothing was written twice.
        again_on_b = await hub_b.retrieve("c-1")
        texts = [e.text for e in again_on_b.events if isinstance(e, UserUttered)]
        assert texts == ["first, on hub A", "second, on hub B", "third, on hub A"]
        # A cache that is still current is used as it is (no re-read).
        assert await hub_b.retrieve("c-1") is again_on_b
    finally:
        hub_a.engine.dispose()
        hub_b.engine.dispose()


async def test_a_current_cache_costs_one_index_lookup(pg_database: str) -> None:
    """Checking a cached tracker is one descent of the ``(sender_id, id)`` index, not a count of
    the conversation's events (which grows with every turn)."""
    import sqlalchemy as sa
    from rasa.core.tracker_store import SQLTrackerStore
    from rasa.shared.core.domain import Domain
    from rasa.shared.core.events import UserUttered

    from bot.brain import EVENTS_VERSION_INDEX, cached_sql_tracker_store, tracker_store_kwargs

    kwargs = {**tracker_store_kwargs(pg_database), "domain": Domain.empty()}
    hub = cached_sql_tracker_store(SQLTrackerStore, kwargs)
    other = cached_sql_tracker_store(SQLTrackerStore, kwargs)  # a second hub: the index exists already
    statements: list[tuple[str, object]] = []

    def record(conn: object, cursor: object, statement: str, parameters: object, *args: object) -> None:
        statements.append((statement, parameters))

    try:
        for n in range(3):
            tracker = await hub.get_or_create_tracker("c-1")
            tracker.update(UserUttered(f"turn {n}"))
            await hub.save(tracker)
        sa.event.listen(hub.engine, "before_cursor_execute", record)
        assert await hub.retrieve("c-1") is tracker
        sa.event.remove(hub.engine, "before_cursor_execute", record)
        assert len(statements) == 1 and "count(" not in statements[0][0].lower(), statements
        with hub.engine.connect() as conn:
            conn.exec_driver_sql("SET enable_seqscan = off")
            plan = conn.exec_driver_sql("EXPLAIN " + statements[0][0], statements[0][1]).scalars().all()
        assert EVENTS_VERSION_INDEX in "\n".join(plan), plan
    finally:
        hub.engine.dispose()
        other.engine.dispose()
