"""Scoring the images of concurrent tasks together: one model call for the crops of every task that is ready within a
short latency budget.

A scoring process that runs several tasks at once (``fakewatch worker --pool threads --concurrency N``) hands each
task's decoded images to one :class:`Batcher`. The first caller to arrive leads: it waits until every task in flight
has brought its images, the budget (``FAKEWATCH_BATCH_BUDGET_MS``, 20 ms) has passed since it arrived, or the batch
is full, then scores them all in one call and hands each caller its own results. A process that runs one task at a
time (the prefork pool) never waits: with no other task in flight, the leader scores at once. Batch items already
arrive as chunks of ``FAKEWATCH_SCORE_BATCH_SIZE`` checks per task, scored in one call.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Generic, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")

DEFAULT_BUDGET_S = 0.020
# Images per model call at most: the detector splits them into calls of its runtime's rows anyway; this bounds
# the memory of one batch's crops.
DEFAULT_MAX_ITEMS = 64


@dataclass
class _Request(Generic[Item, Result]):
    items: Sequence[Item]
    done: threading.Event = field(default_factory=threading.Event)
    results: list[Result] | None = None
    error: BaseException | None = None


class Batcher(Generic[Item, Result]):
    """Groups concurrent ``score(items)`` calls into calls of ``score_many`` under a latency budget."""

    def __init__(self, score_many: Callable[[list[Item]], list[Result]], budget_s: float = DEFAULT_BUDGET_S,
                 max_items: int = DEFAULT_MAX_ITEMS) -> None:
        self._score_many = score_many
        self.budget_s = budget_s
        self.max_items = max_items
        self._lock = threading.Condition()
        self._pending: list[_Request[Item, Result]] = []
        self._preparing = 0  # tasks inside `expecting()` that have not called `score()` yet
        self._local = threading.local()
        self._model = threading.Lock()  # one model call at a time: an interpreter is not thread-safe
        self.calls: list[int] = []  # items per model call, newest last (the last 100): what a test or log reads
        self.call_seconds: list[float] = []  # and how long each call took

    @contextmanager
    def expecting(self) -> Iterator[None]:
        """Around a task that will call :meth:`score`: the leader waits for tasks in flight, not for strangers."""
        with self._lock:
            self._preparing += 1
        self._local.preparing = True
        try:
            yield
        finally:
            self._submitted()

    def _submitted(self) -> None:
        """This thread's task brought its images (or will bring none): the leader no longer waits for it."""
        if getattr(self._local, "preparing", False):
            self._local.preparing = False
            with self._lock:
                self._preparing -= 1
                self._lock.notify_all()

    def score(self, items: Sequence[Item]) -> list[Result]:
        """The results of ``items``, in order, scored together with whatever other tasks bring within the budget."""
        request: _Request[Item, Result] = _Request(items)
        deadline = time.monotonic() + self.budget_s
        with self._lock:
            self._pending.append(request)
            self._lock.notify_all()
        self._submitted()
        while not request.done.is_set():
            with self._model:  # whoever holds the model leads the next batch
                if request.done.is_set():
                    break
                self._lead(deadline)
        if request.error is not None:
            raise request.error
        assert request.results is not None
        return request.results

    def _lead(self, deadline: float) -> None:
        with self._lock:
            while (self._preparing > 0 and sum(len(r.items) for r in self._pending) < self.max_items
                   and (left := deadline - time.monotonic()) > 0):
                self._lock.wait(left)
            batch: list[_Request[Item, Result]] = []
            count = 0
            while self._pending and (not batch or count + len(self._pending[0].items) <= self.max_items):
                batch.append(self._pending.pop(0))
                count += len(batch[-1].items)
        if batch:
            self._run(batch)

    def _run(self, batch: list[_Request[Item, Result]]) -> None:
        items = [item for request in batch for item in request.items]
        self.calls = [*self.calls[-99:], len(items)]
        began = time.monotonic()
        try:
            results = self._score_many(items)
            self.call_seconds = [*self.call_seconds[-99:], time.monotonic() - began]
        except BaseException as error:  # noqa: BLE001 - every caller of the batch gets the model's error
            for request in batch:
                request.error = error
                request.done.set()
            return
        start = 0
        for request in batch:
            request.results = results[start : start + len(request.items)]
            start += len(request.items)
            request.done.set()
