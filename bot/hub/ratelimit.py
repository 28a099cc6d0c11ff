"""Rate limits keyed by who is asking (a visitor, a client address, a username).

Pure bookkeeping with an injectable clock, no I/O. :class:`Limiter` is the interface the hub
uses; :class:`RateLimiter` is its in-memory, per-process implementation, and
:class:`RedisRateLimiter` the one several hubs share (``REDIS_URL``: a sliding window in a Redis
sorted set, by Redis's clock). The hub calls :meth:`ahit` (async) on both. A key's window
holds at most ``limit`` timestamps, and keys whose window emptied are dropped, so memory is
bounded by the keys that were active within the last ``window_s`` seconds.

:class:`LoginThrottle` is the agent-login policy built on top (see docs/security.md).
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

logger = logging.getLogger(__name__)


class Limiter(Protocol):
    """At most some number of events per window for each key."""

    def hit(self, key: str) -> bool: ...

    def blocked(self, key: str) -> bool: ...

    def retry_after(self, key: str) -> float: ...


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

    async def ahit(self, key: str) -> bool:
        """:meth:`hit`, for callers that also take the shared (Redis) limiter."""
        return self.hit(key)


# The sliding window of one key: drop what left it, refuse at the limit, else count one.
_SLIDING_WINDOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local window = tonumber(ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then
  return 0
end
redis.call('ZADD', KEYS[1], now, ARGV[3])
redis.call('PEXPIRE', KEYS[1], math.ceil(window / 1000))
return 1
"""


class RedisRateLimiter:
    """:class:`RateLimiter`'s rule shared by every hub on one Redis (keys ``hl:rl:<name>:<key>``).

    While Redis does not answer, each hub falls back to its own in-memory limiter (the limit then
    holds per hub, not in total) rather than refusing or letting everything through.
    """

    def __init__(self, redis: Any, name: str, limit: int, window_s: float) -> None:
        import itertools
        import uuid

        self.redis = redis
        self.name = name
        self.limit = limit
        self.window_s = window_s
        self.fallback = RateLimiter(limit, window_s)
        self._script = redis.register_script(_SLIDING_WINDOW)
        self._ids = itertools.count()
        self._prefix = uuid.uuid4().hex[:8]

    async def ahit(self, key: str) -> bool:
        try:
            return bool(await self._script(
                keys=[f"hl:rl:{self.name}:{key}"],
                args=[int(self.window_s * 1_000_000), self.limit, f"{self._prefix}:{next(self._ids)}"],
            ))
        except Exception:  # noqa: BLE001 - Redis away: this hub's own count
            logger.warning("the shared rate limit %s is unavailable; counting in this hub", self.name,
                           exc_info=True)
            return self.fallback.hit(key)


def make_limiter(redis: Any, name: str, limit: int, window_s: float) -> RateLimiter | RedisRateLimiter:
    """The shared limiter when the hub has a Redis client, else the in-memory one."""
    return RedisRateLimiter(redis, name, limit, window_s) if redis is not None else RateLimiter(limit, window_s)


@dataclass
class _Failures:
    count: int = 0
    locked_until: float = 0.0
    last: float = 0.0


