"""A new anonymous visitor's hello is one database transaction (visitor and conversation
together, nothing to replay): a burst of customers waits on the hello pool for that work."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from types import SimpleNamespace
from typing import Any

import pytest

from bot.hub.customer_ws import _open_conversation
from bot.services.conversations import ConversationService
from bot.store.db import Database


def test_an_anonymous_hello_is_one_transaction(db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    conversations = ConversationService(db)
    hub = SimpleNamespace(db=db, conversations=conversations, case_url=lambda number: None, agents=None)
    transactions: list[str] = []

    def counting(name: str, original: Any) -> Any:
        @contextmanager
        def wrapped(*a: Any, **k: Any) -> Iterator[Any]:
            transactions.append(name)
            with original(*a, **k) as session:
                yield session
        return wrapped

    for name in ("session", "read_session"):
        monkeypatch.setattr(db, name, counting(name, getattr(db, name)))

    opened = _open_conversation(hub, None, None, "en", "web", None, 0)  # type: ignore[arg-type]

    assert transactions == ["session"]
    conv = opened.conversation
    assert conv is not None and opened.fresh == conv and opened.replay == []
    assert (conv.status, conv.lang, conv.channel, conv.last_seq) == ("bot", "en", "web", 0)
    assert opened.status == {"type": "status", "status": "bot"}
    assert opened.visitor_id == conv.visitor_id and conversations.visitor_exists(conv.visitor_id)
    assert conversations.get(conv.id) == conv

