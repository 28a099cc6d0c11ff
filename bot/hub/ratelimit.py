"""Sliding-window rate limits keyed by who is asking (a visitor, a client address, a username).

Pure bookkeeping with an injectable clock, no I/O. A key's window holds at most ``limit``
timestamps, and keys whose window emptied are dropped, so memory is bounded by the keys that
were active within the last ``window_s`` seconds.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable


class RateLimiter:
    """At most ``limit`` events per ``window_s`` seconds for each key.

    :param limit: events allowed in any window (``>= 1``).
    :param window_s: the window's length in seconds.
    :param clock: monotonic seconds (tests pass a fake one).
    """

    def __init__(self, limit: int, window_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        if limit < 1 or window_s <= 0:
            raise ValueError("a rate limit needs limit >= 1 and a positive window")
        self.limit = limit
        self.window_s = window_s
        self._clock = clock
        self._events: dict[str, deque[float]] = {}
        self._last_sweep = clock()

    def _window(self, key: str, now: float) -> deque[float]:
        events = self._events.setdefault(key, deque())
        while events and now - events[0] >= self.window_s:
            events.popleft()
        return events

    def _sweep(self, now: float) -> None:
        if now - self._last_sweep < self.window_s:
            return
        self._last_sweep = now
        for key in [k for k, ev in self._events.items() if not ev or now - ev[-1] >= self.window_s]:
            del self._events[key]

    def hit(self, key: str) -> bool:
        """Count one event for ``key``; ``False`` (and not counted) when it is over the limit."""
        now = self._clock()
        self._sweep(now)
        events = self._window(key, now)
        if len(events) >= self.limit:
            return False
        events.append(now)
        return True

    def blocked(self, key: str) -> bool:
        """Whether the next :meth:`hit` for ``key`` would be refused (counts nothing)."""
        now = self._clock()
        return len(self._window(key, now)) >= self.limit

    def retry_after(self, key: str) -> float:
        """Seconds until ``key`` may act again (0 when it may now)."""
        now = self._clock()
        events = self._window(key, now)
        if len(events) < self.limit:
            return 0.0
        return max(0.0, self.window_s - (now - events[0]))

    def __len__(self) -> int:
        """Keys currently tracked."""
        return len(self._events)
