"""The multi-turn evaluation: scripted conversations played through the real hub (``make eval-dialogue``).

``python -m bot eval-dialogue`` loads ``eval/dialogues/*.yml`` (:mod:`bot.dialogues`), starts the
real system (:func:`bot.live_system.start_live_system`: a fresh SQLite database, the rasa_sdk
action server, ``python -m bot serve`` with the trained model) unless ``--url`` points at a running
hub, and plays every conversation as a customer over ``/ws/chat`` — nothing but the customer
protocol (docs/protocol.md). After every turn it reads the plan changes recorded for the
conversation's visitor from the store (``plan_changes``). It prints a table per script and in total
and the failing conversations with their transcripts, writes ``results/dialogue_eval.json`` and
exits 1 when a count that must be 0 is not (late or missing handoffs, bot messages after handoff,
plan changes without confirmation, wrong plan changes, conversations that could not be played).

**When a turn ends** (:func:`play_turn`): the message is sent and its ``ack`` awaited (a
``rate_limited`` error resends the same ``client_msg_id`` after a pause). While the bot holds the
conversation, the runner then waits up to ``reply_timeout`` for the first answer (a bot, system or
agent message, or a status frame); the turn ends when a ``queued``/``agent`` status frame arrives
(the hub sends it last in a handoff) or when nothing has arrived for ``settle`` seconds. A turn
with no answer at all ends at ``reply_timeout`` and is reported as unanswered. While a person holds
it, the turn ends after ``settle`` quiet seconds (nothing is expected; anything from the bot is a
failure). After the last turn the runner listens ``settle`` seconds more. Frames that arrive late
are recorded in the turn during which they arrive.

**Scoring** (:func:`score`, pure): the handoff turn is the turn during which the first
``queued``/``agent`` status arrived; with ``handoff_by: K`` it is *in time* when ≤ K, *late* when
> K, *never* when none came. Every ``bot`` message after that status (until a ``bot`` status hands
the conversation back) is a *bot message after handoff*. A recorded plan change counts against the
turn after which it was first seen: *without confirmation* unless that turn is marked
``confirm: true``; *wrong* unless it matches an entry of ``allowed_changes`` not yet used (kind and
target plan).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import tempfile
import time
import unicodedata
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bot.dialogues import DIALOGUES_DIR, SCRIPTS, Dialogue, Turn, load_dialogues
from bot.settings import ROOT

RESULTS = ROOT / "results" / "dialogue_eval.json"
HELD = ("queued", "agent")
#: The counts that must be 0 (exit status 1 otherwise).
MUST_BE_ZERO: tuple[str, ...] = (
    "handed_over_late", "never_handed_over", "bot_messages_after_handoff",
    "changes_without_confirmation", "wrong_changes", "errors",
)

Frame = dict[str, Any]


# ---------------------------------------------------------------- what was recorded


@dataclass
class Event:
    """Something the customer saw, or the store recorded, during a turn.

    ``kind``: ``message`` (``sender``, ``text``, ``buttons``), ``status`` (``status``, ``queue``,
    ``reason``), ``change`` (a ``plan_changes`` row: ``change_kind``, ``from_plan``, ``to_plan``)
    or ``error`` (``code`` in ``text``).
    """

    kind: str
    sender: str | None = None
    text: str = ""
    buttons: list[dict[str, str]] = field(default_factory=list)
    status: str | None = None
    queue: str | None = None
    reason: str | None = None
    change_kind: str | None = None
    from_plan: str | None = None
    to_plan: str | None = None


@dataclass
class TurnRecord:
    """One customer turn as played: what was sent and everything that followed it."""

    number: int
    sent: str
    label: str
    confirm: bool = False
    button_missing: bool = False
    answered: bool = True
    events: list[Event] = field(default_factory=list)


@dataclass
class Transcript:
    """One conversation as played (``error``: it could not be played to the end)."""

    dialogue_id: str
    conversation_id: str | None = None
    turns: list[TurnRecord] = field(default_factory=list)
    error: str | None = None


# ---------------------------------------------------------------- scoring (pure)


@dataclass
class ChangeFinding:
    turn: int
    kind: str
    from_plan: str | None
    to_plan: str | None
    confirmed: bool
    allowed: bool


@dataclass
class Score:
    """The verdict on one conversation."""

    id: str
    script: str
    handoff_by: int | None
    handoff_turn: int | None = None
    handoff_queue: str | None = None
    handoff_reason: str | None = None
    bot_after_handoff: list[tuple[int, str]] = field(default_factory=list)
    changes: list[ChangeFinding] = field(default_factory=list)
    unanswered_turns: list[int] = field(default_factory=list)
    missing_buttons: list[int] = field(default_factory=list)
    expected_queue: str | None = None
    error: str | None = None

    @property
    def handoff(self) -> str:
        """``in_time``, ``late``, ``never`` (required ones), ``unrequired`` or ``none`` (``handoff_by: null``)."""
        if self.handoff_by is None:
            return "none" if self.handoff_turn is None else "unrequired"
        if self.handoff_turn is None:
            return "never"
        return "in_time" if self.handoff_turn <= self.handoff_by else "late"

    @property
    def unconfirmed(self) -> list[ChangeFinding]:
        return [c for c in self.changes if not c.confirmed]

    @property
    def wrong(self) -> list[ChangeFinding]:
        return [c for c in self.changes if not c.allowed]

    @property
    def queue_mismatch(self) -> bool:
        return self.expected_queue is not None and self.handoff_turn is not None and (
            self.handoff_queue != self.expected_queue
        )

    @property
    def failures(self) -> list[str]:
        """Why this conversation fails (empty: it passes)."""
        out = []
        if self.error:
            out.append(f"could not be played: {self.error}")
        if self.handoff == "late":
            out.append(f"handed over at turn {self.handoff_turn}, required by turn {self.handoff_by}")
        if self.handoff == "never":
            out.append(f"never handed over (required by turn {self.handoff_by})")
        if self.bot_after_handoff:
            out.append(f"{len(self.bot_after_handoff)} bot message(s) after handoff")
        for c in self.unconfirmed:
            out.append(f"plan change without confirmation at turn {c.turn}: {c.kind} {c.from_plan} → {c.to_plan}")
        for c in self.wrong:
            out.append(f"wrong plan change at turn {c.turn}: {c.kind} {c.from_plan} → {c.to_plan}")
        return out


def score(dialogue: Dialogue, transcript: Transcript) -> Score:
    """The verdict on one played conversation (see the module docstring for the rules)."""
    s = Score(dialogue.id, dialogue.script, dialogue.handoff_by, expected_queue=dialogue.queue, error=transcript.error)
    held = False
    unused = list(dialogue.allowed_changes)
    for turn in transcript.turns:
        if not turn.answered:
            s.unanswered_turns.append(turn.number)
        if turn.button_missing:
            s.missing_buttons.append(turn.number)
        for ev in turn.events:
            if ev.kind == "status" and ev.status in HELD:
                if not held and s.handoff_turn is None:
                    s.handoff_turn, s.handoff_queue, s.handoff_reason = turn.number, ev.queue, ev.reason
                held = True
            elif ev.kind == "status" and ev.status in ("bot", "closed"):
                held = False  # handed back to the bot, or resolved (a new message reopens with the bot)
            elif ev.kind == "message" and ev.sender == "bot" and held:
                s.bot_after_handoff.append((turn.number, ev.text))
            elif ev.kind == "change":
                kind = ev.change_kind or "?"
                match = next((a for a in unused if a.matches(kind, ev.to_plan)), None)
                if match is not None:
                    unused.remove(match)
                s.changes.append(
                    ChangeFinding(turn.number, kind, ev.from_plan, ev.to_plan, turn.confirm, match is not None)
                )
    return s


@dataclass
class Totals:
    """The counts of the report (one script, or all of them)."""

    conversations: int = 0
    handoff_required: int = 0
    handed_over_in_time: int = 0
    handed_over_late: int = 0
    never_handed_over: int = 0
    handed_over_unrequired: int = 0
    bot_messages_after_handoff: int = 0
    plan_changes: int = 0
    changes_without_confirmation: int = 0
    wrong_changes: int = 0
    errors: int = 0
    unanswered_turns: int = 0
    missing_buttons: int = 0
    queue_mismatches: int = 0
    failed_conversations: int = 0

    def add(self, s: Score) -> None:
        self.conversations += 1
        self.handoff_required += s.handoff_by is not None
        self.handed_over_in_time += s.handoff == "in_time"
        self.handed_over_late += s.handoff == "late"
        self.never_handed_over += s.handoff == "never"
        self.handed_over_unrequired += s.handoff == "unrequired"
        self.bot_messages_after_handoff += len(s.bot_after_handoff)
        self.plan_changes += len(s.changes)
        self.changes_without_confirmation += len(s.unconfirmed)
        self.wrong_changes += len(s.wrong)
        self.errors += s.error is not None
        self.unanswered_turns += len(s.unanswered_turns)
        self.missing_buttons += len(s.missing_buttons)
        self.queue_mismatches += s.queue_mismatch
        self.failed_conversations += bool(s.failures)

    @property
    def passed(self) -> bool:
        return all(getattr(self, name) == 0 for name in MUST_BE_ZERO)


def summarise(scores: Sequence[Score]) -> tuple[dict[str, Totals], Totals]:
    """Totals per script (in :data:`SCRIPTS` order, then any other) and over everything."""
    by_script: dict[str, Totals] = {}
    total = Totals()
    for s in scores:
        by_script.setdefault(s.script, Totals()).add(s)
        total.add(s)
    order = [k for k in SCRIPTS if k in by_script] + sorted(k for k in by_script if k not in SCRIPTS)
    return {k: by_script[k] for k in order}, total


# ---------------------------------------------------------------- playing


@dataclass(frozen=True)
class Timing:
    """How long the runner waits (seconds): see "When a turn ends" in the module docstring."""

    settle: float = 1.0
    reply_timeout: float = 30.0
    rate_limit_pause: float = 2.0
    rate_limit_retries: int = 5


ChangeReader = Callable[[str], Awaitable[list[tuple[int, str, str | None, str | None]]]]
"""``conversation_id -> [(row id, kind, from_plan, to_plan)]``: the plan changes of its visitor."""


class StoreChanges:
    """Reads the ``plan_changes`` rows of a conversation's visitor through the store."""

    def __init__(self, database_url: str) -> None:
        from bot.store.db import Database

        self.db = Database(database_url)

    def rows(self, conversation_id: str) -> list[tuple[int, str, str | None, str | None]]:
        from sqlalchemy import select

        from bot.store.models import Conversation, PlanChange

        with self.db.session() as s:
            visitor = select(Conversation.visitor_id).where(Conversation.id == conversation_id).scalar_subquery()
            rows = s.execute(
                select(PlanChange.id, PlanChange.kind, PlanChange.from_plan, PlanChange.to_plan)
                .where(PlanChange.visitor_id == visitor)
                .order_by(PlanChange.id)
            ).all()
        return [(int(r[0]), str(r[1]), r[2], r[3]) for r in rows]

    async def __call__(self, conversation_id: str) -> list[tuple[int, str, str | None, str | None]]:
        return await asyncio.to_thread(self.rows, conversation_id)

    def close(self) -> None:
        self.db.dispose()


