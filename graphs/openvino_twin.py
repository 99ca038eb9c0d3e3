"""The checked ONNX twin on OpenVINO, at fp32, bf16 or int8, behind ONNX Runtime's session interface.

OpenVINO compiles the same twin that ONNX Runtime runs (:mod:`graphs.onnx_twin`); :class:`OpenVinoSession`
answers ``run`` and ``get_outputs`` as an ONNX Runtime session does, so the server runs either the
same way. At ``bf16`` OpenVINO computes in bfloat16 where the CPU has it (AVX512-BF16, AMX): VGG16's
features ran 6.7x faster than ONNX Runtime fp32 on a CPU with AMX (issue 30's measurement), 2x on one
with AVX512-BF16 alone (bench/README.md).
At ``int8`` it runs the twin quantized on the version's calibration images (:mod:`graphs.quantize`).
A reduced-precision twin serves only if it passes :func:`precision_gate` against the fp32 twin.
"""

from __future__ import annotations

import os
import queue
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np

from graphs.onnx_twin import TwinUnusable
from model_format import signatures as sig

FP32 = "fp32"
BF16 = "bf16"
INT8 = "int8"
PRECISIONS = (FP32, BF16, INT8)
#: The precisions that must pass :func:`precision_gate` against fp32.
REDUCED = (BF16, INT8)
#: The gate of a reduced precision against fp32, on every check image: the features' cosine similarity
#: (the smallest over the images) and the share of images whose top class is the same.
MIN_FEATURE_COSINE = 0.999
MIN_TOP1_AGREEMENT = 0.99
#: A fine-tuned version's held-out accuracy may drop this much from fp32's (0.5 points), no more.
MAX_ACCURACY_DROP = 0.005
#: OpenVINO's INFERENCE_PRECISION_HINT for each precision. int8: the quantized layers run in int8 (the
#: twin says which), the others at f32.
COMPILED = {FP32: "f32", BF16: "bf16", INT8: "f32"}


@dataclass(frozen=True)
class Output:
    """An output's name, as ``onnxruntime.NodeArg.name``."""

    name: str


_core: Any = None
_core_lock = threading.Lock()


def core() -> Any:
    """The process's one ``openvino.Core`` (thread-safe; it holds the plugins and their settings)."""
    global _core
    import openvino as ov

    with _core_lock:
        if _core is None:
            _core = ov.Core()
        return _core


def bf16_support() -> str:
    """Why this CPU cannot compute in bf16, or "" when it can (OpenVINO's CPU capabilities)."""
    capabilities = core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    if "BF16" in capabilities:
        return ""
    return f"this CPU has no bf16 instructions (OpenVINO's CPU capabilities: {', '.join(capabilities)})"


