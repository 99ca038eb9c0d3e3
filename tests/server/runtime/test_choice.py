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