def _fold(text: str) -> str:
    return unicodedata.normalize("NFKC", text).casefold().strip()


def choose_button(turn: Turn, offered: Sequence[dict[str, str]]) -> tuple[str, bool]:
    """What a button turn sends, and whether the button was missing.

    The offered button whose title is one of the turn's titles (case- and width-insensitive), else
    the one whose payload is the turn's payload; when none is offered, the turn's payload (what the
    widget would send) or, without one, its first title typed as text.
    """
    titles = {_fold(t) for t in turn.button}
    for b in offered:
        if _fold(str(b.get("title", ""))) in titles:
            return str(b.get("payload") or b.get("title")), False
    if turn.payload is not None:
        for b in offered:
            if b.get("payload") == turn.payload:
                return turn.payload, False
    return (turn.payload or turn.button[0]), True


def _event(frame: Frame) -> Event | None:
    kind = frame.get("type")
    if kind == "message" and frame.get("sender") != "customer":
        return Event("message", sender=frame.get("sender"), text=str(frame.get("text", "")),
                     buttons=[b for b in frame.get("buttons") or [] if isinstance(b, dict)])
    if kind == "status":
        return Event("status", status=frame.get("status"), queue=frame.get("queue"), reason=frame.get("reason"))
    if kind == "error":
        return Event("error", text=f"{frame.get('code')}: {frame.get('message')}")
    return None  # acks, pongs, the other tabs' customer messages


