"""Canned replies: texts an agent inserts by a shortcut, and the reply-script check.

A canned reply has a ``shortcut`` (``refund-eta``), a language (``en``, ``zh-Hans``, ``zh-Hant``;
one reply per shortcut and language), a ``title`` and a ``body`` that may hold the placeholders of
:data:`PLACEHOLDERS` — ``{customer_name}``, ``{case_number}``, ``{queue}``, ``{eta}``,
``{agent_name}``; ``{{`` and ``}}`` stand for literal braces. Supervisors create, edit and delete
them (every change is audited); every agent lists them and renders one for a conversation.

Rendering fills the placeholders from the conversation (its case number, the display name of its
queue in the reply's language, the time the case's next update is due) and the agent. A value
that is not known — the store keeps no customer name, a conversation may have no case — becomes
:func:`marker` (``[[fill in: case_number]]``), never an empty string: the agent must see it and
fill it in, and :func:`unfilled` finds what is left.

:func:`script_mismatch` says whether a reply is written in another script than the customer's
(English, Simplified or Traditional Chinese, as :func:`bot.i18n.script_signal` tells them
apart); the hub answers it for the console before a reply is sent (docs/hub.md).
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from bot.i18n import LANGS, reads_the_same_in_both_scripts, script_signal
from bot.services.audit import record
from bot.services.conversations import ConversationService
from bot.services.queues import QueueService
from bot.store.db import Database
from bot.store.models import CannedReply, utcnow

#: the placeholders a body may use, with what each is filled with
PLACEHOLDERS: dict[str, str] = {
    "customer_name": "the customer's name (not stored: always left for the agent to fill in)",
    "case_number": "the number of the conversation's case",
    "queue": "the display name of the conversation's queue, in the reply's language",
    "eta": "when the case's next update is due (its follow-up once resolved), in UTC",
    "agent_name": "the display name of the agent inserting the reply",
}
SHORTCUT = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")
MAX_TITLE = 128
MAX_BODY = 4000
_MARKER = re.compile(r"\[\[fill in: ([a-z_]+)\]\]")


class CannedError(ValueError):
    """A canned reply that cannot be saved or found; ``code`` names the problem for clients."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


def marker(name: str) -> str:
    """What a placeholder without a value renders as: visible, and found by :func:`unfilled`."""
    return f"[[fill in: {name}]]"


def unfilled(text: str) -> list[str]:
    """The placeholders still left as :func:`marker` in ``text``, in order, once each."""
    return list(dict.fromkeys(_MARKER.findall(text)))


def placeholders(body: str) -> list[str]:
    """The placeholders ``body`` uses, in order, once each.

    :raises CannedError: ``bad_template`` (unbalanced braces, a positional ``{}``, a format spec
        or conversion) or ``unknown_placeholder``.
    """
    names: list[str] = []
    try:
        parsed = list(string.Formatter().parse(body))
    except ValueError as e:
        raise CannedError("bad_template", f"the body has unbalanced braces ({e}); write {{{{ or }}}} for a "
                                          "literal brace") from None
    for _literal, field, spec, conversion in parsed:
        if field is None:
            continue
        if field == "" or spec or conversion:
            raise CannedError("bad_template", "placeholders are written {name}, e.g. {case_number}, with no "
                                              "format or conversion")
        if field not in PLACEHOLDERS:
            raise CannedError("unknown_placeholder", f"unknown placeholder {{{field}}}; use one of "
                                                     + ", ".join("{" + p + "}" for p in PLACEHOLDERS))
        if field not in names:
            names.append(field)
    return names


def fill(body: str, values: dict[str, str | None]) -> str:
    """``body`` with each placeholder replaced by its value, or by :func:`marker` when the value is
    missing or blank. ``body`` must be valid (:func:`placeholders`)."""
    out: list[str] = []
    for literal, field, _spec, _conversion in string.Formatter().parse(body):
        out.append(literal)
        if field is not None:
            value = values.get(field)
            out.append(value if value is not None and value.strip() else marker(field))
    return "".join(out)