class LoginThrottle:
    """Who may try a password now: the agent-login policy, decided *before* any hashing.

    * **Per client address** (checked first): at most ``attempts_per_address`` attempts, failed
      or not, per ``window_s``. One guessing machine is stopped here long before it can hurt a
      username.
    * **Per username and address**: after ``free_pair`` failures each further failure doubles a
      delay (1 s, 2 s, 4 s …) up to ``max_pair_delay_s``.
    * **Per username, all addresses together**: after ``free_user`` failures the same doubling
      up to ``max_user_delay_s`` (5 minutes): a distributed guesser gets a dozen tries an hour,
      and the real agent is never locked out for longer than that, nor for good. A supervisor
      clears it at once with :meth:`unlock`.
    * **One attempt per username at a time**: a parallel attempt for a username whose password
      is being checked is refused, so a burst of parallel logins cannot slip past the counters.

    An attempt is counted as a failure when it *begins* (:meth:`begin`) and the count is undone
    on success (:meth:`succeeded`), so the throttle never waits for the slow hash to count.
    Failure records expire after ``forget_s`` without failures.
    """

    def __init__(
        self,
        *,
        attempts_per_address: int = 30,
        window_s: float = 300.0,
        free_pair: int = 3,
        max_pair_delay_s: float = 900.0,
        free_user: int = 10,
        max_user_delay_s: float = 300.0,
        forget_s: float = 3600.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.addresses: Limiter = RateLimiter(attempts_per_address, window_s, clock)
        self.free_pair, self.max_pair_delay_s = free_pair, max_pair_delay_s
        self.free_user, self.max_user_delay_s = free_user, max_user_delay_s
        self.forget_s = forget_s
        self._clock = clock
        self._pairs: dict[tuple[str, str], _Failures] = {}
        self._users: dict[str, _Failures] = {}
        self._in_flight: set[str] = set()
        self._last_sweep = clock()

    @staticmethod
    def _delay(failures: int, free: int, cap: float) -> float:
        if failures <= free:
            return 0.0
        return float(min(cap, 2.0 ** min(failures - free - 1, 30)))

    def _sweep(self, now: float) -> None:
        if now - self._last_sweep < 60.0:
            return
        self._last_sweep = now
        def stale(f: _Failures) -> bool:
            return now - f.last >= self.forget_s and now >= f.locked_until

        for pair in [k for k, f in self._pairs.items() if stale(f)]:
            del self._pairs[pair]
        for user in [k for k, f in self._users.items() if stale(f)]:
            del self._users[user]

    def wait(self, address: str, username: str) -> float:
        """Seconds before ``address`` may try ``username`` (0: now). Counts nothing."""
        now = self._clock()
        waits = [self.addresses.retry_after(address)]
        for record in (self._pairs.get((address, username)), self._users.get(username)):
            if record is not None:
                waits.append(record.locked_until - now)
        if username in self._in_flight:
            waits.append(1.0)
        return max(0.0, *waits)

    def begin(self, address: str, username: str) -> float:
        """Start an attempt: 0 when it may go ahead (and is now counted as a failure until
        :meth:`succeeded`), else the seconds to wait (and nothing is counted)."""
        now = self._clock()
        self._sweep(now)
        wait = self.wait(address, username)
        if wait > 0 or not self.addresses.hit(address):
            return max(wait, 1.0)
        self._in_flight.add(username)
        pair = self._pairs.setdefault((address, username), _Failures())
        user = self._users.setdefault(username, _Failures())
        for record, free, cap in ((pair, self.free_pair, self.max_pair_delay_s),
                                  (user, self.free_user, self.max_user_delay_s)):
            record.count += 1
            record.last = now
            record.locked_until = now + self._delay(record.count, free, cap)
        return 0.0

    def succeeded(self, address: str, username: str) -> None:
        """The password was right: forget this username's failures."""
        self._in_flight.discard(username)
        self._pairs.pop((address, username), None)
        self._users.pop(username, None)

    def failed(self, address: str, username: str) -> None:
        """The password was wrong (already counted by :meth:`begin`)."""
        self._in_flight.discard(username)

    def unlock(self, username: str) -> None:
        """A supervisor's unlock: this username's failures from every address are forgotten."""
        self._users.pop(username, None)
        for key in [k for k in self._pairs if k[1] == username]:
            del self._pairs[key]

    def failures(self, username: str) -> int:
        """Failures currently counted against ``username`` (all addresses)."""
        record = self._users.get(username)
        return record.count if record else 0


# LoginThrottle.begin on Redis, in one step (the same rules; times in ms by Redis's clock).
# KEYS: address window, pair record, user record, in-flight mark, the username's pair index.
# ARGV: attempts per address, window ms, free pair, max pair delay ms, free user, max user delay
# ms, forget ms, a unique member. Returns 0 (go ahead, counted) or the ms to wait.
_LOGIN_BEGIN = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local limit, window = tonumber(ARGV[1]), tonumber(ARGV[2])
local wait = 0
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
if redis.call('ZCARD', KEYS[1]) >= limit then
  local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  wait = math.max(wait, window - (now - tonumber(oldest[2])))
end
for _, key in ipairs({KEYS[2], KEYS[3]}) do
  local until_ = tonumber(redis.call('HGET', key, 'until') or '0')
  wait = math.max(wait, until_ - now)
end
if redis.call('EXISTS', KEYS[4]) == 1 then wait = math.max(wait, 1000) end
if wait > 0 then return math.max(wait, 1000) end
redis.call('ZADD', KEYS[1], now, ARGV[8])
redis.call('PEXPIRE', KEYS[1], window)
redis.call('SET', KEYS[4], '1', 'PX', 60000)
local function count(key, free, cap)
  local n = redis.call('HINCRBY', key, 'count', 1)
  local delay = 0
  if n > free then delay = math.min(cap, 1000 * 2 ^ math.min(n - free - 1, 30)) end
  redis.call('HSET', key, 'until', now + delay)
  redis.call('PEXPIRE', key, tonumber(ARGV[7]) + delay)
end
count(KEYS[2], tonumber(ARGV[3]), tonumber(ARGV[4]))
count(KEYS[3], tonumber(ARGV[5]), tonumber(ARGV[6]))
redis.call('SADD', KEYS[5], KEYS[2])
redis.call('PEXPIRE', KEYS[5], tonumber(ARGV[7]) + tonumber(ARGV[4]))
return 0
"""


class RedisLoginThrottle:
    """:class:`LoginThrottle`'s policy with its records in Redis, shared by every hub (async).

    Keys ``hl:login:…``: the address window (a sorted set), the failure records of a username and
    of a (username, address) pair (hashes ``count``/``until``, expiring ``forget_s`` after the last
    failure), the one-attempt-at-a-time mark of a username. While Redis does not answer, the
    hub's own :class:`LoginThrottle` decides (the limits then hold per hub).
    """

    def __init__(self, redis: Any, local: LoginThrottle) -> None:
        import itertools
        import uuid

        self.redis = redis
        self.local = local
        self._script = redis.register_script(_LOGIN_BEGIN)
        self._ids = itertools.count()
        self._prefix = uuid.uuid4().hex[:8]

    @staticmethod
    def _keys(address: str, username: str) -> list[str]:
        return [f"hl:login:addr:{address}", f"hl:login:pair:{username}:{address}", f"hl:login:user:{username}",
                f"hl:login:inflight:{username}", f"hl:login:pairs:{username}"]

    async def begin(self, address: str, username: str) -> float:
        p = self.local
        try:
            window = p.addresses.window_s if isinstance(p.addresses, RateLimiter) else 300.0
            limit = p.addresses.limit if isinstance(p.addresses, RateLimiter) else 30
            wait_ms = await self._script(keys=self._keys(address, username), args=[
                limit, int(window * 1000), p.free_pair, int(p.max_pair_delay_s * 1000), p.free_user,
                int(p.max_user_delay_s * 1000), int(p.forget_s * 1000), f"{self._prefix}:{next(self._ids)}",
            ])
            return float(wait_ms) / 1000.0
        except Exception:  # noqa: BLE001 - Redis away: this hub decides alone
            logger.warning("the shared login throttle is unavailable; this hub decides", exc_info=True)
            return p.begin(address, username)

    async def succeeded(self, address: str, username: str) -> None:
        self.local.succeeded(address, username)
        keys = self._keys(address, username)
        try:
            await self.redis.delete(keys[1], keys[2], keys[3])
        except Exception:  # noqa: BLE001
            logger.warning("clearing a login throttle record failed", exc_info=True)

    async def failed(self, address: str, username: str) -> None:
        self.local.failed(address, username)
        try:
            await self.redis.delete(self._keys(address, username)[3])
        except Exception:  # noqa: BLE001
            logger.warning("clearing a login in-flight mark failed", exc_info=True)

    async def unlock(self, username: str) -> None:
        self.local.unlock(username)
        keys = self._keys("", username)
        try:
            pairs = [k.decode() if isinstance(k, bytes) else k for k in await self.redis.smembers(keys[4])]
            await self.redis.delete(keys[2], keys[4], *pairs)
        except Exception:  # noqa: BLE001
            logger.warning("unlocking %s in Redis failed", username, exc_info=True)
