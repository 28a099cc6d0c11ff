"""Operational metrics of one hub in the Prometheus text exposition format (version 0.0.4).

Counters and the brain latency histogram are kept in memory by the process that serves them
(each hub of a cluster is scraped on its own; Prometheus sums them); gauges that describe shared
state (queue lengths, SLA breaches) are read from the store at scrape time. Written by hand: the
format is a few lines of text and needs no client library.

Exposed at ``GET /metrics`` (bot/hub/app.py) only when ``HUMANLINE_METRICS_TOKEN`` is set, and
only with ``Authorization: Bearer <token>``.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field

#: Upper bounds (seconds) of the brain latency buckets; the brain timeout defaults to 3 s.
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(labels: dict[str, str]) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{k}="{_escape(str(v))}"' for k, v in sorted(labels.items())) + "}"


def _number(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(int(value)) if float(value).is_integer() else repr(float(value))


@dataclass
class Histogram:
    """Cumulative buckets, sum and count of observed values."""

    buckets: tuple[float, ...] = LATENCY_BUCKETS
    counts: list[int] = field(default_factory=list)
    total: float = 0.0
    n: int = 0

    def __post_init__(self) -> None:
        self.counts = [0] * len(self.buckets)

    def observe(self, value: float) -> None:
        for i, bound in enumerate(self.buckets):
            if value <= bound:
                self.counts[i] += 1
        self.total += value
        self.n += 1


class Metrics:
    """The hub's counters and histogram; safe to update from worker threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.messages: dict[str, int] = {}        # sender -> messages stored
        self.turns: dict[str, int] = {}           # brain call outcome -> bot turns
        self.handoffs: dict[str, int] = {}        # reason -> handoffs to a queue
        self.typing: dict[str, int] = {}          # side -> typing signals relayed
        self.brain_latency = Histogram()

    def message_stored(self, sender: str) -> None:
        with self._lock:
            self.messages[sender] = self.messages.get(sender, 0) + 1

    def bot_turn(self, outcome: str, seconds: float) -> None:
        """A brain call finished: ``ok``, ``timeout`` or ``brain_error``, after ``seconds``."""
        with self._lock:
            self.turns[outcome] = self.turns.get(outcome, 0) + 1
            self.brain_latency.observe(seconds)

    def handoff(self, reason: str) -> None:
        with self._lock:
            self.handoffs[reason] = self.handoffs.get(reason, 0) + 1

    def typing_relayed(self, side: str) -> None:
        with self._lock:
            self.typing[side] = self.typing.get(side, 0) + 1

    def render(
        self,
        *,
        queues: Iterable[tuple[str, int, int]],
        sla_breaches: dict[str, int],
        sockets: dict[str, int],
        agents_online: int,
        outbox_dropped: int = 0,
    ) -> str:
        """The exposition text: the counters here plus the gauges given (``queues``: name,
        waiting, with an agent; ``sla_breaches``: open cases past a deadline per kind;
        ``sockets``: open sockets per kind)."""
        out: list[str] = []

        def family(name: str, kind: str, help_: str, samples: Iterable[tuple[dict[str, str], float]]) -> None:
            out.append(f"# HELP {name} {help_}")
            out.append(f"# TYPE {name} {kind}")
            for labels, value in samples:
                out.append(f"{name}{_labels(labels)} {_number(value)}")

        with self._lock:
            family("humanline_messages_total", "counter", "Messages stored, by sender.",
                   [({"sender": k}, v) for k, v in sorted(self.messages.items())])
            family("humanline_bot_turns_total", "counter", "Customer turns sent to the brain, by outcome.",
                   [({"outcome": k}, v) for k, v in sorted(self.turns.items())])
            family("humanline_handoffs_total", "counter", "Conversations handed to a queue, by reason.",
                   [({"reason": k}, v) for k, v in sorted(self.handoffs.items())])
            family("humanline_typing_relayed_total", "counter", "Typing signals relayed, by the side typing.",
                   [({"side": k}, v) for k, v in sorted(self.typing.items())])
            h = self.brain_latency
            out.append("# HELP humanline_brain_latency_seconds Time of one brain call (model and actions).")
            out.append("# TYPE humanline_brain_latency_seconds histogram")
            for bound, count in zip(h.buckets, h.counts, strict=True):
                out.append(f'humanline_brain_latency_seconds_bucket{{le="{_number(bound)}"}} {count}')
            out.append(f'humanline_brain_latency_seconds_bucket{{le="+Inf"}} {h.n}')
            out.append(f"humanline_brain_latency_seconds_sum {_number(h.total)}")
            out.append(f"humanline_brain_latency_seconds_count {h.n}")
        rows = list(queues)
        family("humanline_queue_waiting", "gauge", "Conversations waiting in a queue.",
               [({"queue": q}, w) for q, w, _ in rows])
        family("humanline_queue_with_agent", "gauge", "Conversations of a queue held by an agent.",
               [({"queue": q}, a) for q, _, a in rows])
        family("humanline_sla_breaches", "gauge", "Open cases past an SLA deadline, by kind.",
               [({"kind": k}, v) for k, v in sorted(sla_breaches.items())])
        family("humanline_sockets_open", "gauge", "Open WebSockets on this hub, by kind.",
               [({"kind": k}, v) for k, v in sorted(sockets.items())])
        family("humanline_agents_online", "gauge", "Agents with at least one console open on this hub.",
               [({}, agents_online)])
        family("humanline_outbox_dropped_total", "counter",
               "Agent events / customer frames given up after HUMANLINE_OUTBOX_MAX_AGE unpublished.",
               [({}, outbox_dropped)])
        return "\n".join(out) + "\n"
