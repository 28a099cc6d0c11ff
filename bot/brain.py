"""The brain: what understands a customer message and produces the bot's replies.

The hub talks to a :class:`Brain` only; the handoff guard (:mod:`bot.guard`) judges what the brain
returns. Two implementations:

* :class:`RasaAgentBrain` — a ``rasa.core.agent.Agent`` loaded in-process with Rasa's
  ``SQLTrackerStore`` on the hub's own database (``DATABASE_URL``);
* :class:`RemoteRasaBrain` — a separate ``rasa run`` (REST channel plus the tracker endpoint), for
  scaling the model out of the hub process.

:class:`bot.brain_pool.BrainPool` runs :class:`RasaAgentBrain` in worker processes, off the hub's
event loop; it is what ``python -m bot serve`` uses (``HUMANLINE_BRAIN_WORKERS``).

Both read one turn from Rasa's tracker events after the user event: the intent and its
confidence, the actions run, the slots set, the bot utterances with their buttons. The turn's
``resolved`` is the brain's claim by :func:`bot.guard.turn_resolves`: the slot ``resolution`` was
set during the turn, or small talk got its own small-talk answer; the guard checks the claim
against the conversation (``docs/guard.md``, "Resolved means resolved").

Importing this module does not import Rasa or TensorFlow; they load with the model.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from bot.guard import turn_resolves

logger = logging.getLogger(__name__)

HANDOFF_ACTION = "action_handoff"
SLOTS_OF_INTEREST = ("resolution", "handoff_queue", "handoff_reason", "case_number", "lang")
WARM_UP = ("hello", "你好")  # parsed once after loading (NLU only: nothing is stored)


class ActionServerError(RuntimeError):
    """A custom action of the turn could not be run: the action server was unreachable, timed
    out or failed. Rasa itself only logs this and carries on without the action's events; the
    brain reports it so that the hub tells the customer something went wrong and hands off."""


class TrackerStoreError(RuntimeError):
    """The tracker store could not read or write a conversation. Rasa's ``FailSafeTrackerStore``
    would silently continue in memory (and lose the turn's events); the brain fails the turn."""


@dataclass
class BotReply:
    """One bot utterance with its quick-reply buttons (``{"title", "payload"}``)."""

    text: str
    buttons: list[dict[str, str]] = field(default_factory=list)


@dataclass
class BrainTurn:
    """What the brain did for one customer message.

    ``slots`` are the values after the turn; ``slots_set`` only those set during this turn (an
    addition to the architecture contract: the hub needs it to tell a fresh handoff request from
    an old slot value).
    """

    replies: list[BotReply]
    intent: str | None
    confidence: float | None
    entities: list[dict[str, Any]]
    actions: list[str]
    slots: dict[str, Any]
    resolved: bool
    slots_set: dict[str, Any] = field(default_factory=dict)

    @property
    def handoff_requested(self) -> bool:
        """An action asked for a human during this turn (``action_handoff`` or its slots)."""
        return HANDOFF_ACTION in self.actions or bool(
            self.slots_set.get("handoff_queue") or self.slots_set.get("handoff_reason")
        )

    @property
    def handoff_queue(self) -> str | None:
        return self.slots_set.get("handoff_queue") or self.slots.get("handoff_queue")

    def to_dict(self) -> dict[str, Any]:
        """The JSON-compatible form (the brain pool's wire format); :meth:`from_dict` inverts it."""
        return {
            "replies": [{"text": r.text, "buttons": [dict(b) for b in r.buttons]} for r in self.replies],
            "intent": self.intent,
            "confidence": self.confidence,
            "entities": list(self.entities),
            "actions": list(self.actions),
            "slots": dict(self.slots),
            "resolved": self.resolved,
            "slots_set": dict(self.slots_set),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BrainTurn:
        """A turn from :meth:`to_dict`'s form; raises ``KeyError``/``TypeError`` on a malformed one."""
        confidence = data["confidence"]
        return cls(
            replies=[
                BotReply(str(r["text"]), [{"title": str(b["title"]), "payload": str(b["payload"])}
                                          for b in r.get("buttons") or []])
                for r in data["replies"]
            ],
            intent=data["intent"],
            confidence=float(confidence) if confidence is not None else None,
            entities=list(data["entities"]),
            actions=[str(a) for a in data["actions"]],
            slots=dict(data["slots"]),
            resolved=bool(data["resolved"]),
            slots_set=dict(data.get("slots_set") or {}),
        )


@runtime_checkable
class Brain(Protocol):
    """Anything that answers a customer message. ``conversation_id`` is the Rasa sender id.

    A brain may also offer ``async parse(text) -> (intent, confidence)``: the NLU alone, no
    dialogue and no tracker. The hub uses it, when present, to label customer messages the bot
    never handled (sent to a queue or an agent) in the agent's transcript.
    """

    async def handle(self, conversation_id: str, text: str, metadata: dict[str, Any]) -> BrainTurn: ...

    async def ready(self) -> bool: ...


def turn_from_events(
    events: list[dict[str, Any]], slots: dict[str, Any], message_id: str | None = None
) -> BrainTurn:
    """Read one turn from Rasa tracker events (their JSON form).

    The turn starts at the last ``user`` event (the one with ``message_id`` when given) and runs
    to the end of ``events``.
    """
    start = None
    for i in range(len(events) - 1, -1, -1):
        e = events[i]
        if e.get("event") == "user" and (message_id is None or e.get("message_id") == message_id):
            start = i
            break
    if start is None:
        return BrainTurn([], None, None, [], [], dict(slots), False)
    user = events[start]
    parse = user.get("parse_data") or {}
    intent_data = parse.get("intent") or {}
    intent = intent_data.get("name")
    confidence = intent_data.get("confidence")
    replies: list[BotReply] = []
    actions: list[str] = []
    slots_set: dict[str, Any] = {}
    for e in events[start + 1 :]:
        kind = e.get("event")
        if kind == "action":
            name = e.get("name")
            if name and name != "action_listen":
                actions.append(name)
        elif kind == "slot":
            slots_set[str(e.get("name"))] = e.get("value")
        elif kind == "bot":
            data = e.get("data") or {}
            buttons = [
                {"title": str(b.get("title", "")), "payload": str(b.get("payload", ""))}
                for b in (data.get("buttons") or [])
            ]
            if e.get("text"):
                replies.append(BotReply(str(e["text"]), buttons))
    resolved = turn_resolves(intent, actions, slots_set.get("resolution"))
    return BrainTurn(
        replies=replies,
        intent=intent,
        confidence=float(confidence) if confidence is not None else None,
        entities=list(parse.get("entities") or []),
        actions=actions,
        slots=dict(slots),
        resolved=resolved,
        slots_set=slots_set,
    )


_ACTION_FAILURES: contextvars.ContextVar[list[str] | None] = contextvars.ContextVar(
    "humanline_action_failures", default=None
)


def install_action_failure_probe() -> None:
    """Make every failed call of a custom action visible to the turn that made it (idempotent).

    Rasa's processor catches any exception of an action, logs it and goes on as if the action
    had returned no events (``MessageProcessor._run_action``); slot mappings and form validation
    swallow theirs too. All of them go through ``RemoteAction.run``, which raises
    ``RasaException`` when the server cannot be reached, times out or answers with an error,
    and ``ActionExecutionRejection`` for a deliberate rejection (a form's validation: not a
    failure). This wrapper records the failures in the current turn's
    :func:`collect_action_failures` list and re-raises, so Rasa behaves exactly as before.
    """
    from rasa.core.actions.action import ActionExecutionRejection, RemoteAction

    if getattr(RemoteAction.run, "_humanline_probe", False):
        return
    stock = RemoteAction.run

    async def run(self: Any, output_channel: Any, nlg: Any, tracker: Any, domain: Any) -> Any:
        try:
            return await stock(self, output_channel, nlg, tracker, domain)
        except ActionExecutionRejection:
            raise
        except Exception as e:
            failures = _ACTION_FAILURES.get()
            if failures is not None:
                failures.append(f"{self.name()}: {e}")
            raise

    run._humanline_probe = True  # type: ignore[attr-defined]
    RemoteAction.run = run  # type: ignore[method-assign]


@contextlib.contextmanager
def collect_action_failures() -> Iterator[list[str]]:
    """The custom-action failures of the code run inside (this task and what it awaits)."""
    failures: list[str] = []
    token = _ACTION_FAILURES.set(failures)
    try:
        yield failures
    finally:
        _ACTION_FAILURES.reset(token)


def strict_tracker_store(store: Any) -> Any:
    """Make Rasa's ``FailSafeTrackerStore`` (which ``Agent`` wraps every store in) raise
    :class:`TrackerStoreError` instead of falling back to an in-memory store: a retrieve that
    fails would otherwise start the conversation afresh, and a save that fails would keep the
    turn's events only in this process. Returns ``store``."""
    from rasa.core.tracker_store import FailSafeTrackerStore

    def fail(error: Exception) -> None:
        raise TrackerStoreError(f"the tracker store failed: {type(error).__name__}: {error}") from error

    if isinstance(store, FailSafeTrackerStore):
        store._on_tracker_store_error = fail
    return store


def _inner_store(store: Any) -> Any:
    """The store inside Rasa's ``FailSafeTrackerStore`` wrapper (ours has ``forget``)."""
    return getattr(store, "_tracker_store", store)


def tracker_store_kwargs(database_url: str) -> dict[str, Any]:
    """``SQLTrackerStore`` arguments for a SQLAlchemy URL: dialect, host, port, db, credentials.

    On SQLite the tracker events go to a file of their own beside the hub's
    (:func:`tracker_sqlite_path`): SQLite admits one writer per file, and the brain workers'
    tracker writes would otherwise make the hub's transactions wait in SQLite's busy handler.
    Other databases (PostgreSQL) keep one database, the tracker in its ``events`` table.
    """
    from sqlalchemy.engine.url import make_url

    url = make_url(database_url)
    backend = url.get_backend_name()
    if backend == "sqlite":
        return {"dialect": "sqlite", "db": tracker_sqlite_path(url.database)}
    return {
        "dialect": url.drivername,
        "host": url.host,
        "port": url.port,
        "db": url.database,
        "username": url.username,
        "password": url.password,
        "query": dict(url.query) or None,
    }


def tracker_sqlite_path(hub_path: str | None) -> str:
    """The SQLite file of Rasa's tracker store for the hub's SQLite file ``hub_path``:
    ``<hub file>.tracker.db`` (``humanline.db`` → ``humanline.db.tracker.db``); in-memory stays
    in memory."""
    if not hub_path:
        return "rasa.db"
    if hub_path == ":memory:" or hub_path.startswith("file:"):
        return hub_path
    return f"{hub_path}.tracker.db"


def _turn_events(tracker: Any, message_id: str) -> list[dict[str, Any]]:
    """The JSON form of the tracker's events from the user event ``message_id`` on (serialising
    only the turn, not the whole conversation)."""
    events = tracker.events
    tail: list[Any] = []
    for e in reversed(events):
        tail.append(e)
        if getattr(e, "type_name", None) == "user" and getattr(e, "message_id", None) == message_id:
            break
    else:
        tail = list(reversed(events))  # not found: let turn_from_events decide on all of them
    return [e.as_dict() for e in reversed(tail)]


EVENTS_VERSION_INDEX = "humanline_events_sender_id_id"
"""The index :func:`cached_sql_tracker_store` adds to Rasa's ``events`` table (PostgreSQL)."""


def cached_sql_tracker_store(base: type, kwargs: dict[str, Any], max_cached: int = 20_000) -> Any:
    """Rasa's ``SQLTrackerStore`` with an in-process write-through cache.

    The database stays the record (every event is inserted, as by the stock store, so state
    survives a restart), but a conversation this process already holds is not re-read and
    replayed from SQL for every message, and a save inserts the new events without first
    counting the stored ones; the insert itself runs in a worker thread, off the event loop.
    The hub serialises turns per conversation — across hubs too, on PostgreSQL
    (:mod:`bot.hub.locks`). On SQLite one process is the only writer; on any other database a
    cached tracker is checked before use against the conversation's newest stored event id
    (several hubs, each with its own cache, may take turns on one conversation). Events are only
    ever appended, with increasing ids, and a conversation's writers take turns, so that id is
    the version of the stored events: one descent of the ``(sender_id, id)`` index this store
    adds (:data:`EVENTS_VERSION_INDEX`), where the stock store's count reads every event of the
    conversation's session, each turn.
    """
    import json as _json
    import threading
    from collections import OrderedDict

    class CachedSQLTrackerStore(base):  # type: ignore[misc, valid-type]
        # Set by SQLTrackerStore.__init__ (the base is only known at run time).
        engine: Any
        sessionmaker: Any

        def __init__(self, **kw: Any) -> None:
            super().__init__(**kw)
            # sender_id -> (tracker, its events stored, the newest stored event id)
            self._cache: OrderedDict[str, tuple[Any, int, int]] = OrderedDict()
            self._cache_lock = threading.Lock()
            self._db_lock: Any = None
            if self.engine.dialect.name == "sqlite" and self.engine.url.database:
                import sqlalchemy as sa
                from sqlalchemy.pool import QueuePool

                from bot.store.db import sqlite_lock

                url = self.engine.url
                self.engine.dispose()
                # One pooled connection set with the hub's pragmas (Rasa's engine would open a
                # new connection per session), and the hub's lock on the same file.
                self.engine = sa.create_engine(
                    url, poolclass=QueuePool, pool_size=4, max_overflow=8,
                    connect_args={"check_same_thread": False, "timeout": 30},
                )
                sa.event.listen(self.engine, "connect", _sqlite_tracker_pragmas)
                self.sessionmaker = sa.orm.sessionmaker(bind=self.engine)
                self._db_lock = sqlite_lock(url.database)
            else:
                import sqlalchemy as sa
                from rasa.core.tracker_store import create_engine_kwargs

                url = self.engine.url
                self.engine.dispose()
                # Rasa's engine reuses pooled connections blindly: after a database outage the
                # first turn got a closed connection. Test each one when it is checked out.
                self.engine = sa.create_engine(url, pool_pre_ping=True, **create_engine_kwargs(url))
                self.sessionmaker = sa.orm.sessionmaker(bind=self.engine)
                self._create_version_index()

        def _create_version_index(self) -> None:
            """The index that makes :meth:`_version_sync` one lookup (Rasa's own index is on
            ``sender_id`` alone). Created once, by the first hub that starts on the database."""
            import sqlalchemy as sa

            # Not an sa.Index on SQLEvent: that would join the metadata of Rasa's class, shared
            # by every store of the process, and its create_all would create it a second time.
            table = self.SQLEvent.__tablename__
            try:
                with self.engine.begin() as conn:
                    conn.exec_driver_sql(
                        f"CREATE INDEX IF NOT EXISTS {EVENTS_VERSION_INDEX} ON {table} (sender_id, id)"
                    )
            except sa.exc.DBAPIError:  # another hub created it at the same moment: fine
                if not any(i["name"] == EVENTS_VERSION_INDEX for i in sa.inspect(self.engine).get_indexes(table)):
                    raise

        def forget(self, sender_id: str) -> None:
            with self._cache_lock:
                self._cache.pop(sender_id, None)

        def _remember(self, tracker: Any, persisted: int, version: int) -> None:
            with self._cache_lock:
                self._cache[tracker.sender_id] = (tracker, persisted, version)
                self._cache.move_to_end(tracker.sender_id)
                while len(self._cache) > max_cached:
                    self._cache.popitem(last=False)

        async def retrieve(self, sender_id: str) -> Any:
            with self._cache_lock:
                hit = self._cache.get(sender_id)
            if hit is not None:
                if self._db_lock is not None:  # SQLite: one process, the only writer
                    return hit[0]
                # Several hubs (each with its own brain) may share this database: the cached
                # tracker is used only while the stored events are those it was built from (the
                # newest event id is the version: events are only ever appended). Another hub's
                # turn since then means reading it back.
                if await asyncio.to_thread(self._version_sync, sender_id) == hit[2]:
                    return hit[0]
                self.forget(sender_id)
            tracker, version = await asyncio.to_thread(self._retrieve_sync, sender_id)
            if tracker is not None:
                self._remember(tracker, len(tracker.events), version)
            return tracker

        def _locked(self) -> Any:
            import contextlib

            return self._db_lock if self._db_lock is not None else contextlib.nullcontext()

        def _retrieve_sync(self, sender_id: str) -> tuple[Any, int]:
            """The tracker (``None`` when nothing is stored) and its version (the newest id)."""
            from rasa.shared.core.trackers import DialogueStateTracker

            with self._locked(), self.session_scope() as session:
                rows = self._event_query(session, sender_id, fetch_events_from_all_sessions=False).all()
                events = [_json.loads(r.data) for r in rows]
                version = max((int(r.id) for r in rows), default=0)
            if self.domain and events:
                return DialogueStateTracker.from_dict(sender_id, events, self.domain.slots), version
            return None, version

        async def save(self, tracker: Any) -> None:
            await self.stream_events(tracker)
            with self._cache_lock:
                hit = self._cache.get(tracker.sender_id)
            if hit is not None and hit[0] is tracker:
                persisted, version = hit[1], hit[2]
            else:
                # Not read through this cache (e.g. a new tracker): count as the stock store does.
                persisted, version = await asyncio.to_thread(self._stored_sync, tracker.sender_id)
            events = list(tracker.events)
            rows = []
            for e in events[persisted:]:
                data = e.as_dict()
                rows.append(
                    {
                        "sender_id": tracker.sender_id,
                        "type_name": e.type_name,
                        "timestamp": data.get("timestamp"),
                        "intent_name": (data.get("parse_data") or {}).get("intent", {}).get("name"),
                        "action_name": data.get("name"),
                        "data": _json.dumps(data),
                    }
                )
            if rows:
                try:
                    version = await asyncio.to_thread(self._insert_sync, rows)
                except BaseException:
                    self.forget(tracker.sender_id)
                    raise
            self._remember(tracker, len(events), version)

        def _version_query(self, session: Any, sender_id: str) -> int:
            import sqlalchemy as sa

            newest = session.query(sa.func.max(self.SQLEvent.id)).filter(self.SQLEvent.sender_id == sender_id)
            return int(newest.scalar() or 0)

        def _version_sync(self, sender_id: str) -> int:
            """The conversation's newest stored event id (0: none); an index lookup."""
            with self._locked(), self.session_scope() as session:
                return self._version_query(session, sender_id)

        def _stored_sync(self, sender_id: str) -> tuple[int, int]:
            """The events of the conversation's session stored, and the version."""
            with self._locked(), self.session_scope() as session:
                count = self._event_query(session, sender_id, fetch_events_from_all_sessions=False).count()
                return int(count), self._version_query(session, sender_id)

        def _insert_sync(self, rows: list[dict[str, Any]]) -> int:
            """Insert a turn's events; returns the newest id among them (the new version)."""
            with self._locked(), self.session_scope() as session:
                if self._db_lock is not None:  # SQLite: one writer, the version is never checked
                    session.bulk_insert_mappings(self.SQLEvent, rows)
                    session.commit()
                    return 0
                table = self.SQLEvent.__table__
                ids = session.execute(table.insert().values(rows).returning(table.c.id)).scalars().all()
                session.commit()
                return max(int(i) for i in ids)

    return CachedSQLTrackerStore(**kwargs)


def _sqlite_tracker_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()


_STOCK_RASA_MODEL_LOAD: Any = None


def install_fast_model_load() -> None:
    """Make Rasa's TensorFlow models (DIET, TED) load about three times faster (idempotent).

    ``RasaModel.load`` builds a model's variables by *training* it on one example with Keras'
    ``fit`` — which traces the whole training graph into a ``tf.function`` (CRF decoding, losses,
    the optimizer) only to throw it away — then loads the trained weights over them and traces
    the prediction graph. Here that one training step runs eagerly: the same Python code creates
    the same variables, without tracing; then the weights are loaded and the prediction graph is
    traced exactly as before, so predictions are identical (``tests/test_brain_pool.py`` checks
    it against the stock load). Loading for fine-tuning is left to the stock method.
    """
    global _STOCK_RASA_MODEL_LOAD
    from rasa.utils.tensorflow import models

    if _STOCK_RASA_MODEL_LOAD is not None:
        return
    stock = models.RasaModel.load.__func__  # type: ignore[attr-defined]

    def load(
        cls: Any, model_file_name: str, model_data_example: Any, predict_data_example: Any = None,
        finetune_mode: bool = False, *args: Any, **kwargs: Any,
    ) -> Any:
        if finetune_mode:
            return stock(cls, model_file_name, model_data_example, predict_data_example, finetune_mode,
                         *args, **kwargs)
        import tensorflow as tf
        from rasa.utils.tensorflow.constants import LEARNING_RATE, RUN_EAGERLY
        from rasa.utils.tensorflow.data_generator import RasaBatchDataGenerator

        model = cls(*args, **kwargs)
        config = kwargs.get("config", {})
        model.compile(optimizer=tf.keras.optimizers.Adam(config.get(LEARNING_RATE, 0.001)), run_eagerly=True)
        model.fit(RasaBatchDataGenerator(model_data_example, batch_size=1), verbose=False)
        status = model.load_weights(model_file_name)
        # The optimizer's slots are not needed for predictions: no warnings about them.
        getattr(status, "expect_partial", lambda: None)()
        model.run_eagerly = bool(config.get(RUN_EAGERLY))  # predictions in a traced graph again
        if predict_data_example:
            model.run_inference(predict_data_example)  # trace the prediction graph now
        return model

    _STOCK_RASA_MODEL_LOAD = stock
    models.RasaModel.load = classmethod(load)  # type: ignore[assignment,method-assign]


class RasaAgentBrain:
    """Rasa's ``Agent`` in this process. Call :meth:`load` (slow: TensorFlow) before use.

    :param model_path: a trained model archive.
    :param action_endpoint: the rasa_sdk webhook URL, or ``None`` for no custom actions.
    :param action_token: sent as ``Authorization: Bearer`` to the action server, which refuses
        calls without it (:mod:`actions.server`).
    :param tracker_store: a Rasa ``TrackerStore``, or a ``DATABASE_URL`` for a ``SQLTrackerStore``
        on that database, or ``None`` for an in-memory store.
    :param fast_load: load the TensorFlow models without tracing a training graph
        (:func:`install_fast_model_load`; same predictions, about a third of the time).
    """

    def __init__(
        self, model_path: str, action_endpoint: str | None = None, tracker_store: Any = None,
        fast_load: bool = True, action_token: str | None = None,
    ):
        self.model_path = model_path
        self.action_endpoint = action_endpoint
        self.action_token = action_token
        self._tracker_store_arg = tracker_store
        self.fast_load = fast_load
        self.agent: Any = None

    def _load(self) -> Any:
        from rasa.core.agent import Agent
        from rasa.utils.log_utils import configure_structlog

        # Unconfigured, Rasa's structlog prints every debug event (slot dumps, rule states) for
        # every message; `rasa run` configures it from its log level, and so does the hub.
        configure_structlog(max(logging.getLogger().getEffectiveLevel(), logging.INFO))
        if self.fast_load:
            install_fast_model_load()
        install_action_failure_probe()
        from rasa.core.tracker_store import SQLTrackerStore
        from rasa.utils.endpoints import EndpointConfig

        store = self._tracker_store_arg
        if isinstance(store, str):
            store = cached_sql_tracker_store(SQLTrackerStore, tracker_store_kwargs(store))
        endpoint = action_endpoint_config(EndpointConfig, self.action_endpoint, self.action_token)
        agent = Agent.load(self.model_path, tracker_store=store, action_endpoint=endpoint)
        if store is not None and getattr(store, "domain", None) is None:
            store.domain = agent.domain
        strict_tracker_store(agent.tracker_store)
        return agent

    async def load(self) -> None:
        """Load the model (in a worker thread, so the event loop keeps serving), then parse two
        messages so that the first customer's turn does not pay for lazy initialisation."""
        agent = await asyncio.to_thread(self._load)
        for text in WARM_UP:
            await agent.parse_message(text)
        self.agent = agent
        logger.info("model %s loaded", self.model_path)

    async def ready(self) -> bool:
        return self.agent is not None and self.agent.is_ready()

    def forget(self, conversation_id: str) -> None:
        """Drop the conversation's cached tracker (the next turn reads it from the database)."""
        store = _inner_store(self.agent.tracker_store) if self.agent is not None else None
        forget = getattr(store, "forget", None)
        if forget is not None:
            forget(conversation_id)

    async def parse(self, text: str) -> tuple[str | None, float | None]:
        """The NLU's intent and confidence for ``text`` (no dialogue, nothing stored)."""
        if self.agent is None:
            raise RuntimeError("the model is not loaded")
        parsed = await self.agent.parse_message(text)
        intent = parsed.get("intent") or {}
        confidence = intent.get("confidence")
        return intent.get("name"), float(confidence) if confidence is not None else None

    async def handle(self, conversation_id: str, text: str, metadata: dict[str, Any]) -> BrainTurn:
        from rasa.core.channels.channel import CollectingOutputChannel, UserMessage

        if self.agent is None:
            raise RuntimeError("the model is not loaded")
        message_id = uuid.uuid4().hex
        channel = CollectingOutputChannel()
        store = self.agent.tracker_store
        try:
            with collect_action_failures() as failures:
                await self.agent.handle_message(
                    UserMessage(
                        text, channel, sender_id=conversation_id, input_channel="humanline",
                        message_id=message_id, metadata=metadata,
                    )
                )
            if failures:
                raise ActionServerError("; ".join(failures))
        except BaseException:
            # A failed or cancelled (timed out) turn may have left a half-updated tracker in
            # the cache: the next turn reads the conversation back from the database.
            self.forget(conversation_id)
            raise
        tracker = await store.retrieve(conversation_id)
        if tracker is None:
            raise RuntimeError("the tracker store lost the conversation")
        return turn_from_events(_turn_events(tracker, message_id), tracker.current_slot_values(), message_id)


class RemoteRasaBrain:
    """A separate ``rasa run --enable-api`` with the REST channel, at ``url`` (e.g.
    ``http://127.0.0.1:5005``). The tracker endpoint needs ``--enable-api`` (and its token, if
    one is configured, in ``token``)."""

    def __init__(self, url: str, token: str | None = None, timeout_s: float = 30.0):
        self.url = url.rstrip("/")
        self.token = token
        self.timeout_s = timeout_s

    def _params(self) -> dict[str, str]:
        return {"token": self.token} if self.token else {}

    async def ready(self) -> bool:
        import aiohttp

        try:
            async with aiohttp.ClientSession() as s, s.get(self.url + "/status", params=self._params()) as r:
                return r.status == 200
        except aiohttp.ClientError:
            return False

    async def handle(self, conversation_id: str, text: str, metadata: dict[str, Any]) -> BrainTurn:
        import aiohttp

        timeout = aiohttp.ClientTimeout(total=self.timeout_s)
        async with aiohttp.ClientSession(timeout=timeout) as s:
            body = {"sender": conversation_id, "message": text, "metadata": metadata}
            async with s.post(self.url + "/webhooks/rest/webhook", json=body) as r:
                r.raise_for_status()
                await r.json()
            params = {"include_events": "AFTER_RESTART", **self._params()}
            async with s.get(f"{self.url}/conversations/{conversation_id}/tracker", params=params) as r:
                r.raise_for_status()
                tracker = await r.json()
        return turn_from_events(tracker.get("events") or [], tracker.get("slots") or {})


def action_endpoint_config(endpoint_cls: Any, url: str | None, token: str | None) -> Any:
    """Rasa's ``EndpointConfig`` of the action server: the token goes in a header (never the
    query string, which ends up in access logs)."""
    if not url:
        return None
    return endpoint_cls(url=url, headers={"Authorization": f"Bearer {token}"} if token else None)