async def play_turn(chat: Any, text: str, record: TurnRecord, held: bool, timing: Timing) -> bool:
    """Send ``text``, collect what follows into ``record``; returns whether a person holds the
    conversation afterwards. :raises TimeoutError: the message was never acknowledged."""
    cmid = uuid.uuid4().hex
    await chat.say(text, cmid)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timing.reply_timeout
    acked = answered = False
    retries = 0
    while True:
        waiting_first = acked and not held and not answered
        timeout = deadline - loop.time() if (not acked or waiting_first) else timing.settle
        if timeout <= 0:
            if not acked:
                raise TimeoutError(f"turn {record.number}: no ack within {timing.reply_timeout} s")
            record.answered = False
            return held
        try:
            frame = await chat.recv(timeout)
        except asyncio.TimeoutError:
            if not acked:
                raise TimeoutError(f"turn {record.number}: no ack within {timing.reply_timeout} s") from None
            if waiting_first:
                record.answered = False
            return held
        if frame.get("type") == "ack" and frame.get("client_msg_id") == cmid:
            acked = True
            continue
        if frame.get("type") == "error" and frame.get("code") == "rate_limited" and not acked:
            retries += 1
            if retries > timing.rate_limit_retries:
                raise TimeoutError(f"turn {record.number}: still rate limited after {retries - 1} resends")
            await asyncio.sleep(timing.rate_limit_pause)
            await chat.say(text, cmid)  # the same id: stored once whatever happened to the first
            deadline = loop.time() + timing.reply_timeout
            continue
        ev = _event(frame)
        if ev is None:
            continue
        record.events.append(ev)
        if ev.kind in ("message", "status"):
            answered = True
        if ev.kind == "status":
            if ev.status in HELD and not held:
                return True  # the handoff's last frame
            held = ev.status in HELD


