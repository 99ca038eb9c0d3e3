"""The serving benchmark's in-process workers answer its commands (protocol only; no timing asserted)."""

from __future__ import annotations

import io
import json

import pytest

from bench.inprocess import SWEEP_BATCHES, SWEEP_CALLERS, InProcess, serve_commands


class FakeModel:
    def rate(self, batch: int, seconds: float, callers: int = 1) -> float:
        return batch * 10.0 * callers

    def sweep(self, seconds: float) -> list[dict]:
        return [
            {"callers": c, "batch": b, "images_per_s": self.rate(b, seconds, c)}
            for c in SWEEP_CALLERS
            for b in SWEEP_BATCHES
        ]

    def single_latencies(self, count: int) -> list[float]:
        return [0.03] * count


def answers(*commands: dict) -> list:
    out = io.StringIO()
    serve_commands(FakeModel(), [json.dumps(command) + "\n" for command in commands], out)
    return [json.loads(line) for line in out.getvalue().splitlines()]


def test_each_command_gets_one_json_answer_in_order():
    rate, rate2, sweep, single = answers(
        {"op": "rate", "batch": 8, "seconds": 1},
        {"op": "rate", "batch": 8, "callers": 2, "seconds": 1},
        {"op": "sweep", "seconds": 1},
        {"op": "single", "count": 3},
    )
    assert (rate, rate2) == (80.0, 160.0)
    assert {(e["callers"], e["batch"]): e["images_per_s"] for e in sweep} == {
        (c, b): b * 10.0 * c for c in SWEEP_CALLERS for b in SWEEP_BATCHES
    }
    assert single == [0.03, 0.03, 0.03]


class CountingSignature:
    """Stands in for a ``classify`` signature: counts the images it is called with, per thread."""

    def __init__(self) -> None:
        import threading

        self.images_by_thread: dict[str, int] = {}
        self._lock = threading.Lock()

    def __call__(self, images):
        import threading
        import time

        import numpy as np

        time.sleep(0.01)
        with self._lock:
            name = threading.current_thread().name
            self.images_by_thread[name] = self.images_by_thread.get(name, 0) + int(images.shape[0])
        return {"probabilities": _Numpy(np.zeros((int(images.shape[0]), 3)))}


class _Numpy:
    def __init__(self, array) -> None:
        self.array = array

    def numpy(self):
        return self.array


def test_rate_with_two_callers_calls_from_two_threads_and_counts_every_image():
    signature = CountingSignature()
    rate = InProcess(signature, [b"a", b"b", b"c"]).rate(batch=4, seconds=0.3, callers=2)
    callers = {name: n for name, n in signature.images_by_thread.items() if name.startswith("bench-caller-")}
    assert sorted(callers) == ["bench-caller-0", "bench-caller-1"]
    assert all(n >= 4 for n in callers.values())
    assert 0 < rate <= (sum(callers.values())) / 0.3


def test_an_unknown_command_is_an_error_not_a_silent_answer():
    with pytest.raises(ValueError, match="unknown op"):
        answers({"op": "dance"})


def test_a_failing_call_in_any_caller_thread_fails_the_rate_instead_of_reading_as_slow():
    class FailsInOneThread(CountingSignature):
        def __call__(self, images):
            import threading

            if threading.current_thread().name == "bench-caller-1":
                raise RuntimeError("model call failed")
            return super().__call__(images)

    with pytest.raises(RuntimeError, match="model call failed"):
        InProcess(FailsInOneThread(), [b"a"]).rate(batch=2, seconds=0.3, callers=2)