@dataclass(frozen=True)
class ScriptMismatch:
    """A reply written in ``reply_script`` to a customer who writes in ``customer_script``."""

    reply_script: str
    customer_script: str

    def to_dict(self) -> dict[str, str]:
        return {"reply_script": self.reply_script, "customer_script": self.customer_script}


def script_mismatch(reply: str, customer_script: str | None) -> ScriptMismatch | None:
    """Whether ``reply`` is in another script than the customer's (pure).

    ``None`` when the customer's script is not known yet, when the reply carries no script of its
    own (a case number, digits, emoji), and for Chinese that reads the same in Simplified and
    Traditional ("你好") sent to a Chinese customer of either script. The scripts are those of
    :func:`bot.i18n.script_signal`, which also chooses the bot's reply language.
    """
    if customer_script not in LANGS:
        return None
    reply = _MARKER.sub(" ", reply)
    signal = script_signal(reply.strip())
    if signal is None or signal == customer_script:
        return None
    if customer_script.startswith("zh-") and signal.startswith("zh-") and reads_the_same_in_both_scripts(reply):
        return None
    return ScriptMismatch(signal, customer_script)


def fmt_time(value: datetime | None) -> str | None:
    """A time as the customer reads it in a reply (UTC, minutes)."""
    return value.strftime("%Y-%m-%d %H:%M UTC") if value else None


