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