async def _drain_into(chat: Any, record: TurnRecord, quiet: float) -> None:
    while True:
        try:
            frame = await chat.recv(quiet)
        except asyncio.TimeoutError:
            return
        ev = _event(frame)
        if ev is not None:
            record.events.append(ev)


async def play(dialogue: Dialogue, ws_url: str, changes: ChangeReader, timing: Timing) -> Transcript:
    """Play one conversation over ``ws_url`` as a new visitor; never raises (errors are recorded)."""
    from bot.client import ChatClient

    transcript = Transcript(dialogue.id)
    chat = ChatClient(ws_url, lang=dialogue.lang)
    try:
        await chat.connect()
        transcript.conversation_id = chat.conversation_id
        await chat.wait_for(lambda f: f["type"] == "status", timeout=timing.reply_timeout)  # the initial status
        seen = {row[0] for row in await changes(str(chat.conversation_id))}
        held = chat.status in HELD
        last_buttons: list[dict[str, str]] = []
        for number, turn in enumerate(dialogue.turns, start=1):
            missing = False
            if turn.is_button:
                text, missing = choose_button(turn, last_buttons)
            else:
                text = str(turn.text)
            record = TurnRecord(number, text, turn.label(), turn.confirm, missing)
            transcript.turns.append(record)
            held = await play_turn(chat, text, record, held, timing)
            if number == len(dialogue.turns):
                await _drain_into(chat, record, timing.settle)
            for row_id, kind, from_plan, to_plan in await changes(str(chat.conversation_id)):
                if row_id not in seen:
                    seen.add(row_id)
                    record.events.append(Event("change", change_kind=kind, from_plan=from_plan, to_plan=to_plan))
            offered = [ev.buttons for ev in record.events if ev.kind == "message" and ev.sender != "system"]
            last_buttons = next((b for b in reversed(offered) if b), [])
    except Exception as e:  # noqa: BLE001 - one broken conversation must not stop the evaluation
        transcript.error = f"{type(e).__name__}: {e}"
    finally:
        with contextlib.suppress(Exception):  # already gone
            await chat.close()
    return transcript


async def play_all(
    dialogues: Sequence[Dialogue], ws_url: str, changes: ChangeReader, timing: Timing, concurrency: int = 1,
    progress: Callable[[str], None] | None = None,
) -> list[Transcript]:
    """Play every conversation (at most ``concurrency`` at a time), in the order given."""
    gate = asyncio.Semaphore(max(1, concurrency))
    done = 0

    async def one(d: Dialogue) -> Transcript:
        nonlocal done
        async with gate:
            t = await play(d, ws_url, changes, timing)
        done += 1
        if progress is not None:
            verdict = "; ".join(score(d, t).failures) or "ok"
            progress(f"conversation {done}/{len(dialogues)} {d.id}: {verdict}")
        return t

    return list(await asyncio.gather(*(one(d) for d in dialogues)))


