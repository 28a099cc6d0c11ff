"""The handoff guard: the pure decision that guarantees a human takes over (promises P1 and P2).

The guard sits outside the model. The hub consults it before and after **every** brain call::

    state = GuardState.from_json(conversation.guard_state)
    decision = guard.before_turn(state, text)            # 1. may the bot take this message?
    if not decision.handoff:
        outcome = <call the brain, bounded by config.brain_timeout_s>
        state = GuardState.from_json(<reload conversation.guard_state>)
        decision = guard.after_turn(state, outcome)       # 2. may these replies go out?
    <persist decision.state with the conversation, in the same transaction as the messages>
    <send decision.deliver; if decision.new_handoff: queue the conversation for decision.reason>

and calls :meth:`HandoffGuard.hand_back` when an agent explicitly returns the conversation.

The guarantee, stated precisely:

* **Turn budget.** Between two hand-backs the bot answers at most ``N - 1`` customer turns it did
  not resolve (``N = GuardConfig.max_unresolved_turns``). The ``N``-th unresolved turn is the last
  one the brain ever sees: its decision hands off (``reason="turn_budget"``) and the hub answers
  it with its own handoff notice instead of the bot's reply. So the bot handles at most ``N``
  unresolved turns, and the next customer message — turn ``N + 1`` — is never answered by the
  bot: the conversation is already queued for (or owned by) a human when it arrives.
* **Immediate handoff**, whatever the model predicts, on danger (a threat, harassment or stalking,
  violence, self-harm, a medical emergency — :func:`bot.signals.read_signals` in :meth:`before_turn`,
  reason ``danger``), an explicit request for a person (the ``request_human`` intent, or the keyword
  rule of :func:`asks_for_human` in :meth:`before_turn`), frustration (the ``express_frustration``
  intent, or a frustration score of the message at or above ``GuardConfig.frustration_threshold``,
  whatever the intent), the same unresolved request a second time, a second NLU fallback, a reply already
  sent in this conversation, a brain/action/database error or timeout, an action's own handoff
  request, and an unresolved turn for which the brain produced nothing to say.
* **Silence once handed off.** A decision that hands off delivers none of the turn's bot replies
  (``handoff=True`` always comes with ``deliver=()``); once :attr:`GuardState.handed_off` is set,
  :meth:`HandoffGuard.before_turn` refuses every message and :meth:`HandoffGuard.after_turn`
  delivers nothing — the latter covers a reply generated while the conversation was handed off
  by a concurrent message (P2 is checked after the reply is generated, not only before).
* **No canned loops.** No reply text is delivered twice in a conversation (texts are compared
  after :func:`normalize_reply`), across hand-backs too.
* **"Resolved" means resolved.** Whether a turn spends the budget is decided in one place,
  :meth:`HandoffGuard.resolves` (with its per-turn half, :func:`turn_resolves`, used by the brain):
  only a completed action or small talk answered as small talk resolves, and the brain's claim is
  checked against the conversation — see the rule in ``docs/guard.md``.

The module is pure: no I/O, no clock, no randomness, no Rasa import. Every value is a frozen
dataclass; methods return new values and never mutate their arguments. See ``docs/guard.md``.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Final

from bot.signals import Signals, read_signals

__all__ = [
    "ACTION_REQUEST",
    "BRAIN_ERROR",
    "CUSTOMER_REQUEST",
    "DANGER",
    "ERROR_KINDS",
    "FRUSTRATION",
    "REASONS",
    "REPEATED_FALLBACK",
    "REPEATED_REPLY",
    "REPEATED_REQUEST",
    "SMALL_TALK_ANSWERS",
    "TIMEOUT",
    "TURN_BUDGET",
    "Decision",
    "GuardConfig",
    "GuardState",
    "HandoffGuard",
    "TurnOutcome",
    "asks_for_human",
    "normalize_reply",
    "turn_resolves",
]

# ---- stable strings -------------------------------------------------------------------------

DANGER: Final = "danger"
"""The customer reports a threat, harassment or stalking, violence, self-harm or a medical
emergency (:attr:`bot.signals.Signals.danger`): a person at once, with priority."""
CUSTOMER_REQUEST: Final = "customer_request"
"""The customer asked for a person (``request_human`` intent or the keyword rule)."""
FRUSTRATION: Final = "frustration"
"""The customer is angry or frustrated: the ``express_frustration`` intent, or the message's
frustration score (:func:`bot.signals.read_signals`) reached ``GuardConfig.frustration_threshold``."""
REPEATED_REQUEST: Final = "repeated_request"
"""The same request came a second time and is still unresolved."""
REPEATED_FALLBACK: Final = "repeated_fallback"
"""NLU fell back (``nlu_fallback`` or ``out_of_scope``) a second time."""
REPEATED_REPLY: Final = "repeated_reply"
"""The bot was about to send a reply already sent in this conversation."""
TURN_BUDGET: Final = "turn_budget"
"""The ``N``-th unresolved turn (``GuardConfig.max_unresolved_turns``)."""
BRAIN_ERROR: Final = "brain_error"
"""The model, the action server or the database failed, or the brain produced nothing to say."""
TIMEOUT: Final = "timeout"
"""The brain was slower than ``GuardConfig.brain_timeout_s``."""
ACTION_REQUEST: Final = "action_request"
"""An action asked for a human (``action_handoff``, slots ``handoff_queue``/``handoff_reason``)."""

REASONS: Final[tuple[str, ...]] = (
    DANGER,
    CUSTOMER_REQUEST,
    FRUSTRATION,
    REPEATED_REQUEST,
    REPEATED_FALLBACK,
    REPEATED_REPLY,
    TURN_BUDGET,
    BRAIN_ERROR,
    TIMEOUT,
    ACTION_REQUEST,
)
"""Every value :attr:`Decision.reason` can take for a new handoff, in precedence order."""

ERROR_KINDS: Final[tuple[str, ...]] = ("timeout", "brain_error", "action_error", "db_error")
"""The values the hub puts in :attr:`TurnOutcome.error`. Any other non-empty string is accepted
and treated like ``"brain_error"``."""

MAX_FALLBACKS: Final = 2
"""The fallback that hands off: the second one."""

SMALL_TALK_ANSWERS: Final[Mapping[str, str]] = {
    "greet": "utter_greet",
    "goodbye": "utter_goodbye",
    "thank": "utter_thank",
    "bot_challenge": "utter_iamabot",
}
"""Small-talk intents and the response that answers each: the only small talk that resolves a turn.
``affirm`` and ``deny`` are not small talk: they answer a question or they answer nothing."""


# ---- values ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class GuardConfig:
    """Tunables of :class:`HandoffGuard`. Immutable; validated on construction.

    Attributes:
        max_unresolved_turns: ``N``, the turn budget: the ``N``-th customer turn the bot does not
            resolve hands off (and the bot never sees turn ``N + 1``). At least 1. With ``N = 1``
            the first unresolved turn hands off.
        brain_timeout_s: How long the hub waits for the brain before it reports
            ``TurnOutcome(error="timeout")``. The guard never reads a clock; it only carries
            this value so that hub and guard are configured in one place.
        request_human_intents: Intents that are an explicit request for a person.
        frustration_intents: Intents that mean the customer is angry or frustrated.
        fallback_intents: Intents that mean NLU did not understand; the second one hands off.
        repeatable_intents: Intents that are answers, not requests (``inform`` fills a form slot
            by slot); they may come unresolved any number of times without counting as a
            repeated request. They still consume the turn budget when unresolved.
        keyword_rule: Apply :func:`asks_for_human` in :meth:`HandoffGuard.before_turn`.
        signals: Read frustration and danger (:func:`bot.signals.read_signals`) in
            :meth:`HandoffGuard.before_turn`.
        frustration_threshold: The frustration score at which :meth:`HandoffGuard.before_turn`
            hands off (``0.6``: one strong word or anger emoji, or two weaker cues). In ``(0, 1]``.
        small_talk_intents: Intents that resolve a turn as small talk (the brain's ``resolved``
            for them means "answered with the small-talk response").
        answer_intents: Intents that answer a question (``affirm``, ``deny``): they resolve a turn
            only when the previous turn left a question open (was unresolved).
        max_small_talk_turns: How many small-talk turns in a row, without a real resolution between
            them, count as resolved; later ones are unresolved. At least 0. A brain that answers
            everything as small talk still reaches the turn budget.

    Raises:
        ValueError: ``max_unresolved_turns`` is not an integer ≥ 1, or ``brain_timeout_s`` is
            not a positive finite number.
    """

    max_unresolved_turns: int = 3
    brain_timeout_s: float = 3.0
    request_human_intents: frozenset[str] = frozenset({"request_human"})
    frustration_intents: frozenset[str] = frozenset({"express_frustration"})
    fallback_intents: frozenset[str] = frozenset({"nlu_fallback", "out_of_scope"})
    repeatable_intents: frozenset[str] = frozenset({"inform", "affirm", "deny"})
    keyword_rule: bool = True
    signals: bool = True
    frustration_threshold: float = 0.6
    small_talk_intents: frozenset[str] = frozenset(SMALL_TALK_ANSWERS)
    answer_intents: frozenset[str] = frozenset({"affirm", "deny"})
    max_small_talk_turns: int = 3

    def __post_init__(self) -> None:
        n = self.max_unresolved_turns
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"max_unresolved_turns must be an integer >= 1, not {n!r}")
        t = self.brain_timeout_s
        if isinstance(t, bool) or not isinstance(t, int | float) or not 0 < t < float("inf"):
            raise ValueError(f"brain_timeout_s must be a positive number of seconds, not {t!r}")
        f = self.frustration_threshold
        if isinstance(f, bool) or not isinstance(f, int | float) or not 0 < f <= 1:
            raise ValueError(f"frustration_threshold must be in (0, 1], not {f!r}")
        m = self.max_small_talk_turns
        if isinstance(m, bool) or not isinstance(m, int) or m < 0:
            raise ValueError(f"max_small_talk_turns must be an integer >= 0, not {m!r}")
        for name in (
            "request_human_intents", "frustration_intents", "fallback_intents", "repeatable_intents",
            "small_talk_intents", "answer_intents",
        ):
            value = getattr(self, name)
            if isinstance(value, str):
                raise ValueError(f"{name} must be a collection of intent names, not a string")
            object.__setattr__(self, name, frozenset(value))


@dataclass(frozen=True)
class GuardState:
    """What the guard remembers about one conversation; persisted in ``conversations.guard_state``.

    Use :meth:`to_json` and :meth:`from_json` to store and load it. A conversation without a
    stored state starts from ``GuardState()``.

    Attributes:
        unresolved_turns: Customer turns the brain handled without resolving them since the
            conversation started or was last handed back (errors count as unresolved).
        fallbacks: Turns whose intent was a fallback intent, over the same span.
        unresolved_intents: Intents of unresolved turns, in order of first occurrence, over the
            same span (fallback and repeatable intents are not recorded).
        sent_replies: Every reply text the guard let through in this conversation, normalised by
            :func:`normalize_reply`. Kept across hand-backs.
        handed_off: A human is involved: the bot takes no message and sends nothing until
            :meth:`HandoffGuard.hand_back`.
        handoff_reason: Why the conversation was handed off (one of :data:`REASONS`), while
            :attr:`handed_off` is set. An addition to the architecture contract.
        last_intent: The intent of the previous turn the brain handled since the start or the
            last hand-back; ``""`` when that intent was unknown, ``None`` before the first turn.
        last_resolved: The brain claimed that previous turn resolved (:attr:`TurnOutcome.resolved`,
            without an error) — whether or not the guard counted it: a re-ask of a re-ask is
            still a re-ask, and an answer after a claimed resolution answers no open question.
        small_talk_turns: Small-talk turns counted as resolved since the last turn that an action
            resolved (or the start, or the last hand-back).
    """

    unresolved_turns: int = 0
    fallbacks: int = 0
    unresolved_intents: tuple[str, ...] = ()
    sent_replies: tuple[str, ...] = ()
    handed_off: bool = False
    handoff_reason: str | None = None
    last_intent: str | None = None
    last_resolved: bool = False
    small_talk_turns: int = 0

    def to_json(self) -> dict[str, object]:
        """The state as a JSON-compatible dict (tuples become lists).

        ``GuardState.from_json(state.to_json()) == state`` for every state, also through
        ``json.dumps``/``json.loads``.
        """
        return {
            "unresolved_turns": self.unresolved_turns,
            "fallbacks": self.fallbacks,
            "unresolved_intents": list(self.unresolved_intents),
            "sent_replies": list(self.sent_replies),
            "handed_off": self.handed_off,
            "handoff_reason": self.handoff_reason,
            "last_intent": self.last_intent,
            "last_resolved": self.last_resolved,
            "small_talk_turns": self.small_talk_turns,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, object] | str | bytes | None) -> GuardState:
        """Load a state written by :meth:`to_json`, possibly by an older or newer version.

        Args:
            data: The stored value: a mapping, its JSON text, or ``None`` (no state stored yet,
                which gives ``GuardState()``).

        Returns:
            The state. Missing keys take their defaults and unknown keys are ignored, so a
            state written by another version of this module loads (forward compatibility).

        Raises:
            ValueError: ``data`` is not a JSON object, or a known key holds a value of the wrong
                type (a negative or non-integer counter, a list holding a non-string…). The guard
                does not guess: a hub that cannot load the state must treat it as a database
                error, which hands the conversation off.
        """
        loaded: object = data
        if isinstance(loaded, str | bytes | bytearray):
            try:
                loaded = json.loads(loaded)
            except ValueError as exc:
                raise ValueError(f"guard state is not valid JSON: {exc}") from None
        if loaded is None:
            return cls()
        if not isinstance(loaded, Mapping):
            raise ValueError(f"guard state must be a JSON object, not {type(loaded).__name__}")
        default = cls()
        return cls(
            unresolved_turns=_count(loaded, "unresolved_turns", default.unresolved_turns),
            fallbacks=_count(loaded, "fallbacks", default.fallbacks),
            unresolved_intents=_texts(loaded, "unresolved_intents", default.unresolved_intents),
            sent_replies=_texts(loaded, "sent_replies", default.sent_replies),
            handed_off=_flag(loaded, "handed_off", default.handed_off),
            handoff_reason=_text(loaded, "handoff_reason", default.handoff_reason),
            last_intent=_text(loaded, "last_intent", default.last_intent),
            last_resolved=_flag(loaded, "last_resolved", default.last_resolved),
            small_talk_turns=_count(loaded, "small_talk_turns", default.small_talk_turns),
        )


# The typed readers of :meth:`GuardState.from_json`: a missing key gives ``default``, a value of
# the wrong type is a ValueError (the guard does not guess).


def _count(data: Mapping[str, object], key: str, default: int) -> int:
    value = data.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"guard state {key} must be a non-negative integer, not {value!r}")
    return value


def _texts(data: Mapping[str, object], key: str, default: tuple[str, ...]) -> tuple[str, ...]:
    value = data.get(key, default)
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"guard state {key} must be a list of strings, not {value!r}")
    return tuple(str(v) for v in value)


def _flag(data: Mapping[str, object], key: str, default: bool) -> bool:
    value = data.get(key, default)
    if not isinstance(value, bool):
        raise ValueError(f"guard state {key} must be a boolean, not {value!r}")
    return value


def _text(data: Mapping[str, object], key: str, default: str | None) -> str | None:
    value = data.get(key, default)
    if value is not None and not isinstance(value, str):
        raise ValueError(f"guard state {key} must be a string or null, not {value!r}")
    return value


@dataclass(frozen=True)
class TurnOutcome:
    """What the brain did for one customer message, as the hub reports it to the guard.

    Attributes:
        intent: The NLU intent, or ``None`` when unknown (error, remote brain without it).
        confidence: Its confidence; informative only (``nlu_fallback`` already encodes a low one).
        replies: The bot's reply texts for this turn, in order. A list is accepted and stored as
            a tuple; a single string is taken as one reply.
        resolved: The brain's claim, by :func:`turn_resolves`: a resolving action completed
            during the turn (slot ``resolution`` set), or small talk got its small-talk answer.
            The guard checks the claim against the conversation (:meth:`HandoffGuard.resolves`).
        handoff_requested: An action asked for a human this turn (``action_handoff``).
        handoff_queue: The queue the action asked for, passed on in :attr:`Decision.queue`.
        error: Set when the turn failed: ``"timeout"``, ``"brain_error"``, ``"action_error"``
            or ``"db_error"`` (see :data:`ERROR_KINDS`). Any error hands off.
    """

    intent: str | None
    confidence: float | None
    replies: tuple[str, ...]
    resolved: bool
    handoff_requested: bool = False
    handoff_queue: str | None = None
    error: str | None = None

    def __post_init__(self) -> None:
        # A caller may pass one string or a list, whatever the annotation says: normalise.
        replies: str | Iterable[str] = self.replies
        object.__setattr__(self, "replies", (replies,) if isinstance(replies, str) else tuple(replies))

    @classmethod
    def failed(cls, error: str, *, intent: str | None = None, replies: tuple[str, ...] = ()) -> TurnOutcome:
        """The outcome of a turn that failed with ``error`` (one of :data:`ERROR_KINDS`).

        Example: ``TurnOutcome.failed("timeout")`` when the brain call exceeded
        ``GuardConfig.brain_timeout_s``.
        """
        return cls(intent=intent, confidence=None, replies=replies, resolved=False, error=error or "brain_error")


@dataclass(frozen=True)
class Decision:
    """What the hub must do after :meth:`HandoffGuard.before_turn` or :meth:`HandoffGuard.after_turn`.

    Attributes:
        deliver: The bot reply texts to send to the customer, in order (original text, not
            normalised). Empty when :attr:`handoff` is set — except for a new ``action_request``
            handoff of a resolved turn, which carries the action's confirmation (the case number
            and queue) — and always empty from :meth:`~HandoffGuard.before_turn`.
        handoff: The conversation is (now, or already) with a human: the bot must not take the
            message (``before_turn``) or speak (``after_turn``).
        reason: One of :data:`REASONS` when :attr:`handoff` is set — why this decision hands off,
            or, for a conversation already handed off, the stored :attr:`GuardState.handoff_reason`
            (``None`` only for a state stored without one). ``None`` when the bot goes on.
        state: The state to persist with the conversation. Always persist it, also when nothing
            else changed.
        new_handoff: This decision is the one that hands off: the hub must queue the conversation
            now (with :attr:`reason` and :attr:`queue`) and tell the customer. ``False`` when the
            conversation was already handed off. Addition to the architecture contract.
        queue: The specialist queue an action asked for (:attr:`TurnOutcome.handoff_queue`), if any.
        withheld: The bot replies of this turn that were *not* delivered; never to be shown to
            the customer. The hub drops them (it neither sends nor stores them).
        signals: The frustration and danger read from the message by
            :meth:`~HandoffGuard.before_turn` (``None`` from :meth:`~HandoffGuard.after_turn`, or
            when ``config.signals`` is off). The hub routes a ``danger`` handoff by it.
    """

    deliver: tuple[str, ...]
    handoff: bool
    reason: str | None
    state: GuardState
    new_handoff: bool = False
    queue: str | None = None
    withheld: tuple[str, ...] = field(default=())
    signals: Signals | None = None


# ---- text rules -----------------------------------------------------------------------------

_WS = re.compile(r"\s+")


def normalize_reply(text: str) -> str:
    """The form in which replies are compared and stored in :attr:`GuardState.sent_replies`.

    Unicode NFKC (full-width letters and digits become ASCII), surrounding whitespace stripped,
    inner runs of whitespace collapsed to one space, then :meth:`str.casefold`. So
    ``"  Sorry,\\n I  didn't GET that "`` and ``"sorry, i didn't get that"`` are the same reply.
    Punctuation is kept: ``"Okay."`` and ``"Okay!"`` are different replies.
    """
    return _WS.sub(" ", unicodedata.normalize("NFKC", text)).strip().casefold()


def turn_resolves(intent: str | None, actions: Sequence[str], resolution: object) -> bool:
    """The brain's half of the resolution rule: did this turn, on its own, resolve anything?

    ``True`` when an action completed the customer's stated goal during the turn — it set the
    ``resolution`` slot (a case opened or reported, a change confirmed, a status given) — or the
    message was small talk and got *its* small-talk answer (``greet`` answered by ``utter_greet``…,
    :data:`SMALL_TALK_ANSWERS`). Everything else is unresolved: a generic acknowledgement
    (``utter_ack``, ``utter_deny_ack``), a menu, a fallback or out-of-scope reply, a question.
    ``affirm``/``deny`` resolve only through an action (a confirmed change).

    The guard then checks the claim against the conversation (:meth:`HandoffGuard.resolves`).

    Args:
        intent: The NLU intent of the message.
        actions: The actions run during the turn, in order (``action_listen`` excluded).
        resolution: The value the turn set in the ``resolution`` slot, if any.
    """
    if resolution:
        return True
    answer = SMALL_TALK_ANSWERS.get(intent or "")
    return answer is not None and answer in actions


# English. Phrases that are a question about the bot, not a request for a person.
_EN_EXCLUDE = re.compile(
    r"\bare\s+(?:you|u)\s+(?:an?\s+)?(?:real\s+|actual\s+)?(?:human|person|bot|robot|machine)\b"
)
# Always a request for a person.
_EN_STRONG = re.compile(
    r"\b(?:real|actual|live)\s+(?:person|people|human|humans|agent|agents|rep|reps|representative|"
    r"representatives|operator|operators|someone|somebody)\b"
    r"|\bhuman\s+(?:being|beings|agent|agents|operator|please|pls|plz)\b"
    r"|\brepresentatives?\b"
    r"|\bcustomer\s+(?:service|support|care)\s+(?:agent|agents|rep|reps|staff|person|team)\b"
)
_EN_VERBS = (
    r"talk|speak|chat|connect|transfer|put|pass|hand|escalate|get|give|want|need|see|call|reach|contact|"
    r"switch|bring|find|prefer"
)
_EN_FILLER = (
    r"to|with|me|us|a|an|the|your|one|of|please|pls|plz|directly|now|just|through|over|some|another|any|"
    r"right|away|on|straight|back|actually|really|real|live|actual|human|proper"
)
_EN_TARGETS = (
    r"human|humans|agent|agents|person|people|operator|operators|rep|someone|somebody|anyone|anybody|"
    r"staff|manager|supervisor|customer\s+service|customer\s+support|customer\s+care|support\s+team|"
    r"support\s+staff|service\s+team|team\s+member"
)
_EN_VERB_TARGET = re.compile(rf"\b(?:{_EN_VERBS})\b(?:\s+(?:{_EN_FILLER})\b)*\s+(?:{_EN_TARGETS})\b")
# Indirect requests: "is anyone (actually) there?", "anybody there", "is there a human", "someone
# who can help", "hello? anyone?".
_EN_INDIRECT = re.compile(
    r"\b(?:any|some)(?:one|body)\s+(?:(?:actually|really|even|still|real)\s+)?(?:there|here|reading|listening|"
    r"around|awake|on the other (?:side|end))\b"
    r"|\bis\s+there\s+(?:an?\s+|any\s+)?(?:real\s+|actual\s+|live\s+)?(?:human|person|people|someone|somebody|"
    r"anyone|anybody|agent|staff)\b"
    r"|\b(?:someone|somebody|anyone|anybody|person|human)\s+(?:who|that)\s+(?:can|could|will|would)\s+"
    r"(?:actually\s+|really\s+)?(?:help|understand|fix|do something|sort)"
    r"|^(?:(?:hello|hi|hey)\W+)?(?:any|some)(?:one|body)\W*$"
)
# A message made only of these words and containing one of _STANDALONE_TARGETS ("agent",
# "human please", "operator!!") is a request; "the agent hung up on me" is not ("hung", "up").
_STANDALONE_TARGETS = frozenset(
    {"human", "humans", "agent", "agents", "operator", "representative", "rep", "person", "manager", "supervisor"}
)
_STANDALONE_VOCAB = _STANDALONE_TARGETS | frozenset(
    {"please", "pls", "plz", "now", "a", "an", "the", "hi", "hello", "hey", "just", "me", "i", "want", "need",
     "live", "real", "talk", "speak", "to", "with", "asap", "ok", "okay", "yes", "get", "give", "customer",
     "service", "support", "your", "one", "someone", "staff", "actual"}
)
# Chinese (Simplified, Traditional, Cantonese). Compounds that contain a trigger but are not about
# a person: 人工智能 (AI), 人工费 (labour cost), 真人秀 (reality show), "are you a real person?".
_ZH_EXCLUDE = re.compile(
    r"人工智能|人工智慧|人工费|人工費|人工成本|人工合成|人工降雨|人工呼吸|人工湖|真人秀"
    r"|你(?:是|係|系)(?:不是|唔係|唔系|否)?(?:一个|一個|个|個)?真人"
)
_ZH_TRIGGER = re.compile(
    r"人工|真人|专人|專人|专员|專員|搵人|活人"
    r"|[转轉]接?(?:到|给|給)?[^，。！？,.!?\s]{0,6}?客服"
    r"|(?:找|叫|要|搵|换|換|请|請|让|讓)(?:你们|你們|你哋|妳們)?(?:的|嘅)?(?:主管|经理|經理|领导|領導)"
    r"|(?:找|换|換|搵)一?[个個]人(?![信资資账賬帐帳中用隐隱名])|(?:找|搵)人(?:帮|幫|同|跟|和)"
    r"|(?:和|跟|同|找|搵|联系|聯絡|聯繫)(?:你们|你們|你哋)?(?:的|嘅)?(?:工作人员|工作人員|职员|職員)"
    r"|不要机器人|不要機器人|唔要機械人|唔要機器人"
    r"|(?:要|找|搵|转|轉|接)\s*(?:一个|一個|个|個)?\s*(?:human|agent|operator|person)\b"
    # Indirect: 有没有人 / 有没有能说上话的人 / 有冇人, 有人在吗 / 有人嗎, (你们客服)人呢, 同客服講.
    r"|有[没沒冇]有?(?:[^，。！？,.!?\s]{0,8}?(?:的|嘅))?真?人(?![工信资資账賬帐帳中用隐隱名民口数數类類])"
    r"|有人(?:在|喺度?|喺)?(?:吗|嗎|嘛|么|麼|冇|無|无)(?:[?？!！。.\s]|$)"
    r"|(?<![别別他其])人呢"
    r"|(?:同|跟|和)(?:你们|你們|你哋)?(?:的|嘅)?客服(?:講|讲|倾|傾|说|說|谈|談)"
)


def asks_for_human(text: str) -> bool:
    """The keyword rule: does this customer message ask for a person, whatever the NLU says?

    A safety net under the ``request_human`` intent for English, Simplified and Traditional
    Chinese (and Cantonese). It favours recall: a false positive costs an agent a look at the
    conversation, a false negative traps the customer. Matching is done on the NFKC-normalised,
    case-folded text.

    English, it matches:

    * a message made only of request words around a target: ``"agent"``, ``"human please"``,
      ``"operator!!"``, ``"speak to manager"``;
    * ``real/live/actual`` + person/human/agent/rep…, ``human being/agent``, ``representative``,
      ``customer service agent/rep/team``;
    * a request verb (talk, speak, connect, transfer, get, want, need, escalate…) followed, after
      filler words only (to, me, a, the, your, please…), by a target (human, agent, person,
      operator, someone, staff, manager, supervisor, customer service…): ``"can I speak to an
      operator"``, ``"pass me to one of your staff"``;
    * an indirect request: ``"is anyone (actually) there?"``, ``"anybody there"``, ``"is there a
      human"``, ``"someone who can help"``, ``"hello? anyone?"``.

    Chinese: 人工 (转人工, 人工客服), 真人 (真人客服), 专人/專人, 专员/專員 (客服专员), 搵人, 活人,
    转/轉(接) … 客服, 找/叫/让 … 主管/经理/领导, 跟/同 … 工作人员/職員, 找/换个人 (not 个人信息,
    个人资料, 个人账户…), 找人帮, 不要机器人, 要/找/搵 + an English target (``"我要 agent"``), and
    indirect requests: 有没有人, 有没有能说上话的人, 有冇人, 有人在吗/有人嗎, 人呢 (你们客服人呢),
    同客服講.

    Not matched, on purpose: a mention of an agent in a complaint (``"the agent hung up on
    me"``, ``"I talked to an agent"``), a question about the bot (``"are you a human?"``,
    ``"你是真人吗"``), 人工智能/人工智慧 (AI), 人工费 (labour cost), 真人秀.

    Known false positives, accepted: ``"I want to talk to human resources"``, ``"how do I
    contact customer service"``, ``"I need someone to explain my bill"``, negations such as
    ``"no need for a real person"``, a complaint such as ``"your representative was rude"``.
    Also accepted: ``"has anyone (有没有人) had this problem"``. Misspellings (``"humna"``,
    转人公) are left to the NLU.
    """
    t = _WS.sub(" ", unicodedata.normalize("NFKC", text)).strip().casefold()
    if not t:
        return False
    zh = _ZH_EXCLUDE.sub(" ", t)
    if _ZH_TRIGGER.search(zh):
        return True
    en = _EN_EXCLUDE.sub(" ", zh)
    if _EN_STRONG.search(en) or _EN_VERB_TARGET.search(en) or _EN_INDIRECT.search(en):
        return True
    words = re.findall(r"\w+", en)
    return bool(words) and len(words) <= 8 and set(words) <= _STANDALONE_VOCAB and bool(
        _STANDALONE_TARGETS.intersection(words)
    )


# ---- the guard ------------------------------------------------------------------------------


class HandoffGuard:
    """The handoff guard: state in, decision out. Stateless itself, so one instance serves all
    conversations and every method may be called from any thread or task.

    Args:
        config: The tunables; ``GuardConfig()`` when omitted.
    """

    def __init__(self, config: GuardConfig | None = None) -> None:
        self._config = config if config is not None else GuardConfig()

    @property
    def config(self) -> GuardConfig:
        """The configuration this guard decides with."""
        return self._config

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._config!r})"

    def before_turn(self, state: GuardState, text: str) -> Decision:
        """Decide whether the bot may take a customer message, before the brain sees it.

        Reads the message's signals (:func:`bot.signals.read_signals`, unless ``config.signals``
        is off; returned in :attr:`Decision.signals`) and refuses (``handoff=True``,
        ``deliver=()``), in this order, when:

        * the conversation is already handed off (``new_handoff=False``, ``reason`` = the stored
          :attr:`GuardState.handoff_reason`);
        * the message reports danger (``Signals.danger``): ``reason="danger"`` — the hub routes
          it with priority and tells the customer to call the emergency number;
        * the budget is already spent — only reachable with a state written under a smaller
          ``N`` or by an older version: ``reason="turn_budget"`` or ``"repeated_fallback"``;
        * ``text`` asks for a person according to :func:`asks_for_human` (unless
          ``config.keyword_rule`` is off): ``reason="customer_request"``;
        * the message's frustration score is at least ``config.frustration_threshold``, whatever
          its intent: ``reason="frustration"``. The brain never sees the message; the hub finds
          the request in it by parsing it with the NLU alone.

        Otherwise allows the turn (``handoff=False``, ``reason=None``, state unchanged); the hub
        then calls the brain and **must** call :meth:`after_turn` with its outcome — with
        :meth:`TurnOutcome.failed` when the brain raised or timed out.

        Args:
            state: The conversation's persisted state.
            text: The customer message as received.
        """
        cfg = self._config
        signals = read_signals(text) if cfg.signals else None
        reason: str | None = None
        if state.handed_off:
            return replace(self._already_handed_off(state), signals=signals)
        if signals is not None and signals.danger is not None:
            reason = DANGER
        elif state.unresolved_turns >= cfg.max_unresolved_turns:
            reason = TURN_BUDGET
        elif state.fallbacks >= MAX_FALLBACKS:
            reason = REPEATED_FALLBACK
        elif cfg.keyword_rule and asks_for_human(text):
            reason = CUSTOMER_REQUEST
        elif signals is not None and signals.frustration >= cfg.frustration_threshold:
            reason = FRUSTRATION
        if reason is not None:
            return replace(self._hand_off(state, reason), signals=signals)
        return Decision(deliver=(), handoff=False, reason=None, state=state, signals=signals)

    def resolves(self, state: GuardState, outcome: TurnOutcome) -> bool:
        """Whether ``outcome`` counts as a resolved turn — the one place the rule is enforced.

        The brain's claim (:attr:`TurnOutcome.resolved`, made by :func:`turn_resolves`: an action
        completed the customer's goal, or small talk got its small-talk answer) is necessary but
        not enough. The turn is **unresolved** when:

        * it failed (``outcome.error``), or the brain does not claim it resolved;
        * its intent is a fallback intent (a fallback reply resolves nothing);
        * the customer re-asks: the brain claimed the previous turn resolved, with the same
          intent (an unknown intent counts as the same unknown intent) — the answer evidently did
          not do;
        * it is an answer intent (``affirm``/``deny``) that answers nothing: no previous turn,
          or the brain claimed the previous turn resolved, or it was a fallback (no question was
          left open);
        * it is small talk beyond ``config.max_small_talk_turns`` in a row without a turn that an
          action resolved in between — so a brain that answers everything as small talk still
          reaches the turn budget.

        Pass the state as it was before the turn. Pure.
        """
        cfg = self._config
        if outcome.error is not None or not outcome.resolved:
            return False
        intent = outcome.intent or ""
        if intent in cfg.fallback_intents:
            return False
        if state.last_resolved and intent == state.last_intent:
            return False
        if intent in cfg.answer_intents:
            return bool(
                state.last_intent is not None and not state.last_resolved
                and state.last_intent not in cfg.fallback_intents
            )
        if intent in cfg.small_talk_intents:
            return state.small_talk_turns < cfg.max_small_talk_turns
        return True

    def after_turn(self, state: GuardState, outcome: TurnOutcome) -> Decision:
        """Decide what to do with the brain's output for one customer message.

        Pass the state as persisted *now* (reload it after the brain call): if the conversation
        was handed off meanwhile — by another message of the same customer — nothing is
        delivered (P2).

        The turn is counted first: unresolved (:meth:`resolves` says no — an error, no claim, a
        fallback, a re-ask, an answer to nothing, small talk beyond its cap) consumes one unit
        of the turn budget; a fallback intent counts as a fallback; the intent of an
        unresolved turn is remembered. Then the first rule that applies, in this order, hands
        off with its reason:

        1. ``outcome.error`` → ``"timeout"`` if it is ``"timeout"``, else ``"brain_error"``;
        2. intent in ``config.request_human_intents`` → ``"customer_request"``;
        3. intent in ``config.frustration_intents`` → ``"frustration"``;
        4. ``outcome.handoff_requested`` → ``"action_request"``;
        5. second fallback → ``"repeated_fallback"``;
        6. unresolved intent already unresolved before (not fallback or repeatable intents)
           → ``"repeated_request"``;
        7. any reply equal, after :func:`normalize_reply`, to one already sent in this
           conversation or to another reply of the same turn → ``"repeated_reply"``;
        8. ``N``-th unresolved turn → ``"turn_budget"``;
        9. unresolved turn with no non-blank reply (the customer would get silence) →
           ``"brain_error"``.

        Rules 2–4 apply whatever ``outcome.resolved`` says. A handoff delivers none of the
        turn's replies (they are in :attr:`Decision.withheld`); the hub sends its own handoff
        notice. The one exception is rule 4 for a *resolved* turn whose replies are all new: an
        action completed and routed the customer to specialists (a case was opened), and its
        confirmation with the case number is delivered together with the handoff. Without a
        handoff every non-blank reply is delivered and recorded in
        :attr:`GuardState.sent_replies`; blank replies are dropped.
        """
        if state.handed_off:
            return self._already_handed_off(state, withheld=outcome.replies)
        cfg = self._config
        texts = tuple(r for r in outcome.replies if normalize_reply(r))
        normalised = tuple(normalize_reply(r) for r in texts)
        intent = outcome.intent
        resolved = self.resolves(state, outcome)
        unresolved = not resolved
        is_fallback = intent is not None and intent in cfg.fallback_intents
        small_talk = (intent or "") in cfg.small_talk_intents
        tracked = bool(unresolved and intent and not is_fallback and intent not in cfg.repeatable_intents)
        repeated_request = tracked and intent in state.unresolved_intents
        counted = replace(
            state,
            unresolved_turns=state.unresolved_turns + (1 if unresolved else 0),
            fallbacks=state.fallbacks + (1 if is_fallback else 0),
            unresolved_intents=state.unresolved_intents
            + ((intent,) if tracked and intent and not repeated_request else ()),
            last_intent=intent or "",
            last_resolved=outcome.error is None and outcome.resolved,
            small_talk_turns=(state.small_talk_turns + 1 if small_talk else 0) if resolved else state.small_talk_turns,
        )
        seen = set(state.sent_replies)
        repeated_reply = any(n in seen for n in normalised) or len(set(normalised)) < len(normalised)

        reason: str | None = None
        if outcome.error is not None:
            reason = TIMEOUT if outcome.error == "timeout" else BRAIN_ERROR
        elif intent is not None and intent in cfg.request_human_intents:
            reason = CUSTOMER_REQUEST
        elif intent is not None and intent in cfg.frustration_intents:
            reason = FRUSTRATION
        elif outcome.handoff_requested:
            reason = ACTION_REQUEST
        elif counted.fallbacks >= MAX_FALLBACKS:
            reason = REPEATED_FALLBACK
        elif repeated_request:
            reason = REPEATED_REQUEST
        elif repeated_reply:
            reason = REPEATED_REPLY
        elif counted.unresolved_turns >= cfg.max_unresolved_turns:
            reason = TURN_BUDGET
        elif unresolved and not texts:
            reason = BRAIN_ERROR
        if reason == ACTION_REQUEST and resolved and texts and not repeated_reply:
            # A completed action that routes the customer to specialists (a case was opened and
            # queued): its confirmation — case number, queue, expected time — is the one bot
            # reply that goes out together with the handoff. Nothing is said after it.
            handed = self._hand_off(counted, reason, queue=outcome.handoff_queue)
            sent = replace(handed.state, sent_replies=state.sent_replies + normalised)
            return replace(handed, deliver=texts, state=sent)
        if reason is not None:
            return self._hand_off(counted, reason, queue=outcome.handoff_queue, withheld=outcome.replies)
        return Decision(
            deliver=texts,
            handoff=False,
            reason=None,
            state=replace(counted, sent_replies=state.sent_replies + normalised),
        )

    def hand_back(self, state: GuardState) -> GuardState:
        """The state after an agent explicitly hands the conversation back to the bot.

        Clears :attr:`~GuardState.handed_off` and gives the bot a fresh budget: the unresolved
        turn count, the fallback count, the remembered unresolved intents, the previous turn and
        the small-talk count restart from zero.
        :attr:`~GuardState.sent_replies` is kept, so the bot still never repeats a reply it sent
        earlier in the conversation — before or after the agent — and a canned loop cannot
        resume after a hand-back. Idempotent.
        """
        return GuardState(sent_replies=state.sent_replies)

    # ---- helpers --------------------------------------------------------------------------

    @staticmethod
    def _already_handed_off(state: GuardState, withheld: tuple[str, ...] = ()) -> Decision:
        return Decision(
            deliver=(), handoff=True, reason=state.handoff_reason, state=state, new_handoff=False, withheld=withheld
        )

    @staticmethod
    def _hand_off(
        state: GuardState, reason: str, *, queue: str | None = None, withheld: tuple[str, ...] = ()
    ) -> Decision:
        return Decision(
            deliver=(),
            handoff=True,
            reason=reason,
            state=replace(state, handed_off=True, handoff_reason=reason),
            new_handoff=True,
            queue=queue,
            withheld=withheld,
        )