def _iso(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


def _view(r: CannedReply) -> dict[str, Any]:
    return {
        "id": r.id, "shortcut": r.shortcut, "lang": r.lang, "title": r.title, "body": r.body,
        "placeholders": placeholders(r.body), "updated_by": r.updated_by, "updated_at": r.updated_at.isoformat(),
    }


#: replies the demo database starts with (``python -m bot serve`` on an empty SQLite database)
DEFAULTS: tuple[tuple[str, str, str, str], ...] = (
    ("hello", "en", "Greeting", "Hello {customer_name}, I am {agent_name} from {queue}. I have your case "
                                "{case_number} in front of me."),
    ("hello", "zh-Hans", "问候", "{customer_name}您好，我是{queue}的{agent_name}，您的案件 {case_number} 由我跟进。"),
    ("hello", "zh-Hant", "問候", "{customer_name}您好，我是{queue}的{agent_name}，您的案件 {case_number} 由我跟進。"),
    ("update", "en", "Next update", "Your case {case_number} is being handled by {queue}. You will hear from us "
                                    "by {eta} at the latest."),
    ("update", "zh-Hans", "下次进展", "您的案件 {case_number} 正由{queue}处理，我们最迟会在 {eta} 前给您答复。"),
    ("update", "zh-Hant", "下次進展", "您的案件 {case_number} 正由{queue}處理，我們最遲會在 {eta} 前給您回覆。"),
)


class CannedService:
    """Canned replies over one :class:`Database`; rendering reads the conversation through
    :class:`ConversationService` and queue names through :class:`QueueService`."""

    def __init__(self, db: Database, conversations: ConversationService, queues: QueueService):
        self.db = db
        self.conversations = conversations
        self.queues = queues

    # ---- management (supervisors) ---------------------------------------------------------

    @staticmethod
    def _check(shortcut: Any, lang: Any, title: Any, body: Any) -> tuple[str, str, str, str]:
        if not isinstance(shortcut, str) or not SHORTCUT.match(shortcut.strip().lower()):
            raise CannedError("invalid_shortcut", "the shortcut is 1 to 32 lower-case letters, digits, - or _, "
                                                  "starting with a letter or digit")
        if lang not in LANGS:
            raise CannedError("invalid_lang", f"lang must be one of {', '.join(LANGS)}")
        if not isinstance(body, str) or not body.strip():
            raise CannedError("empty_body", "the reply's text must not be empty")
        if len(body) > MAX_BODY:
            raise CannedError("body_too_long", f"the reply's text is limited to {MAX_BODY} characters")
        if title is not None and not isinstance(title, str):
            raise CannedError("invalid_title", "the title must be text")
        placeholders(body)
        shortcut = shortcut.strip().lower()
        title = (title or "").strip()[:MAX_TITLE] or shortcut
        return shortcut, str(lang), title, body.strip()

    def create(self, actor: str, shortcut: Any, lang: Any, body: Any, title: Any = None) -> dict[str, Any]:
        """A new canned reply (audited as ``canned_created``).

        :raises CannedError: invalid fields, or ``duplicate_shortcut`` for a shortcut the language
            already has.
        """
        shortcut, lang, title, body = self._check(shortcut, lang, title, body)
        try:
            with self.db.session() as s:
                self._unique(s, shortcut, lang, None)
                now = utcnow()
                r = CannedReply(shortcut=shortcut, lang=lang, title=title, body=body, created_by=actor,
                                updated_by=actor, created_at=now, updated_at=now)
                s.add(r)
                s.flush()
                record(s, actor, "canned_created", f"canned:{r.id}", {"shortcut": shortcut, "lang": lang})
                return _view(r)
        except IntegrityError:  # a concurrent create of the same shortcut won
            raise self._duplicate(shortcut, lang) from None

    def update(self, actor: str, reply_id: int, *, shortcut: Any = None, lang: Any = None, body: Any = None,
               title: Any = None) -> dict[str, Any]:
        """Change a canned reply; fields left ``None`` keep their value (audited as ``canned_updated``).

        :raises CannedError: ``not_found``, invalid fields or ``duplicate_shortcut``.
        """
        new: tuple[str, str, str, str] | None = None
        try:
            with self.db.session() as s:
                r = s.get(CannedReply, reply_id)
                if r is None:
                    raise CannedError("not_found", "no such canned reply")
                new = self._check(r.shortcut if shortcut is None else shortcut, r.lang if lang is None else lang,
                                  r.title if title is None else title, r.body if body is None else body)
                self._unique(s, new[0], new[1], r.id)
                r.shortcut, r.lang, r.title, r.body = new
                r.updated_by, r.updated_at = actor, utcnow()
                s.flush()
                record(s, actor, "canned_updated", f"canned:{r.id}", {"shortcut": r.shortcut, "lang": r.lang})
                return _view(r)
        except IntegrityError:  # a concurrent save took the shortcut in that language
            assert new is not None
            raise self._duplicate(new[0], new[1]) from None

    def delete(self, actor: str, reply_id: int) -> dict[str, Any]:
        """Delete a canned reply (audited as ``canned_deleted``); what it was.

        :raises CannedError: ``not_found``.
        """
        with self.db.session() as s:
            r = s.get(CannedReply, reply_id)
            if r is None:
                raise CannedError("not_found", "no such canned reply")
            view = _view(r)
            s.delete(r)
            record(s, actor, "canned_deleted", f"canned:{reply_id}", {"shortcut": r.shortcut, "lang": r.lang})
            return view

    @staticmethod
    def _duplicate(shortcut: str, lang: str) -> CannedError:
        return CannedError("duplicate_shortcut", f"the shortcut {shortcut!r} already has a {lang} reply")

    def _unique(self, s: Any, shortcut: str, lang: str, own_id: int | None) -> None:
        other = s.execute(
            select(CannedReply.id).where(CannedReply.shortcut == shortcut, CannedReply.lang == lang)
        ).scalar_one_or_none()
        if other is not None and other != own_id:
            raise self._duplicate(shortcut, lang)

    def seed_defaults(self, actor: str = "demo") -> int:
        """Add :data:`DEFAULTS` to an empty table (the demo database); how many were added."""
        with self.db.session() as s:
            if s.execute(select(CannedReply.id).limit(1)).first() is not None:
                return 0
        for shortcut, lang, title, body in DEFAULTS:
            self.create(actor, shortcut, lang, body, title)
        return len(DEFAULTS)

    # ---- use (every agent) ----------------------------------------------------------------

    def replies(self, lang: str | None = None) -> list[dict[str, Any]]:
        """Every canned reply (of ``lang`` only, when given), by shortcut then language."""
        with self.db.session() as s:
            q = select(CannedReply).order_by(CannedReply.shortcut, CannedReply.lang)
            if lang is not None:
                q = q.where(CannedReply.lang == lang)
            return [_view(r) for r in s.execute(q).scalars()]

    def get(self, reply_id: int) -> dict[str, Any] | None:
        with self.db.session() as s:
            r = s.get(CannedReply, reply_id)
            return _view(r) if r is not None else None

    def values(self, conversation_id: str, lang: str, agent_name: str | None = None) -> dict[str, str | None]:
        """The placeholder values of a conversation, in ``lang`` (``None``: not known).

        :raises CannedError: ``not_found`` for an unknown conversation.
        """
        conv = self.conversations.get(conversation_id)
        if conv is None:
            raise CannedError("not_found", "no such conversation")
        case = self.conversations.case_details(conv.case_id) or {}
        due = _iso(case.get("follow_up_at")) if case.get("resolved_at") else _iso(case.get("next_update_due_at"))
        queue = conv.queue or case.get("queue")
        return {
            "customer_name": None,
            "case_number": case.get("number"),
            "queue": self.queues.display(queue, lang) if queue else None,
            "eta": fmt_time(due),
            "agent_name": agent_name,
        }

    def for_conversation(self, conversation_id: str, agent_name: str | None = None) -> dict[str, Any]:
        """What the console's picker shows: the customer's script and every canned reply rendered
        for the conversation (``text``, and ``missing``: the placeholders left to fill in)."""
        conv = self.conversations.get(conversation_id)
        if conv is None:
            raise CannedError("not_found", "no such conversation")
        cache: dict[str, dict[str, str | None]] = {}
        replies = []
        for r in self.replies():
            values = cache.get(r["lang"]) or cache.setdefault(r["lang"], self.values(conversation_id, r["lang"],
                                                                                     agent_name))
            text = fill(r["body"], values)
            replies.append({**r, "text": text, "missing": unfilled(text)})
        return {"conversation_id": conversation_id, "customer_lang": conv.lang, "replies": replies}

    def render(self, conversation_id: str, *, reply_id: int | None = None, shortcut: str | None = None,
               lang: str | None = None, agent_name: str | None = None) -> dict[str, Any]:
        """One canned reply rendered for a conversation, chosen by id or by shortcut (in ``lang``,
        else the customer's script, else English): ``{reply, text, missing, mismatch}``.

        :raises CannedError: ``not_found``.
        """
        conv = self.conversations.get(conversation_id)
        if conv is None:
            raise CannedError("not_found", "no such conversation")
        with self.db.session() as s:
            if reply_id is not None:
                r = s.get(CannedReply, reply_id)
            else:
                want = lang or conv.lang or "en"
                r = s.execute(select(CannedReply).where(
                    CannedReply.shortcut == (shortcut or "").strip().lower(), CannedReply.lang == want
                )).scalar_one_or_none()
            if r is None:
                raise CannedError("not_found", "no such canned reply")
            view = _view(r)
        text = fill(view["body"], self.values(conversation_id, view["lang"], agent_name))
        mismatch = script_mismatch(text, conv.lang)
        return {"reply": view, "text": text, "missing": unfilled(text),
                "mismatch": mismatch.to_dict() if mismatch else None}

    def check(self, conversation_id: str, text: str) -> dict[str, Any]:
        """The script check of a reply about to be sent: ``{conversation_id, text, customer_lang,
        reply_lang, mismatch, missing}`` (``mismatch``: a :class:`ScriptMismatch` as a dict, or ``None``).

        :raises CannedError: ``not_found``.
        """
        conv = self.conversations.get(conversation_id)
        if conv is None:
            raise CannedError("not_found", "no such conversation")
        mismatch = script_mismatch(text, conv.lang)
        return {"conversation_id": conversation_id, "text": text, "customer_lang": conv.lang,
                "reply_lang": script_signal(_MARKER.sub(" ", text).strip()),
                "mismatch": mismatch.to_dict() if mismatch else None, "missing": unfilled(text)}
