"""The sliding-window rate limiter behind customer messages and agent logins."""

from __future__ import annotations

import pytest

from bot.hub.ratelimit import RateLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_key_gets_limit_events_per_window_and_others_are_independent() -> None:
    clock = Clock()
    limiter = RateLimiter(3, 10.0, clock)
    results = []
    for _ in range(4):
        results.append(limiter.hit("a"))
        clock.now += 1
    assert results == [True, True, True, False]  # events at 100, 101, 102; refused at 103
    assert limiter.hit("b")  # another key is not affected
    assert limiter.blocked("a") and not limiter.blocked("b")
    clock.now = 104.0
    assert limiter.retry_after("a") == pytest.approx(6.0)
    clock.now = 110.0  # the event of 100 left the window: exactly one more is allowed
    assert limiter.hit("a") and not limiter.hit("a")


def test_refused_events_do_not_extend_the_wait() -> None:
    clock = Clock()
    limiter = RateLimiter(1, 5.0, clock)
    assert limiter.hit("k")
    for _ in range(10):
        clock.now += 0.4
        assert not limiter.hit("k")
    clock.now = 105.0
    assert limiter.hit("k")


def test_idle_keys_are_forgotten() -> None:
    clock = Clock()
    limiter = RateLimiter(2, 1.0, clock)
    for i in range(100):
        limiter.hit(f"visitor-{i}")
    assert len(limiter) == 100
    clock.now += 2
    limiter.hit("fresh")
    assert len(limiter) == 1


def test_bad_parameters_are_refused() -> None:
    with pytest.raises(ValueError):
        RateLimiter(0, 1.0)
    with pytest.raises(ValueError):
        RateLimiter(1, 0)
