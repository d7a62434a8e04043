"""The local backend's engine (optimizer.backends.parallel): every item once, results as they
finish, never more than `concurrency` in flight, and a failure raised to the caller.

Threads and sleeps only: no model, no Docker.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Generator

import pytest

from optimizer.backends import parallel


class _InFlight:
    """Counts calls running at once."""

    def __init__(self) -> None:
        self.now = self.most = 0
        self.lock = threading.Lock()

    def work(self, item: int) -> int:
        with self.lock:
            self.now += 1
            self.most = max(self.most, self.now)
        time.sleep(0.02)
        with self.lock:
            self.now -= 1
        return item * item


@pytest.mark.parametrize("concurrency", [1, 3, 50])
def test_every_item_once_and_never_more_than_concurrency_in_flight(concurrency: int) -> None:
    counter = _InFlight()
    results = list(parallel(range(12), counter.work, concurrency))
    assert sorted(results) == [(i, i * i) for i in range(12)]
    assert counter.most <= min(concurrency, 12)
    if concurrency > 1:
        assert counter.most > 1  # they did overlap


def test_results_come_as_they_finish() -> None:
    def work(seconds: float) -> float:
        time.sleep(seconds)
        return seconds

    assert [item for item, _ in parallel([0.3, 0.0], work, 2)] == [0.0, 0.3]


def test_nothing_to_do_yields_nothing_and_concurrency_is_at_least_one() -> None:
    assert list(parallel([], lambda x: x, 4)) == []
    assert list(parallel([1, 2], lambda x: x + 1, 0)) == [(1, 2), (2, 3)]


def test_a_failure_is_raised_to_the_caller_after_what_finished_before() -> None:
    def work(item: int) -> int:
        if item == 2:
            raise ValueError("item 2 failed")
        return item

    seen = []
    with pytest.raises(ValueError, match="item 2 failed"):
        for item, _ in parallel([0, 1, 2, 3], work, 1):
            seen.append(item)
    assert seen == [0, 1]


def test_the_caller_can_stop_reading_without_waiting_for_work_in_flight() -> None:
    release = threading.Event()

    def work(item: int) -> int:
        if item:
            release.wait(10)
        return item

    started = time.monotonic()
    results = parallel([0, 1], work, 2)
    assert isinstance(results, Generator)
    assert next(results) == (0, 0)
    results.close()  # as after Ctrl-C: the slow call is left to its daemon thread
    assert time.monotonic() - started < 5
    release.set()
