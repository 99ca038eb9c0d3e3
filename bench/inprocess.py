"""The model's own speed: a ``classify`` signature called directly, and the commands that ask for it.

:class:`InProcess` times a signature function with no server code around it: one image at a time
(single-image latency) or in batches (images/s). The serving benchmark runs it inside each server
process it measures (:mod:`bench.hosted`), on the very signature that server serves, because identical
processes on this machine do not run the same SavedModel at the same speed: in five fresh processes
measured in interleaved rounds (so that the machine's drift hit them alike), the single-image median
of MobileNetV2 at 224x224 ranged from 29.2 to 35.4 ms, and a slow process stayed slow (+3.9 ms and
+5.3 ms over the fastest in the two halves of the run). That spread is wider than the 3 ms the
concurrency-1 target allows, so a baseline measured in another process mostly measures luck.

Commands are JSON lines, one JSON answer line each (:func:`serve_commands`):

    {"op": "rate", "batch": 16, "callers": 2, "seconds": 3}
                            -> images/s with 2 threads each calling with batches of 16
    {"op": "sweep", "seconds": 3}
                            -> [{"callers": 1, "batch": 1, "images_per_s": ...}, ...]
                               (SWEEP_CALLERS x SWEEP_BATCHES)
    {"op": "single", "count": 20}                 -> single-image latencies in seconds
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import numpy as np

SWEEP_BATCHES = (1, 2, 4, 8, 16, 32)
#: Threads calling the signature at once. Concurrent calls can keep both cores busier than one big
#: call (MobileNetV2 at 224 here: ~37-42 images/s from one thread at its best batch size, ~50-60
#: from two threads calling with batches of 4), so the limit is the best over these: the model's best
#: in this process, not one caller's.
SWEEP_CALLERS = (1, 2, 4)


class InProcess:
    """A ``classify`` signature (encoded images in, probabilities out) called directly in this process;
    or any function of encoded images with another ``output`` (a headless model's ``features``)."""

    def __init__(self, classify: Any, photos: list[bytes], output: str = "probabilities") -> None:
        import tensorflow as tf

        self._tf = tf
        self.classify = classify
        self.photos = photos
        self.output = output

    def _call(self, batch: int, offset: int = 0) -> None:
        images = self._tf.constant([self.photos[(offset + i) % len(self.photos)] for i in range(batch)])
        np.asarray(
            self.classify(images=images)[self.output]
        )  # a tensor (TensorFlow) or an array (ONNX Runtime)

    def rate(self, batch: int, seconds: float, callers: int = 1) -> float:
        """Images/s with ``callers`` threads each calling with ``batch`` images, for ``seconds``
        (calls started before the end finish and count; the time runs until the last one ends)."""
        self._call(batch)  # warm-up
        calls = [0] * callers
        started = time.monotonic()

        failures: list[BaseException] = []

        def keep_calling(index: int) -> None:
            try:
                while time.monotonic() - started < seconds and not failures:
                    self._call(batch, index * 7 + calls[index])
                    calls[index] += 1
            except BaseException as exc:  # noqa: BLE001 - raised below: a failed call must not read as a slow one
                failures.append(exc)

        if callers == 1:
            keep_calling(0)
        else:
            threads = [
                threading.Thread(target=keep_calling, args=(i,), name=f"bench-caller-{i}")
                for i in range(callers)
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
        if failures:
            raise failures[0]
        return sum(calls) * batch / (time.monotonic() - started)

    def sweep(self, seconds: float) -> list[dict]:
        return [
            {"callers": callers, "batch": batch, "images_per_s": self.rate(batch, seconds, callers)}
            for callers in SWEEP_CALLERS
            for batch in SWEEP_BATCHES
        ]

    def single_latencies(self, count: int) -> list[float]:
        latencies = []
        for i in range(count):
            started = time.monotonic()
            self._call(1, i)
            latencies.append(time.monotonic() - started)
        return latencies


def serve_commands(model: InProcess, commands, answers) -> None:
    """Answer each JSON command line from ``commands`` with one JSON line on ``answers``, until EOF."""
    for line in commands:
        command = json.loads(line)
        op = command["op"]
        if op == "rate":
            answer = model.rate(
                int(command["batch"]), float(command["seconds"]), int(command.get("callers", 1))
            )
        elif op == "sweep":
            answer = model.sweep(float(command["seconds"]))
        elif op == "single":
            answer = model.single_latencies(int(command["count"]))
        else:
            raise ValueError(f"unknown op {op!r}")
        answers.write(json.dumps(answer) + "\n")
        answers.flush()
