"""The serving benchmark's in-process workers answer its commands (protocol only; no timing asserted)."""

from __future__ import annotations

import io
import json

import pytest

from bench.inprocess import SWEEP_BATCHES, serve_commands


class FakeModel:
    def rate(self, batch: int, seconds: float) -> float:
        return batch * 10.0

    def sweep(self, seconds: float) -> dict[int, float]:
        return {batch: self.rate(batch, seconds) for batch in SWEEP_BATCHES}

    def single_latencies(self, count: int) -> list[float]:
        return [0.03] * count


def answers(*commands: dict) -> list:
    out = io.StringIO()
    serve_commands(FakeModel(), [json.dumps(command) + "\n" for command in commands], out)
    return [json.loads(line) for line in out.getvalue().splitlines()]


def test_each_command_gets_one_json_answer_in_order():
    rate, sweep, single = answers({"op": "rate", "batch": 8, "seconds": 1}, {"op": "sweep", "seconds": 1},
                                  {"op": "single", "count": 3})
    assert rate == 80.0
    assert {int(batch): value for batch, value in sweep.items()} == {b: b * 10.0 for b in SWEEP_BATCHES}
    assert single == [0.03, 0.03, 0.03]


def test_an_unknown_command_is_an_error_not_a_silent_answer():
    with pytest.raises(ValueError, match="unknown op"):
        answers({"op": "dance"})