class OpenVinoSession:
    """A twin compiled by OpenVINO for ``threads`` threads per call at ``precision``; thread-safe.
    At ``int8``, ``model`` is the quantized twin (:func:`graphs.quantize.quantize`)."""

    def __init__(self, model: bytes, threads: int, precision: str) -> None:
        if precision not in PRECISIONS:
            raise ValueError(f"precision {precision!r}; expected one of {', '.join(PRECISIONS)}")
        network = core().read_model(model)
        # NOTE: calls run side by side (one per model thread, each on ``threads`` cores, as ONNX Runtime's
        # do), and OpenVINO runs one call at a time per stream: one stream per concurrent call.
        streams = max(1, (os.cpu_count() or 1) // max(1, threads))
        config = {
            "INFERENCE_PRECISION_HINT": COMPILED[precision],
            "NUM_STREAMS": str(streams),
            "INFERENCE_NUM_THREADS": str(streams * threads),
        }
        self._compiled = core().compile_model(network, "CPU", config)
        self._outputs = [Output(output.any_name) for output in self._compiled.outputs]
        # NOTE: asynchronous requests from a pool: OpenVINO then runs each call on a free stream (a
        # synchronous call runs on the stream of the calling thread, and two threads could share one).
        self._requests: queue.SimpleQueue[Any] = queue.SimpleQueue()
        for _ in range(2 * streams):
            self._requests.put(self._compiled.create_infer_request())

    @property
    def compiled_precision(self) -> str:
        """The precision OpenVINO compiled the network at (``bf16``, ``f32``)."""
        return self._compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()

    def get_outputs(self) -> list[Output]:
        return list(self._outputs)

    def run(self, output_names: list[str] | None, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        request = self._requests.get()  # blocks while 2 x streams calls run
        try:
            request.start_async(feeds)
            request.wait()
            names = output_names or [output.name for output in self._outputs]
            # NOTE: copies: the request reuses its output buffers on its next call.
            return [np.array(request.get_tensor(name).data) for name in names]
        finally:
            self._requests.put(request)


def new_session(model: bytes, threads: int, precision: str) -> OpenVinoSession:
    """The twin on OpenVINO; raises :class:`TwinUnusable` when OpenVINO cannot run it."""
    try:
        return OpenVinoSession(model, threads, precision)
    except Exception as exc:  # OpenVINO raises RuntimeError and its own types for models it cannot run
        reason = (str(exc) or type(exc).__name__).strip().splitlines()[0][:300]
        raise TwinUnusable(f"OpenVINO cannot run the twin: {reason}") from None


#: Images per call while gating: a gate runs up to 70 images (320 for a fine-tuned version), and VGG16's
#: first activations alone take 12.8 MB per image.
GATE_CHUNK = 8


class GateRefused(TwinUnusable):
    """A reduced precision's answers differ too much from fp32's (the message gives the figure)."""


def run_in_chunks(session: Any, outputs: list[str], pixels: np.ndarray) -> dict[str, np.ndarray]:
    """``session``'s ``outputs`` on ``pixels``, :data:`GATE_CHUNK` images per call."""
    parts: dict[str, list[np.ndarray]] = {name: [] for name in outputs}
    for start in range(0, len(pixels), GATE_CHUNK):
        feeds = {sig.PIXELS_INPUT: np.ascontiguousarray(pixels[start : start + GATE_CHUNK], np.float32)}
        for name, values in zip(outputs, session.run(outputs, feeds)):
            parts[name].append(values)
    return {name: np.concatenate(values) for name, values in parts.items()}


def precision_gate(
    reference: Any, candidate: Any, pixels: np.ndarray, expected: dict[str, np.ndarray] | None = None
) -> dict[str, Any]:
    """Compare a reduced-precision session with the fp32 one on ``pixels`` (``expected``: the fp32
    session's outputs on them, when already computed); return the figures or raise :class:`GateRefused`
    when the features' cosine (smallest over the images) is under :data:`MIN_FEATURE_COSINE` or the
    top-1 agreement under :data:`MIN_TOP1_AGREEMENT`."""
    outputs = [output.name for output in reference.get_outputs()]
    expected = expected if expected is not None else run_in_chunks(reference, outputs, pixels)
    actual = run_in_chunks(candidate, outputs, pixels)
    figures: dict[str, Any] = {"images": int(pixels.shape[0])}
    if sig.FEATURES_OUTPUT in expected:
        a, b = expected[sig.FEATURES_OUTPUT], actual[sig.FEATURES_OUTPUT]
        norms = np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), np.finfo(np.float32).tiny)
        cosine = float(((a * b).sum(axis=1) / norms).min())
        figures["features_cosine_min"] = round(cosine, 6)
        if not cosine >= MIN_FEATURE_COSINE:
            raise GateRefused(f"features cosine {cosine:.5f} against fp32 (needs >= {MIN_FEATURE_COSINE})")
    if sig.PROBABILITIES_OUTPUT in expected:
        a, b = expected[sig.PROBABILITIES_OUTPUT], actual[sig.PROBABILITIES_OUTPUT]
        agreement = float((a.argmax(axis=1) == b.argmax(axis=1)).mean())
        figures["top1_agreement"] = round(agreement, 4)
        figures["max_probability_difference"] = float(np.abs(a - b).max())
        if not agreement >= MIN_TOP1_AGREEMENT:
            needs = f"needs >= {MIN_TOP1_AGREEMENT:.0%}"
            raise GateRefused(f"top-1 agreement {agreement:.2%} with fp32 ({needs})")
    return figures


def held_out_gate(
    reference: Any,
    candidate: Any,
    pixels: np.ndarray,
    class_ids: np.ndarray,
    expected: np.ndarray | None = None,
) -> dict[str, Any]:
    """A fine-tuned version's accuracy on its held-out images at fp32 (``reference``; ``expected``: its
    probabilities, when already computed) and at the reduced precision (``candidate``); raise
    :class:`GateRefused` when it drops more than :data:`MAX_ACCURACY_DROP`. {} for a twin without
    probabilities (a features-only twin)."""
    if sig.PROBABILITIES_OUTPUT not in {output.name for output in reference.get_outputs()}:
        return {}
    classes = np.asarray(class_ids)
    probabilities = [sig.PROBABILITIES_OUTPUT]
    if expected is None:
        expected = run_in_chunks(reference, probabilities, pixels)[sig.PROBABILITIES_OUTPUT]
    actual = run_in_chunks(candidate, probabilities, pixels)[sig.PROBABILITIES_OUTPUT]
    fp32 = float((expected.argmax(axis=1) == classes).mean())
    reduced = float((actual.argmax(axis=1) == classes).mean())
    figures = {
        "heldout_images": len(classes),
        "heldout_accuracy_fp32": round(fp32, 4),
        "heldout_accuracy": round(reduced, 4),
    }
    if reduced < fp32 - MAX_ACCURACY_DROP - 1e-9:
        raise GateRefused(
            f"held-out accuracy {reduced:.4f} against fp32's {fp32:.4f} on {len(classes)} images"
            f" (may drop {MAX_ACCURACY_DROP * 100:g} points at most)"
        )
    return figures
