"""Queue -> batch -> split: concurrent requests share one model call.

A :class:`Batcher` serves one function of one model version. Requests wait in a bounded queue
(counted in images). Whenever a model thread is free, the batcher takes the queued requests in
arrival order, up to ``max_batch_size`` images (a request is never split; one larger than the limit
runs alone). If another batch is still running, it first waits at most ``timeout_s`` after the
oldest request for more to arrive; a request reaching an idle model runs at once. While every model
thread is busy, requests simply accumulate, so batches grow with load. The results are split back to
each caller in order.

Failures stay with their owners: the model function reports bad images per index
(:class:`BatchOutcome.errors`) and only the requests holding them fail; an exception from the model
call fails that batch's requests only. Requests whose deadline passed while queued are dropped unrun.
With ``batching=False`` each request runs alone (the benchmark's baseline), through the same queue.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from server import tracing
from server.errors import DeadlineExpired, InvalidImage, QueueFull, Unavailable

log = logging.getLogger(__name__)


@dataclass
class BatchOutcome:
    """What a model function returns for a batch: one output row per image, and bad images by index.

    Rows of failed images hold zeros and must not be used.
    """

    outputs: np.ndarray
    errors: dict[int, str] = field(default_factory=dict)


@dataclass
class BatchStats:
    requests: int = 0
    images: int = 0
    batches: int = 0
    max_batch_size: int = 0
    batch_sizes: collections.Counter = field(default_factory=collections.Counter)


@dataclass
class _Pending:
    items: Sequence[Any]
    deadline: float | None  # time.monotonic() value, or None for no deadline
    future: asyncio.Future
    enqueued_at: float
    trace: Any = None  # the caller's trace context (tracing on), parent of its queue and model spans


class Batcher:
    """Runs ``run(items) -> BatchOutcome`` on batches of queued requests, in ``executor``.

    Event-driven, on the event loop: an arriving request, a finished batch and the end of a batching
    window each schedule one look at the queue (:meth:`_dispatch`), which starts as many batches as
    there are free model threads. A model thread hands its outcome straight back to the loop
    (``call_soon_threadsafe``), so a request costs two thread hand-offs and no helper tasks.

    Args:
        run: the model function; called from an executor thread with the concatenated items.
        max_batch_size: most items per call.
        timeout_s: longest wait for more requests once the first is queued.
        max_queued_items: queue capacity in items; a request that does not fit gets QueueFull at once.
        concurrency: batches that may run at the same time (model threads).
        batching: False runs every request alone.
        on_batch: called on the event loop after each model call with (batch size, queue seconds of
            the oldest request, model seconds); used for metrics.
    """

    def __init__(
        self,
        run: Callable[[list[Any]], BatchOutcome],
        executor: Executor,
        *,
        name: str,
        max_batch_size: int,
        timeout_s: float,
        max_queued_items: int,
        concurrency: int = 1,
        batching: bool = True,
        on_batch: Callable[[int, float, float], None] | None = None,
    ) -> None:
        self.name = name
        self._run = run
        self._executor = executor
        self.max_batch_size = max_batch_size if batching else 1
        self.timeout_s = timeout_s if batching else 0.0
        self.max_queued_items = max_queued_items
        self.batching = batching
        self._on_batch = on_batch
        self._concurrency = concurrency
        self._queue: collections.deque[_Pending] = collections.deque()
        self._queued_items = 0
        self._running_items = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._dispatch_scheduled = False
        self._window_timer: asyncio.TimerHandle | None = None
        self._running: set[asyncio.Future] = set()  # one per batch in a model thread, done when it ends
        self._closed = False
        self.stats = BatchStats()

    # NOTE: bound to the running loop in start(), not in __init__, which may run in a loader thread.
    def start(self) -> None:
        self._loop = asyncio.get_running_loop()

    @property
    def queued_items(self) -> int:
        """Images waiting in the queue."""
        return self._queued_items

    @property
    def running_items(self) -> int:
        """Images in model calls now (taken from the queue, results not yet delivered)."""
        return self._running_items

    async def submit(self, items: Sequence[Any], deadline: float | None = None) -> np.ndarray:
        """Queue ``items`` and wait for their output rows (in order)."""
        if self._closed or self._loop is None:
            raise Unavailable(f"{self.name} is not accepting requests (unloading); retry")
        if self._queued_items + len(items) > self.max_queued_items:
            raise QueueFull(
                f"{self.name}: queue full ({self._queued_items} images waiting, limit "
                f"{self.max_queued_items}); "
                "retry with backoff"
            )
        pending = _Pending(
            items, deadline, self._loop.create_future(), time.monotonic(), tracing.current_context()
        )
        self._queue.append(pending)
        self._queued_items += len(items)
        self.stats.requests += 1
        self._schedule_dispatch()
        return await pending.future

    def _schedule_dispatch(self) -> None:
        # NOTE: one look at the queue per loop iteration, after the callbacks already scheduled: requests
        # that arrive together (e.g. gathered) are seen together and can share a batch.
        if not self._dispatch_scheduled and not self._closed:
            self._dispatch_scheduled = True
            self._loop.call_soon(self._dispatch)

    def _dispatch(self) -> None:
        self._dispatch_scheduled = False
        while self._queue and len(self._running) < self._concurrency and not self._closed:
            # An idle model runs what is queued at once (waiting would only add latency: at c=1 nothing
            # else is coming); while a batch is running, the next one waits up to the window for company.
            if self.timeout_s > 0 and self._running and self._queued_items < self.max_batch_size:
                window_ends = self._queue[0].enqueued_at + self.timeout_s
                if time.monotonic() < window_ends:
                    self._wake_at(window_ends)
                    return
            batch = self._take_batch()
            if batch:
                self._start(batch)

    def _wake_at(self, when: float) -> None:
        if self._window_timer is not None:
            self._window_timer.cancel()
        delay = max(0.0, when - time.monotonic())
        self._window_timer = self._loop.call_later(delay, self._schedule_dispatch)

    def _take_batch(self) -> list[_Pending]:
        batch: list[_Pending] = []
        size = 0
        now = time.monotonic()
        while self._queue:
            head = self._queue[0]
            if batch and size + len(head.items) > self.max_batch_size:
                break
            self._queue.popleft()
            self._queued_items -= len(head.items)
            if head.future.done():  # the caller gave up (cancelled)
                continue
            if head.deadline is not None and head.deadline <= now:
                head.future.set_exception(
                    DeadlineExpired(f"{self.name}: deadline passed while queued; not run")
                )
                continue
            batch.append(head)
            size += len(head.items)
            if not self.batching:
                break
        return batch

    def _start(self, batch: list[_Pending]) -> None:
        items = [item for pending in batch for item in pending.items]
        done = self._loop.create_future()
        self._running.add(done)
        self._running_items += len(items)
        try:
            self._executor.submit(self._call_model, batch, items, done)
        except RuntimeError:  # the executor is shut down: the server is stopping
            self._finish(batch, done, None, Unavailable(f"{self.name} is shutting down; retry"), 0.0, 0.0)

    def _call_model(self, batch: list[_Pending], items: list[Any], done: asyncio.Future) -> None:
        """In a model thread: run the batch, then hand the outcome back to the event loop."""
        started = time.monotonic()
        outcome, error = None, None
        try:
            outcome = self._run(items)
        except Exception as exc:  # reported to this batch's callers only, by _finish
            error = exc
        except BaseException as exc:  # noqa: BLE001 - e.g. SystemExit: still free the slot; callers get INTERNAL
            error = RuntimeError(f"model call raised {type(exc).__name__}: {exc}")
        finished = time.monotonic()
        try:
            self._loop.call_soon_threadsafe(self._finish, batch, done, outcome, error, started, finished)
        except RuntimeError:  # the event loop is closed (the process is exiting): nobody is waiting
            pass

    def _finish(
        self,
        batch: list[_Pending],
        done: asyncio.Future,
        outcome: BatchOutcome | None,
        error: Exception | None,
        started: float,
        finished: float,
    ) -> None:
        """On the event loop: give each request its rows (or its error), then look at the queue again."""
        self._running.discard(done)
        self._running_items -= sum(len(pending.items) for pending in batch)
        if not done.done():
            done.set_result(None)
        try:
            self._deliver(batch, outcome, error, started, finished)
        except (
            Exception
        ) as exc:  # a bug while delivering (e.g. in metrics): these callers fail, the queue goes on
            log.exception("%s: delivering a batch's results failed", self.name)
            for pending in batch:
                if not pending.future.done():
                    pending.future.set_exception(exc)
        finally:
            self._schedule_dispatch()

    def _deliver(
        self,
        batch: list[_Pending],
        outcome: BatchOutcome | None,
        error: Exception | None,
        started: float,
        finished: float,
    ) -> None:
        items = sum(len(pending.items) for pending in batch)
        if error is not None or outcome is None:
            if not isinstance(error, Unavailable):
                log.error("%s: batch of %d failed", self.name, items, exc_info=error)
            for pending in batch:
                if not pending.future.done():
                    pending.future.set_exception(error or RuntimeError("the model call returned nothing"))
            return
        self._record(items, started - batch[0].enqueued_at, finished - started)
        if tracing.enabled():
            tracing.record_batch(
                self.name, [p.trace for p in batch], [p.enqueued_at for p in batch], started, finished, items
            )
        offset = 0
        for pending in batch:
            count = len(pending.items)
            bad = sorted(i - offset for i in outcome.errors if offset <= i < offset + count)
            if not pending.future.done():
                if bad:
                    pending.future.set_exception(InvalidImage(bad[0], outcome.errors[offset + bad[0]]))
                else:
                    pending.future.set_result(outcome.outputs[offset : offset + count])
            offset += count

    def _record(self, size: int, queued_s: float, model_s: float) -> None:
        self.stats.batches += 1
        self.stats.images += size
        self.stats.max_batch_size = max(self.stats.max_batch_size, size)
        self.stats.batch_sizes[size] += 1
        if self._on_batch is not None:
            self._on_batch(size, queued_s, model_s)

    async def close(self, timeout_s: float = 30.0) -> None:
        """Stop accepting; fail what is still queued; wait (bounded) for running batches."""
        self._closed = True
        if self._window_timer is not None:
            self._window_timer.cancel()
        while self._queue:
            pending = self._queue.popleft()
            if not pending.future.done():
                pending.future.set_exception(Unavailable(f"{self.name} was unloaded; retry"))
        self._queued_items = 0
        if self._running:
            await asyncio.wait(set(self._running), timeout=timeout_s)
