"""The batcher's collection logic on its own, with a fake model that records the batches it runs."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from server.batching import Batcher, BatchOutcome
from server.errors import DeadlineExpired, InvalidImage, QueueFull, Unavailable


class FakeModel:
    """Echoes each item as a one-column row; items equal to "bad" are reported as bad images.

    ``gate`` (when given) holds every call until set, so that requests pile up in the queue.
    """

    def __init__(self, gate: threading.Event | None = None, fail_with: Exception | None = None) -> None:
        self.batches: list[list] = []
        self.gate = gate
        self.fail_with = fail_with
        self.started = threading.Event()

    def __call__(self, items: list) -> BatchOutcome:
        self.batches.append(list(items))
        self.started.set()
        if self.gate is not None:
            assert self.gate.wait(10), "test gate never opened"
        if self.fail_with is not None and "boom" in items:
            raise self.fail_with
        rows = np.array([[0.0 if item == "bad" else float(item)] for item in items], np.float32)
        errors = {i: f"could not decode item {i}" for i, item in enumerate(items) if item == "bad"}
        return BatchOutcome(rows, errors)


def run(scenario, model: FakeModel, **options):
    """Run ``scenario(batcher)`` on a fresh event loop with a started batcher around ``model``."""
    defaults = dict(name="fake", max_batch_size=4, timeout_s=0.05, max_queued_items=64, concurrency=1)

    async def main():
        with ThreadPoolExecutor(2) as executor:
            batcher = Batcher(model, executor, **{**defaults, **options})
            batcher.start()
            try:
                return await scenario(batcher)
            finally:
                if model.gate is not None:
                    model.gate.set()
                await batcher.close()

    return asyncio.run(main())


async def gather(*awaitables):
    return await asyncio.gather(*awaitables, return_exceptions=True)


async def wait_until(predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.001)


def test_requests_that_queue_while_the_model_is_busy_run_together_in_order():
    gate = threading.Event()
    model = FakeModel(gate)

    async def scenario(batcher):
        first = asyncio.ensure_future(batcher.submit([0]))
        await wait_until(model.started.is_set)  # the model is busy with [0]; the rest queue up
        rest = [asyncio.ensure_future(batcher.submit([i])) for i in range(1, 10)]
        await wait_until(lambda: batcher.queued_items == 9)
        gate.set()
        return await gather(first, *rest)

    results = run(scenario, model)
    assert [r.ravel().tolist() for r in results] == [[float(i)] for i in range(10)]
    assert [len(b) for b in model.batches] == [1, 4, 4, 1]
    assert [item for batch in model.batches for item in batch] == list(range(10))


def test_multi_image_requests_count_by_images_and_are_never_split():
    gate = threading.Event()
    model = FakeModel(gate)

    async def scenario(batcher):
        first = asyncio.ensure_future(batcher.submit([0]))
        await wait_until(model.started.is_set)
        a = asyncio.ensure_future(batcher.submit([1, 2, 3]))
        b = asyncio.ensure_future(batcher.submit([4, 5]))  # 3 + 2 > 4: next batch
        c = asyncio.ensure_future(batcher.submit([6, 7, 8, 9, 10, 11]))  # larger than a batch: alone
        await wait_until(lambda: batcher.queued_items == 11)
        gate.set()
        return await gather(first, a, b, c)

    results = run(scenario, model)
    assert [r.ravel().tolist() for r in results] == [
        [0.0],
        [1.0, 2.0, 3.0],
        [4.0, 5.0],
        [6.0, 7.0, 8.0, 9.0, 10.0, 11.0],
    ]
    assert model.batches == [[0], [1, 2, 3], [4, 5], [6, 7, 8, 9, 10, 11]]


def test_an_idle_model_runs_a_lone_request_at_once():
    model = FakeModel()

    async def scenario(batcher):
        started = time.monotonic()
        await batcher.submit([1])
        return time.monotonic() - started

    assert run(scenario, model, timeout_s=0.5) < 0.25  # no waiting for company that is not coming
    assert model.batches == [[1]]


def test_while_a_batch_runs_the_next_one_waits_the_window_for_company():
    gate = threading.Event()
    model = FakeModel(gate)

    async def scenario(batcher):
        async def later(i, delay):
            await asyncio.sleep(delay)
            return await batcher.submit([i])

        running = asyncio.ensure_future(batcher.submit([0]))
        await wait_until(model.started.is_set)  # a batch runs; the second model thread is free
        started = time.monotonic()
        rest = [asyncio.ensure_future(later(i, delay)) for i, delay in ((1, 0), (2, 0.05), (3, 0.1))]
        await wait_until(lambda: len(model.batches) == 2)
        waited = time.monotonic() - started
        gate.set()
        await gather(running, *rest)
        return waited

    waited = run(scenario, model, timeout_s=0.3, concurrency=2, max_batch_size=8)
    assert model.batches == [[0], [1, 2, 3]]  # the later arrivals joined within the window
    assert 0.25 <= waited < 2.0


def test_a_full_batch_does_not_wait_for_the_window():
    gate = threading.Event()
    model = FakeModel(gate)

    async def scenario(batcher):
        running = asyncio.ensure_future(batcher.submit([0]))
        await wait_until(model.started.is_set)
        started = time.monotonic()
        full = [asyncio.ensure_future(batcher.submit([i])) for i in range(1, 5)]
        await wait_until(lambda: len(model.batches) == 2)
        dispatched_after = time.monotonic() - started
        gate.set()
        await gather(running, *full)
        return dispatched_after

    assert run(scenario, model, timeout_s=1.0, concurrency=2) < 0.5
    assert model.batches == [[0], [1, 2, 3, 4]]


def test_a_bad_image_fails_only_its_own_request():
    model = FakeModel()

    async def scenario(batcher):
        return await gather(batcher.submit([1, 2]), batcher.submit([3, "bad", 4]), batcher.submit([5]))

    good, bad, other = run(scenario, model, max_batch_size=8, timeout_s=0.1)
    assert len(model.batches) == 1
    assert good.ravel().tolist() == [1.0, 2.0] and other.ravel().tolist() == [5.0]
    assert isinstance(bad, InvalidImage) and bad.index == 1  # index within its own request
    assert "could not decode" in str(bad)


def test_a_failed_batch_fails_only_its_own_requests():
    gate = threading.Event()
    model = FakeModel(gate, fail_with=RuntimeError("model exploded"))

    async def scenario(batcher):
        first = asyncio.ensure_future(batcher.submit(["boom"]))
        await wait_until(model.started.is_set)
        later = [asyncio.ensure_future(batcher.submit([i])) for i in (1, 2)]
        await wait_until(lambda: batcher.queued_items == 2)
        gate.set()
        return await gather(first, *later)

    first, *later = run(scenario, model)
    assert isinstance(first, RuntimeError)
    assert [r.ravel().tolist() for r in later] == [[1.0], [2.0]]


def test_a_full_queue_refuses_at_once():
    gate = threading.Event()
    model = FakeModel(gate)

    async def scenario(batcher):
        running = asyncio.ensure_future(batcher.submit([0]))
        await wait_until(model.started.is_set)
        queued = [asyncio.ensure_future(batcher.submit([i])) for i in range(1, 5)]
        await wait_until(lambda: batcher.queued_items == 4)
        started = time.monotonic()
        with pytest.raises(QueueFull, match="queue full"):
            await batcher.submit([99, 100])
        refused_in = time.monotonic() - started
        gate.set()
        await gather(running, *queued)
        return refused_in

    assert run(scenario, model, max_queued_items=5) < 0.05
    assert 99 not in [item for batch in model.batches for item in batch]


def test_requests_whose_deadline_passed_are_dropped_unrun():
    gate = threading.Event()
    model = FakeModel(gate)

    async def scenario(batcher):
        running = asyncio.ensure_future(batcher.submit([0]))
        await wait_until(model.started.is_set)
        expiring = asyncio.ensure_future(batcher.submit([1], deadline=time.monotonic() + 0.05))
        patient = asyncio.ensure_future(batcher.submit([2], deadline=time.monotonic() + 30))
        await asyncio.sleep(0.1)  # let the first deadline pass while the model is busy
        gate.set()
        return await gather(running, expiring, patient)

    _, expired, patient = run(scenario, model)
    assert isinstance(expired, DeadlineExpired)
    assert patient.ravel().tolist() == [2.0]
    assert 1 not in [item for batch in model.batches for item in batch]


def test_batching_off_runs_every_request_alone():
    gate = threading.Event()
    model = FakeModel(gate)

    async def scenario(batcher):
        first = asyncio.ensure_future(batcher.submit([0, 1]))
        await wait_until(model.started.is_set)
        rest = [asyncio.ensure_future(batcher.submit([i])) for i in (2, 3, 4)]
        await wait_until(lambda: batcher.queued_items == 3)
        gate.set()
        return await gather(first, *rest)

    run(scenario, model, batching=False)
    assert model.batches == [[0, 1], [2], [3], [4]]


def test_stats_count_requests_images_and_batch_sizes():
    model = FakeModel()

    async def scenario(batcher):
        await gather(*(batcher.submit([i]) for i in range(4)))
        await batcher.submit([5, 6])
        return batcher.stats

    stats = run(scenario, model, timeout_s=0.2)
    assert (stats.requests, stats.images, stats.batches, stats.max_batch_size) == (5, 6, 2, 4)
    assert stats.batch_sizes == {4: 1, 2: 1}


def test_concurrent_clients_are_batched_by_a_real_server(stub, photos):
    from protos.imageserve.v1 import image_service_pb2 as pb
    from tests.conftest import CLASSIFIER

    def stats():
        status = stub.GetModelStatus(pb.GetModelStatusRequest(name=CLASSIFIER))
        return status.versions[0].stats

    before = stats()
    request = pb.ClassifyRequest(model=pb.ModelSpec(name=CLASSIFIER), images=[photos["chelsea.jpg"]], top_k=1)
    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda _: stub.Classify(request, timeout=60), range(96)))
    assert {a.results[0].predictions[0].class_id for a in answers} == {
        answers[0].results[0].predictions[0].class_id
    }
    after = stats()
    images, batches = after.images - before.images, after.batches - before.batches
    assert images == 96
    assert batches < images / 2, f"{images} images in {batches} model calls: not batched"
    assert after.max_batch_size > 1


def test_a_stopped_executor_answers_unavailable_not_a_crash():
    model = FakeModel()

    async def main():
        executor = ThreadPoolExecutor(1)
        batcher = Batcher(model, executor, name="fake", max_batch_size=4, timeout_s=0.05, max_queued_items=64)
        batcher.start()
        executor.shutdown()  # the server is stopping
        with pytest.raises(Unavailable, match="shutting down"):
            await batcher.submit([1])
        await batcher.close()

    asyncio.run(main())
    assert model.batches == []


def test_a_failure_while_delivering_results_does_not_stall_the_queue():
    gate = threading.Event()
    model = FakeModel(gate)
    failures = iter([RuntimeError("metrics broke")])

    def on_batch(size, queued_s, model_s):
        failure = next(failures, None)
        if failure is not None:
            raise failure

    async def scenario(batcher):
        first = asyncio.ensure_future(batcher.submit([1]))
        await wait_until(model.started.is_set)
        second = asyncio.ensure_future(batcher.submit([2]))  # queued behind the running batch
        await wait_until(lambda: batcher.queued_items == 1)
        gate.set()
        return await asyncio.wait_for(gather(first, second), 5)

    first, second = run(scenario, model, on_batch=on_batch)
    assert isinstance(first, RuntimeError) and "metrics broke" in str(first)
    assert second.ravel().tolist() == [2.0]  # served, not left waiting for the next arrival


def test_a_model_thread_dying_with_systemexit_frees_its_slot():
    class ExitingModel(FakeModel):
        def __call__(self, items):
            if 0 in items:
                raise SystemExit(3)
            return super().__call__(items)

    model = ExitingModel()

    async def scenario(batcher):
        return await asyncio.wait_for(gather(batcher.submit([0]), batcher.submit([5])), 5)

    exited, served = run(scenario, model, batching=False)
    assert isinstance(exited, RuntimeError) and "SystemExit" in str(exited)
    assert served.ravel().tolist() == [5.0]
