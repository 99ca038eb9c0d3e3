"""The benchmark's load windows count steady-state answers only, and end even if every call fails."""

from __future__ import annotations

import asyncio

from bench.load import _load_window
from client.errors import ImageServeError


class FakeCaller:
    """Answers each call after ``seconds``; with ``fail``, every call fails."""

    def __init__(self, seconds: float, fail: bool = False) -> None:
        self.seconds, self.fail, self.calls = seconds, fail, 0

    async def close(self) -> None:
        pass

    async def classify(self, image):
        self.calls += 1
        await asyncio.sleep(self.seconds)
        if self.fail:
            raise ImageServeError("model unavailable")


def test_a_window_counts_answers_from_a_full_pipeline_for_its_length():
    caller, latencies, errors = FakeCaller(0.01), [], []
    counted = asyncio.run(_load_window(caller, [b"x"], 4, 0.3, latencies, errors))
    # 4 callers, 10 ms per call: ~400 answers/s over 0.3 s (event-loop timing is loose; no exact figure)
    assert 60 <= counted <= 130
    assert len(latencies) == counted and errors == []
    assert caller.calls > counted  # the calls filling the pipeline and draining it are not counted


def test_a_window_ends_when_every_call_fails():
    caller, latencies, errors = FakeCaller(0.001, fail=True), [], []
    counted = asyncio.run(asyncio.wait_for(_load_window(caller, [b"x"], 4, 0.1, latencies, errors), 10))
    assert counted == 0 and latencies == []
    assert errors and errors[0].endswith("model unavailable")


def test_a_level_reports_each_limit_and_the_ratio_to_it():
    from bench.load import LEVEL_WINDOWS, measure_level

    class FakeServer:
        def open_caller(self):
            return FakeCaller(0.01)

        def rate(self, seconds, limit="limit"):
            return {"limit": 100.0, "concurrent_limit": 200.0}[limit]

    level = asyncio.run(measure_level(FakeServer(), [b"x"], 2, 1.0))
    assert level["limit_by_window"] == [100.0] * (LEVEL_WINDOWS + 1)
    assert level["concurrent_limit_images_per_s"] == 200.0
    assert level["ratio_to_limit"] == level["images_per_s"] / 100.0
    assert level["ratio_to_concurrent_limit"] == level["images_per_s"] / 200.0
    assert level["errors"] == 0 and level["images_per_s"] > 0