# ---------------------------------------------------------------- report

COLUMNS: tuple[tuple[str, str], ...] = (
    ("conversations", "conv"),
    ("handoff_required", "need"),
    ("handed_over_in_time", "in time"),
    ("handed_over_late", "late"),
    ("never_handed_over", "never"),
    ("bot_messages_after_handoff", "bot after"),
    ("changes_without_confirmation", "unconfirmed"),
    ("wrong_changes", "wrong"),
    ("errors", "errors"),
    ("plan_changes", "changes"),
    ("handed_over_unrequired", "extra handoff"),
    ("unanswered_turns", "unanswered"),
    ("missing_buttons", "no button"),
    ("queue_mismatches", "other queue"),
)


def format_table(by_script: dict[str, Totals], total: Totals) -> str:
    """The per-script and total counts as a text table."""
    rows = [["script", *(h for _, h in COLUMNS)]]
    for name, t in [*by_script.items(), ("total", total)]:
        rows.append([name, *(str(getattr(t, k)) for k, _ in COLUMNS)])
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True)))
        for r in rows
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _short(text: str, limit: int = 140) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def format_transcript(transcript: Transcript, s: Score) -> list[str]:
    """The transcript lines of a conversation; ``!!`` marks the ones that make it fail."""
    lines = []
    bad_bot = {(t, text) for t, text in s.bot_after_handoff}
    bad_changes = {(c.turn, c.kind, c.to_plan) for c in s.changes if not (c.confirmed and c.allowed)}
    for turn in transcript.turns:
        flags = [f for f, on in (("confirm", turn.confirm), ("button not offered", turn.button_missing),
                                 ("unanswered", not turn.answered)) if on]
        late = s.handoff_by is not None and turn.number == s.handoff_by and s.handoff in ("late", "never")
        mark = "!!" if late else "  "
        lines.append(f"{mark} {turn.number}> {_short(turn.label)}" + (f"  [{', '.join(flags)}]" if flags else ""))
        for ev in turn.events:
            if ev.kind == "message":
                mark = "!!" if ev.sender == "bot" and (turn.number, ev.text) in bad_bot else "  "
                buttons = f"  {{{' | '.join(b.get('title', '') for b in ev.buttons)}}}" if ev.buttons else ""
                lines.append(f"{mark}    {ev.sender}: {_short(ev.text)}{buttons}")
            elif ev.kind == "status":
                lines.append(f"       -- {ev.status} queue={ev.queue} reason={ev.reason}")
            elif ev.kind == "change":
                mark = "!!" if (turn.number, ev.change_kind, ev.to_plan) in bad_changes else "  "
                lines.append(f"{mark}     $ plan change recorded: {ev.change_kind} {ev.from_plan} → {ev.to_plan}")
            else:
                lines.append(f"       ! error {ev.text}")
    return lines


def report(dialogues: Sequence[Dialogue], transcripts: Sequence[Transcript]) -> tuple[str, dict[str, Any], bool]:
    """The printed report, the JSON results and whether every must-be-zero count is 0."""
    scores = [score(d, t) for d, t in zip(dialogues, transcripts, strict=True)]
    by_script, total = summarise(scores)
    out = [format_table(by_script, total), ""]
    reasons: dict[str, int] = {}
    for s in scores:
        if s.handoff_turn is not None:
            reasons[s.handoff_reason or "?"] = reasons.get(s.handoff_reason or "?", 0) + 1
    if reasons:
        ranked = sorted(reasons.items(), key=lambda kv: -kv[1])
        out.append("handoff reasons: " + ", ".join(f"{k} {v}" for k, v in ranked))
    failing = [(d, t, s) for d, t, s in zip(dialogues, transcripts, scores, strict=True) if s.failures]
    if failing:
        out.append(f"\n{len(failing)} failing conversation(s):")
        for d, t, s in failing:
            out.append(f"\n{d.id} ({d.script}) — {d.description}")
            out += [f"   * {why}" for why in s.failures]
            out += ["   " + line for line in format_transcript(t, s)]
    must = ", ".join(f"{k} = {getattr(total, k)}" for k in MUST_BE_ZERO)
    out.append(f"\n{'PASS' if total.passed else 'FAIL'}: {must}")
    results = {
        "totals": asdict(total),
        "by_script": {k: asdict(v) for k, v in by_script.items()},
        "passed": total.passed,
        "conversations": [
            {
                "id": d.id, "script": d.script, "description": d.description, "tags": list(d.tags),
                "handoff_by": d.handoff_by, "handoff": s.handoff, "handoff_turn": s.handoff_turn,
                "handoff_queue": s.handoff_queue, "handoff_reason": s.handoff_reason,
                "expected_queue": d.queue, "failures": s.failures,
                "transcript": asdict(t),
            }
            for d, t, s in zip(dialogues, transcripts, scores, strict=True)
        ],
    }
    return "\n".join(out), results, total.passed


