"""How ``runtime = auto`` times the two runtimes: alternating, and each on every core.

A starting server loads its versions side by side; timed one runtime after the other, with the twin on
a one-thread session against TensorFlow on every core, auto kept TensorFlow for every default model
(measured 2026-12-02: MobileNetV2 143.5 vs 143.2 ms for 8 images, where ONNX Runtime is ~2x faster).
"""

from __future__ import annotations

import os
import time

from model_format import signatures as sig
from server import runtime as rt


def tiny_twin() -> bytes:
    """A real ONNX model with the twin's input and a features output (the mean colour)."""
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("ReduceMean", [sig.PIXELS_INPUT], [sig.FEATURES_OUTPUT], axes=[1, 2], keepdims=0)],
        "tiny",
        [helper.make_tensor_value_info(sig.PIXELS_INPUT, TensorProto.FLOAT, [None, 4, 4, 3])],
        [helper.make_tensor_value_info(sig.FEATURES_OUTPUT, TensorProto.FLOAT, [None, 3])],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


def test_auto_times_both_runtimes_alternately_and_on_every_core():
    from graphs.onnx_twin import new_session

    model = tiny_twin()
    calls: list[tuple[str, object]] = []

    def run_tensorflow(output: str) -> None:
        calls.append(("tensorflow", output))
        time.sleep(0.02)  # far slower than the tiny twin: auto must keep the twin

    def run_onnx(session, output: str) -> None:
        calls.append(("onnxruntime", session.get_session_options().intra_op_num_threads))

    choice = rt.choose(
        rt.RuntimeOptions(runtime="auto", onnx_threads=1),
        lambda: (new_session(model, 1), "built here", model),
        run_tensorflow,
        run_onnx,
        "tiny v1",
        needed=frozenset({sig.FEATURES_OUTPUT}),
    )

    cores = os.cpu_count() or 1
    assert calls[0] == ("onnxruntime", 1)  # the serving session answers once before any timing
    # One untimed call of each, then rounds alternating; the twin timed on every core, like TensorFlow.
    assert calls[1:] == [("onnxruntime", cores), ("tensorflow", sig.FEATURES_OUTPUT)] * (1 + rt.TIMING_ROUNDS)
    assert choice.detail.startswith("auto: warm-up batch of 8: onnxruntime")
    assert (choice.runtime, choice.outputs) == ("onnxruntime", {sig.FEATURES_OUTPUT})


def test_auto_keeps_tensorflow_when_the_twin_computes_only_part_of_the_version():
    """A features-only twin (the default vgg16's) beside TensorFlow's whole network would hold the
    features' layers twice: auto serves the version on TensorFlow without timing; onnxruntime uses it."""
    from graphs.onnx_twin import new_session

    model = tiny_twin()
    calls: list[str] = []
    both = frozenset({sig.FEATURES_OUTPUT, sig.PROBABILITIES_OUTPUT})

    def pick(runtime: str) -> rt.Choice:
        return rt.choose(
            rt.RuntimeOptions(runtime=runtime, onnx_threads=1),
            lambda: (new_session(model, 1), "built here", model),
            lambda output: calls.append("tensorflow"),
            lambda session, output: calls.append("onnxruntime"),
            "tiny v1",
            needed=both,
        )

    auto = pick("auto")
    assert (auto.runtime, auto.session, calls) == ("tensorflow", None, [])
    assert "computes features only" in auto.detail and "probabilities" in auto.detail
    chosen = pick("onnxruntime")
    assert (chosen.runtime, chosen.outputs) == ("onnxruntime", {sig.FEATURES_OUTPUT})

    def never_loaded():
        raise AssertionError("the manifest's record already says the twin is partial")

    recorded = rt.choose(
        rt.RuntimeOptions(runtime="auto"), never_loaded, None, None, "tiny v1", both,
        frozenset({sig.FEATURES_OUTPUT}),
    )  # fmt: skip
    assert recorded.runtime == "tensorflow" and recorded.detail == auto.detail


#: Run in a fresh process: the arena is the process's, and what earlier tests left in it changes
#: what a shrink can free (as in a loading server: batches of 8, then one shrinking run).
SHRINK = """
import numpy as np
from onnx import TensorProto, helper
from graphs.onnx_twin import new_session, shrink_arena
from model_format import signatures as sig
from server.memory import resident_bytes

size = 512  # a batch of 8 makes a 25 MB intermediate (the Mul) in the arena
graph = helper.make_graph(
    [
        helper.make_node("Mul", [sig.PIXELS_INPUT, "two"], ["doubled"]),
        helper.make_node("ReduceMean", ["doubled"], [sig.FEATURES_OUTPUT], axes=[1, 2], keepdims=0),
    ],
    "wide",
    [helper.make_tensor_value_info(sig.PIXELS_INPUT, TensorProto.FLOAT, [None, size, size, 3])],
    [helper.make_tensor_value_info(sig.FEATURES_OUTPUT, TensorProto.FLOAT, [None, 3])],
    [helper.make_tensor("two", TensorProto.FLOAT, [], [2.0])],
)
model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
session = new_session(model.SerializeToString())
batch = np.random.default_rng(0).uniform(0, 255, (8, size, size, 3)).astype(np.float32)
# A copy: an answer still held keeps its arena region (the server's answers are gone by then).
before = session.run(None, {sig.PIXELS_INPUT: batch})[0].copy()
grown = resident_bytes()
shrink_arena(session, batch[:1])
freed = grown - resident_bytes()
(after,) = session.run(None, {sig.PIXELS_INPUT: batch})
assert (after == before).all()
shrink_arena(object(), batch[:1])  # another runtime's session: nothing to do
print(freed)
"""


def test_a_shrinking_run_gives_back_what_a_big_batch_took_from_the_shared_arena():
    """A load's warm-up and timing batches grow ONNX Runtime's one arena; the server then runs one image
    with arena shrinkage (server/model.py), so that a loaded version holds what one image needs
    (MobileNetV2 at 224: 119 -> 51 MiB)."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", SHRINK], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert int(done.stdout.split()[-1]) >= 15 * 2**20, "the arena kept the batch's 25 MB"
