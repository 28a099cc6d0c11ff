"""The SQLite file lock serves waiters in arrival order (bot/store/db.py ``FairRLock``): a thread
running transaction after transaction cannot keep another waiting (a reconnect storm's hellos
kept a customer's turn waiting for seconds behind ``threading.RLock``)."""

from __future__ import annotations

import threading
import time

import pytest

from bot.store.db import FairRLock, sqlite_lock


def _until(condition: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.001)


def test_a_released_lock_goes_to_the_longest_waiter_not_back_to_the_releaser() -> None:
    lock = FairRLock()
    order: list[str] = []
    lock.acquire()
    lock.acquire()  # reentrant
    lock.release()

    def waiter(name: str) -> None:
        with lock:
            order.append(name)

    threads = []
    for i, name in enumerate(("first", "second")):
        t = threading.Thread(target=waiter, args=(name,))
        t.start()
        threads.append(t)
        _until(lambda n=i + 1: lock.waiting() == n)
    lock.release()
    # The releaser wants it again at once: it queues behind both waiters.
    with lock:
        order.append("releaser")
    for t in threads:
        t.join(10)
    assert order == ["first", "second", "releaser"]
    with pytest.raises(RuntimeError):
        lock.release()  # not held


def test_a_busy_thread_cannot_starve_another() -> None:
    lock = FairRLock()
    stop = threading.Event()
    rounds = [0]

    def busy() -> None:
        while not stop.is_set():
            with lock:
                rounds[0] += 1
                time.sleep(0.002)

    hammer = threading.Thread(target=busy)
    hammer.start()
    try:
        _until(lambda: rounds[0] > 3)
        for _ in range(20):  # each acquisition waits for at most the one transaction in progress
            before = rounds[0]
            with lock:
                assert rounds[0] - before <= 1
    finally:
        stop.set()
        hammer.join(10)


def test_one_lock_per_sqlite_file_and_none_in_memory(tmp_path: object) -> None:
    path = f"{tmp_path}/x.db"
    assert sqlite_lock(path) is sqlite_lock(path)
    assert isinstance(sqlite_lock(path), FairRLock)
    assert sqlite_lock(":memory:") is None