# ---------------------------------------------------------------- command line


def _progress(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _select(dialogues: list[Dialogue], only: list[str] | None, scripts: list[str] | None) -> list[Dialogue]:
    from fnmatch import fnmatch

    out = [d for d in dialogues if not scripts or d.script in scripts]
    if only:
        out = [d for d in out if any(fnmatch(d.id, pattern) for pattern in only)]
    return out


async def _run(args: argparse.Namespace, dialogues: list[Dialogue], ws_url: str, database_url: str) -> list[Transcript]:
    timing = Timing(settle=args.settle, reply_timeout=args.reply_timeout)
    reader = StoreChanges(database_url)
    try:
        return await play_all(dialogues, ws_url, reader, timing, args.concurrency, _progress)
    finally:
        reader.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bot eval-dialogue", description=__doc__.splitlines()[0])
    parser.add_argument("--dialogues", type=Path, default=DIALOGUES_DIR, help="folder of <script>.yml files")
    parser.add_argument("--script", action="append", choices=SCRIPTS, help="only these scripts (repeatable)")
    parser.add_argument("--only", action="append", help="only conversations whose id matches (glob, repeatable)")
    parser.add_argument("--url", help="a running hub's ws://…/ws/chat (default: start the real system)")
    parser.add_argument("--database-url", help="that hub's database (required with --url)")
    parser.add_argument("--model", type=Path, help="model archive (default: HUMANLINE_MODEL, else the current one)")
    parser.add_argument("--brain-timeout", type=float, default=10.0,
                        help="HUMANLINE_BRAIN_TIMEOUT of the started hub (default 10 s: a busy machine's slowness "
                             "should not pass for a handoff)")
    parser.add_argument("--concurrency", type=int, default=1, help="conversations played at once")
    parser.add_argument("--settle", type=float, default=Timing.settle, help="quiet seconds that end a turn")
    parser.add_argument("--reply-timeout", type=float, default=Timing.reply_timeout)
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    dialogues = _select(load_dialogues(args.dialogues), args.only, args.script)
    if not dialogues:
        print("no conversation selected", file=sys.stderr)
        return 2
    started = time.monotonic()
    if args.url:
        if not args.database_url:
            parser.error("--url needs --database-url (plan changes are read from the store)")
        transcripts = asyncio.run(_run(args, dialogues, args.url, args.database_url))
        where = args.url
    else:
        model = _model(args.model)
        if model is None:
            print("no trained model: run `make train` (or pass --model / HUMANLINE_MODEL)", file=sys.stderr)
            return 2
        from bot.live_system import start_live_system

        _progress(f"starting the action server and the hub with {model} (a fresh SQLite database)…")
        with tempfile.TemporaryDirectory(prefix="dialogue-eval-") as tmp, start_live_system(
            Path(tmp), model, [], hub_env={"HUMANLINE_BRAIN_TIMEOUT": str(args.brain_timeout)}
        ) as live:
            _progress(f"hub ready at {live.url}; playing {len(dialogues)} conversations")
            transcripts = asyncio.run(_run(args, dialogues, live.ws_url, live.database_url))
        where = f"{model.name}"
    text, results, passed = report(dialogues, transcripts)
    print(text)
    results["run"] = {"against": where, "seconds": round(time.monotonic() - started, 1),
                      "settle": args.settle, "reply_timeout": args.reply_timeout, "concurrency": args.concurrency,
                      "brain_timeout": None if args.url else args.brain_timeout}
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps(results, ensure_ascii=False, indent=2), encoding="utf-8")
    print(f"results written to {args.results}")
    return 0 if passed else 1


def _model(given: Path | None) -> Path | None:
    from bot.settings import model_path

    if given is not None:
        return given if given.is_file() else None
    if model_path():
        env = Path(str(model_path()))
        return env if env.is_file() else None
    from bot.training import current_model

    return current_model()


if __name__ == "__main__":
    sys.exit(main())
