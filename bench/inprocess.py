"""The model's own speed: the exported ``classify`` signature called directly, in a process of its own.

Identical processes running the same SavedModel on this machine do not run it at the same speed: in
five fresh processes measured in interleaved rounds (so that the machine's drift hits them alike),
the single-image median of MobileNetV2 at 224x224 ranged from 29.2 to 35.4 ms, and a slow process
stayed slow (+3.9 ms and +5.3 ms over the fastest in the two halves of the run). That spread is wider
than the 3 ms the serving target allows, so one benchmark process against one server process would
mostly measure which of the two was luckier. The serving benchmark therefore measures the in-process
figures in several of these workers (and the concurrency-1 latency against several server processes)
and compares means.

A worker is run as ``python -m bench.inprocess MODEL_DIR``: it loads the model, prints
``{"ready": true}``, then answers one JSON line per JSON command read from stdin:

    {"op": "rate", "batch": 16, "seconds": 3}     -> images/s calling with batches of 16
    {"op": "sweep", "seconds": 3}                 -> {"1": images/s, "2": ..., "32": ...}
    {"op": "single", "count": 20}                 -> single-image latencies in seconds
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

SWEEP_BATCHES = (1, 2, 4, 8, 16, 32)


class InProcess:
    """The exported ``classify`` signature called directly in this process."""

    def __init__(self, model_path: Path, photos: list[bytes]) -> None:
        import tensorflow as tf

        self._tf = tf
        self.classify = tf.saved_model.load(str(model_path)).signatures["classify"]
        self.photos = photos

    def _call(self, batch: int, offset: int = 0) -> None:
        images = self._tf.constant([self.photos[(offset + i) % len(self.photos)] for i in range(batch)])
        self.classify(images=images)["probabilities"].numpy()

    def rate(self, batch: int, seconds: float) -> float:
        self._call(batch)  # warm-up
        calls, started = 0, time.monotonic()
        while time.monotonic() - started < seconds:
            self._call(batch, calls)
            calls += 1
        return calls * batch / (time.monotonic() - started)

    def sweep(self, seconds: float) -> dict[int, float]:
        return {batch: self.rate(batch, seconds) for batch in SWEEP_BATCHES}

    def single_latencies(self, count: int) -> list[float]:
        latencies = []
        for i in range(count):
            started = time.monotonic()
            self._call(1, i)
            latencies.append(time.monotonic() - started)
        return latencies


def serve_commands(model: InProcess, commands, answers) -> None:
    for line in commands:
        command = json.loads(line)
        op = command["op"]
        if op == "rate":
            answer = model.rate(int(command["batch"]), float(command["seconds"]))
        elif op == "sweep":
            answer = model.sweep(float(command["seconds"]))
        elif op == "single":
            answer = model.single_latencies(int(command["count"]))
        else:
            raise ValueError(f"unknown op {op!r}")
        answers.write(json.dumps(answer) + "\n")
        answers.flush()


def main(argv: list[str] | None = None) -> int:
    from bench.common import real_jpegs

    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m bench.inprocess MODEL_DIR", file=sys.stderr)
        return 2
    model = InProcess(Path(args[0]), real_jpegs())
    model.single_latencies(5)  # trace and warm up before answering "ready"
    sys.stdout.write(json.dumps({"ready": True}) + "\n")
    sys.stdout.flush()
    serve_commands(model, sys.stdin, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
