"""The hub's abuse limits in one place: client addresses, anonymous traffic, agent logins.

* :func:`client_address` — the address a request really comes from: the socket's peer, or, when
  the peer is a trusted reverse proxy (``HUMANLINE_TRUSTED_PROXIES``), the last untrusted address
  of ``X-Forwarded-For``. Without trusted proxies the header is ignored, so a client cannot pick
  its own address to dodge the limits.
* :class:`HubSecurity` — the per-process counters: open customer sockets, hellos and new
  visitors per address, the :class:`~bot.hub.ratelimit.LoginThrottle`, and the password-hashing
  executor (one thread, at most four logins in progress) that keeps a login flood off the thread pool every
  database call uses. The hello and new-visitor counters are shared
  through Redis when ``REDIS_URL`` is set (:class:`~bot.hub.ratelimit.RedisRateLimiter`); the
  open-socket count is per hub (a socket lives in one process); the login throttle's records
  are shared the same way (:class:`~bot.hub.ratelimit.RedisLoginThrottle`).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ipaddress
import os
import sys
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from bot.hub.ratelimit import LoginThrottle, RedisLoginThrottle, make_limiter
from bot.services.agents import verify_password
from bot.settings import Settings

#: one thread: a login flood can take at most one core, whatever the machine has
HASH_WORKERS = 1
#: hellos whose database work runs at once, each in one trip to its own thread pool (never the
#: pool established customers' messages use); the rest wait their turn in the event loop, so a
#: reconnect storm queues at most this many transactions ahead of a customer's message
HELLO_CONCURRENCY = 2
#: connections the kernel may hold for the hub before it accepts them (``listen()`` backlog;
#: the kernel caps it at ``net.core.somaxconn``). Sanic's default of 100 made a burst of
#: connects overflow: the dropped SYNs are retried by the clients after 1, 3, 7, 15, 31 s…
LISTEN_BACKLOG = 4096
#: logins allowed to be in progress (waiting for or using the hashing thread); more get 503 at once
MAX_HASH_BACKLOG = 4

T = TypeVar("T")
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(entries: Iterable[str]) -> tuple[Network, ...]:
    """``10.0.0.1``, ``10.0.0.0/8``, ``::1`` … as networks.

    :raises ValueError: an entry is neither an address nor a network.
    """
    return tuple(ipaddress.ip_network(e.strip(), strict=False) for e in entries if e.strip())


def _in(address: str, networks: tuple[Network, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in net for net in networks)


def client_address(peer: str | None, forwarded_for: str | None, trusted: tuple[Network, ...]) -> str:
    """The client behind ``peer``: see the module docstring. ``?`` when nothing is known."""
    address = (peer or "").strip() or "?"
    if not trusted or not forwarded_for or not _in(address, trusted):
        return address
    # Right to left: each trusted proxy appended the address it received the request from.
    for hop in reversed([h.strip() for h in forwarded_for.split(",") if h.strip()]):
        if not _in(hop, trusted):
            return hop[:64]
        address = hop
    return address


def request_address(request: Any, trusted: tuple[Network, ...]) -> str:
    """:func:`client_address` of a Sanic request."""
    return client_address(getattr(request, "ip", None), request.headers.get("x-forwarded-for"), trusted)


def _lower_priority() -> None:
    """Run the hashing thread at nice 10: under a login flood the event loop (every customer)
    gets the CPU first. On Linux the nice value is per thread; elsewhere it would be the whole
    process's, so it is left alone there."""
    if sys.platform == "linux":
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, 0, min(19, os.getpriority(os.PRIO_PROCESS, 0) + 10))


