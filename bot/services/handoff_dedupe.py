"""Queue-side dedupe of obviously scripted handoffs: a pure policy (no I/O, injectable clock).

A script that loops *connect → hello → "human please"* from one client address gets past the
per-visitor message limit (each loop is a new visitor) and, within the per-address cap on new
visitors, still makes a handoff per visitor — each one a queue entry, possibly a case with its
outbox notifications, and a ``handoff`` frame that wakes every agent of the queue.

The policy: per *source* (the client address an anonymous visitor came from), the first
``per_source`` handoffs within ``window_s`` seconds are ordinary; every further one in that
window is **held** as "suspected automated":

* the customer still gets a place in the queue and the usual answer (never silently dropped:
  a real customer behind a shared NAT whose neighbour runs a script is served, just later,
  unless a supervisor releases them or claims them first);
* no agent is woken (its case is opened as for any handoff, promise 4): only supervisors are told, once
  per source and window (:attr:`Verdict.first_held`), and they see every held entry flagged in
  the waiting list;
* a supervisor releases it (one conversation or every one of a source), and it then becomes an
  ordinary handoff.

Exempt, always ordinary: danger reports (promise 9), app users whose identity the app's backend
signed (they are not anonymous), and conversations without a known source.

The counting goes through a :class:`Counter` — the hub's per-process
:class:`~bot.hub.ratelimit.RateLimiter` fits. Hubs sharing Redis count together instead
(:class:`bot.hub.suspects.RedisHandoffCounter`: the same rule, with "supervisors already told"
kept in Redis too), using :func:`counted_source` for the exemptions; this policy is then their
fallback while Redis is away.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

#: sources remembered as "supervisors already told" at most (oldest forgotten first)
MAX_HOLDING = 10_000
#: handoff reasons that are never held (a person reporting danger is served first, whatever)
NEVER_HELD = frozenset({"danger"})


def counted_source(source: str | None, reason: str, *, identified: bool = False) -> str | None:
    """The source a handoff is counted against, ``None`` when it is exempt (unknown source, an
    app user vouched for by the app's backend, a danger report)."""
    if source is None or identified or reason in NEVER_HELD:
        return None
    return source


class Counter(Protocol):
    """At most some number of events per window for each key (``hit`` is False beyond it)."""

    def hit(self, key: str) -> bool: ...


@dataclass(frozen=True)
class Verdict:
    """What to do with one handoff."""

    held: bool
    #: the source it was counted against (``None``: exempt, not counted)
    source: str | None = None
    #: the first held handoff of this source since it was last below the threshold: tell the
    #: supervisors (later ones of the same burst are only flagged in the waiting list)
    first_held: bool = False


ORDINARY = Verdict(held=False)


class HandoffDedupe:
    """The policy over a counter of ``per_source`` handoffs per window (see the module docstring)."""

    def __init__(self, counter: Counter) -> None:
        self.counter = counter
        self._holding: dict[str, None] = {}  # sources whose burst supervisors were told of (ordered)

    def consider(self, source: str | None, reason: str, *, identified: bool = False) -> Verdict:
        """The verdict for a new handoff of a conversation from ``source`` (its client address;
        ``None`` when unknown) for ``reason``; ``identified``: an app user vouched for by the
        app's backend. Counts the handoff against its source."""
        source = counted_source(source, reason, identified=identified)
        if source is None:
            return ORDINARY
        if self.counter.hit(source):
            self._holding.pop(source, None)  # under the threshold again: a later burst is news
            return Verdict(held=False, source=source)
        first = source not in self._holding
        if first:
            self._holding[source] = None
            if len(self._holding) > MAX_HOLDING:
                del self._holding[next(iter(self._holding))]
        return Verdict(held=True, source=source, first_held=first)