class HubSecurity:
    """Per-process abuse counters of one hub (see the module docstring)."""

    def __init__(self, settings: Settings, redis: Any = None) -> None:
        self.trusted_proxies = parse_networks(settings.trusted_proxies)
        self.sockets_per_address = max(1, settings.sockets_per_address)
        # Shared by every hub when the hub has a Redis client (REDIS_URL), else this process's.
        self.hellos = make_limiter(redis, "hellos", max(1, settings.hellos_per_minute), 60.0)
        self.new_visitors = make_limiter(redis, "new_visitors", max(1, settings.new_visitors_per_minute), 60.0)
        self.login = LoginThrottle(attempts_per_address=max(1, settings.login_attempts_per_address))
        #: the same policy with its records in Redis, for every hub (``None``: this hub's alone)
        self.shared_login = RedisLoginThrottle(redis, self.login) if redis is not None else None
        self._sockets: dict[str, int] = {}
        self._hello_slots: asyncio.Semaphore | None = None
        self._hello_pool: ThreadPoolExecutor | None = None
        self._hasher: ThreadPoolExecutor | None = None
        self._hash_backlog = 0

    # ---- customer sockets ------------------------------------------------------------------

    def open_socket(self, address: str) -> bool:
        """Count a new customer socket of ``address``; False (not counted) above the cap."""
        n = self._sockets.get(address, 0)
        if n >= self.sockets_per_address:
            return False
        self._sockets[address] = n + 1
        return True

    def close_socket(self, address: str) -> None:
        n = self._sockets.get(address, 0) - 1
        if n > 0:
            self._sockets[address] = n
        else:
            self._sockets.pop(address, None)

    def open_sockets(self, address: str | None = None) -> int:
        """Open customer sockets of ``address`` (``None``: addresses tracked)."""
        return len(self._sockets) if address is None else self._sockets.get(address, 0)

    @property
    def hello_slots(self) -> asyncio.Semaphore:
        """At most :data:`HELLO_CONCURRENCY` hellos do their database work at once."""
        if self._hello_slots is None:  # created on the serving loop
            self._hello_slots = asyncio.Semaphore(HELLO_CONCURRENCY)
        return self._hello_slots

    # ---- the login throttle: shared through Redis when there is one ---------------------------

    async def login_begin(self, address: str, username: str) -> float:
        """:meth:`LoginThrottle.begin` (0: go ahead; else seconds to wait)."""
        if self.shared_login is not None:
            return await self.shared_login.begin(address, username)
        return self.login.begin(address, username)

    async def login_done(self, address: str, username: str, ok: bool) -> None:
        if self.shared_login is not None:
            await (self.shared_login.succeeded if ok else self.shared_login.failed)(address, username)
        elif ok:
            self.login.succeeded(address, username)
        else:
            self.login.failed(address, username)

    async def login_unlock(self, username: str) -> None:
        if self.shared_login is not None:
            await self.shared_login.unlock(username)
        else:
            self.login.unlock(username)

    async def run_hello(self, fn: Callable[..., T], *args: Any) -> T:
        """A hello's blocking database work, on the hello pool (:data:`HELLO_CONCURRENCY`
        threads): a reconnect storm cannot take the threads established customers' turns use."""
        if self._hello_pool is None:
            self._hello_pool = ThreadPoolExecutor(HELLO_CONCURRENCY, thread_name_prefix="hello")
        return await asyncio.get_running_loop().run_in_executor(self._hello_pool, functools.partial(fn, *args))

    # ---- passwords ----------------------------------------------------------------------------

    def reserve_login(self) -> bool:
        """Take one of the :data:`MAX_HASH_BACKLOG` login slots (False: all taken, answer 503).

        Taken before anything is awaited, so a burst cannot slip past it; give it back with
        :meth:`release_login`.
        """
        if self._hash_backlog >= MAX_HASH_BACKLOG:
            return False
        self._hash_backlog += 1
        return True

    def release_login(self) -> None:
        self._hash_backlog -= 1

    async def check_password(self, password: str, stored_hash: str) -> bool:
        """:func:`verify_password` on the hashing executor (:data:`HASH_WORKERS` thread, nice 10)."""
        if self._hasher is None:
            self._hasher = ThreadPoolExecutor(HASH_WORKERS, thread_name_prefix="password-hash",
                                              initializer=_lower_priority)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._hasher, verify_password, password, stored_hash)

    def close(self) -> None:
        if self._hello_pool is not None:
            self._hello_pool.shutdown(wait=False, cancel_futures=True)
            self._hello_pool = None
        if self._hasher is not None:
            self._hasher.shutdown(wait=False, cancel_futures=True)
            self._hasher = None
