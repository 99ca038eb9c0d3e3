"""The ONNX twin of a version's network: ``predict``/``embed`` converted with tf2onnx and checked.

The SavedModel stays the artifact and the truth. Its plain functions ``predict`` and ``embed`` (float32
pixels ``[N, S, S, 3]`` in [0, 255] -> normalisation + network) are converted into ONE ONNX graph with
an output per function (``probabilities``, ``features``), so the weights are stored and held once.
Decode and resize are not converted: they stay TensorFlow's, so the same pixels go in with either runtime.

A twin is only used once :func:`check_twin` found it computes what the SavedModel computes on a fixed
set of images (features within ``FEATURE_TOLERANCE`` x max|feature|, probabilities within
``PROBABILITY_TOLERANCE``, the same top-5 classes). Its record (file, sha256, opset, tool versions,
the check's figures) goes into the version's ``manifest.json`` under ``"onnx"`` when the exporter
writes it, or next to the file when the server converts an older version into its cache.
"""

from __future__ import annotations

import hashlib
import io
import json
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from graphs.publish import sample_png
from model_format import signatures as sig
from model_format.layout import TWIN_FILE, TWIN_RECORD_FILE

OPSET = 17
FEATURE_TOLERANCE = 1e-5  # x max|feature| of the image
PROBABILITY_TOLERANCE = 1e-5
TOP_K = 5
#: ONNX output name -> (the SavedModel function it twins, the signature output it feeds).
OUTPUTS = {sig.PROBABILITIES_OUTPUT: "predict", sig.FEATURES_OUTPUT: "embed"}


#: Largest network (parameters) converted to ONNX. NOTE: tf2onnx holds several copies of every weight
#: while converting; measured here, VGG16 with its head (138 M) was killed for memory at 20 GB, while
#: VGG16 without it (14.7 M) and MobileNetV2 (3.5 M) convert in seconds.
MAX_TWIN_PARAMETERS = 30_000_000


class TwinUnusable(Exception):
    """No usable twin: the network does not convert, or the converted one does not match. Says which."""


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def tool_versions() -> dict[str, str]:
    import onnx
    import onnxruntime
    import tensorflow as tf
    import tf2onnx

    return {
        "tf2onnx": tf2onnx.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
        "tensorflow": tf.__version__,
    }


def twin_functions(module: Any) -> dict[str, Any]:
    """ONNX output name -> the module's function (a loaded SavedModel or a :class:`ServingModule`)."""
    return {output: getattr(module, name) for output, name in OUTPUTS.items() if hasattr(module, name)}


def check_pixels(size: int, count: int = 6) -> np.ndarray:
    """Fixed check images ``[count, size, size, 3]`` float32 in [0, 255]: a gradient, and seeded
    smooth noise at several scales, so that activations vary as they do on photos (a flat image
    would hide differences)."""
    rng = np.random.default_rng(20)
    images = [
        np.asarray(Image.open(io.BytesIO(sample_png())).convert("RGB").resize((size, size)), np.float32)
    ]
    for index in range(1, count):
        cells = 2 + 3 * index
        coarse = rng.uniform(0, 255, (cells, cells, 3)).astype(np.uint8)
        smooth = np.asarray(Image.fromarray(coarse).resize((size, size), Image.BILINEAR), np.float32)
        grain = rng.normal(0, 12, (size, size, 3))
        images.append(np.clip(smooth + grain, 0, 255).astype(np.float32))
    return np.stack(images)


_shared_arena_lock = threading.Lock()
_shared_arena_registered = False


def _register_shared_arena() -> None:
    """One CPU memory arena for every session of the process, growing by what is asked.

    NOTE (measured, issue 29): each session's own arena keeps the largest batch's activations it ever
    ran, so a twin's two sessions (:func:`server.runtime.lone_batch_session`) held two of them: after a
    batch of 8 at 224, MobileNetV2's sessions held 218 MiB and VGG16's features 620 MiB. One arena
    for the process (``session.use_env_allocators``), extended by the size asked rather than to the next
    power of two, held 123 and 346 MiB at the same speed; without any arena, 50 and 134 MiB but
    batches ran 8-50% slower (fresh pages on every run).
    """
    global _shared_arena_registered
    import onnxruntime as ort

    with _shared_arena_lock:
        if _shared_arena_registered:
            return
        memory = ort.OrtMemoryInfo("Cpu", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0, ort.OrtMemType.DEFAULT)
        same_as_requested = 1  # OrtArenaCfg's arena_extend_strategy; -1 (default) is next power of two
        ort.create_and_register_allocator(memory, ort.OrtArenaCfg(0, same_as_requested, -1, -1))
        _shared_arena_registered = True


def new_session(model: bytes | str, threads: int = 1) -> Any:
    """An ONNX Runtime session with ``threads`` intra-op threads that sleep when idle, allocating from
    the process's one CPU arena (:func:`_register_shared_arena`).

    NOTE: ORT's worker threads spin by default while waiting for work; in a server that also decodes
    with TensorFlow on the same cores, spinning threads steal the decoder's time, so spinning is off.
    """
    import onnxruntime as ort

    _register_shared_arena()
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.use_env_allocators", "1")
    options.log_severity_level = 3
    try:
        return ort.InferenceSession(model, sess_options=options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # ORT raises its own exception types (InvalidGraph, Fail, ...) for bad models
        reason = (str(exc) or type(exc).__name__).strip().splitlines()[0][:300]
        raise TwinUnusable(f"ONNX Runtime cannot run the twin: {reason}") from None


def shrink_arena(session: Any, pixels: np.ndarray) -> None:
    """Run ``pixels`` (one image) on ``session`` and give the shared arena's free chunks back at the end.

    NOTE (measured, issue 29): after a load's warm-up and timing batches of 8, MobileNetV2's two
    sessions held 119 MiB of RSS, 51 after one shrinking run; the next batch of 8 takes it again. Needs
    the arena to extend by what is asked (:func:`_register_shared_arena`). Other sessions: a no-op.
    """
    import onnxruntime as ort

    if not isinstance(session, ort.InferenceSession):
        return
    options = ort.RunOptions()
    options.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")
    session.run(None, {sig.PIXELS_INPUT: np.ascontiguousarray(pixels, np.float32)}, options)


def run_twin(session: Any, output: str, pixels: np.ndarray) -> np.ndarray:
    """One output of the twin on float32 pixels ``[N, S, S, 3]`` in [0, 255]."""
    return session.run([output], {sig.PIXELS_INPUT: np.ascontiguousarray(pixels, np.float32)})[0]


def twin_outputs(session: Any) -> frozenset[str]:
    """The outputs a twin's session computes: both, or ``features`` only (a partial twin, see below)."""
    return frozenset(output.name for output in session.get_outputs())


def _parameters(function: Any) -> int:
    return sum(
        int(np.prod(variable.shape))
        for variable in function.get_concrete_function().variables
        if variable.shape.is_fully_defined()
    )


def plan(module: Any, size: int) -> tuple[Any, list[str], str]:
    """(the tf.function to convert, its outputs, why an output is left out or "").

    A network over :data:`MAX_TWIN_PARAMETERS` whose ``embed`` alone fits gets a **features-only**
    twin: VGG16 with its classification head has 138 M parameters, 124 M of them in the head, while
    its feature extractor (all that ``ExtractFeatures`` and fine-tuning run) has 14.7 M. ``probabilities``
    then stay TensorFlow's. Raises :class:`TwinUnusable` when nothing fits.
    """
    import tensorflow as tf

    functions = twin_functions(module)
    if not functions:
        raise TwinUnusable("the version has no predict/embed function (exported by an older exporter?)")
    spec = tf.TensorSpec([None, size, size, 3], tf.float32, name=sig.PIXELS_INPUT)

    def combined(outputs: dict[str, Any]) -> Any:
        return tf.function(
            lambda pixels: {name: fn(pixels) for name, fn in outputs.items()}, input_signature=[spec]
        )

    both = combined(functions)
    parameters = _parameters(both)
    if parameters <= MAX_TWIN_PARAMETERS:
        return both, sorted(functions), ""
    too_big = (
        f"the network has {parameters / 1e6:.1f} M parameters; converting more than "
        f"{MAX_TWIN_PARAMETERS / 1e6:.0f} M with tf2onnx takes more memory than a server can spare "
        "(VGG16 with its classification head, 138 M: over 20 GB)"
    )
    if sig.FEATURES_OUTPUT in functions and len(functions) > 1:
        features_only = combined({sig.FEATURES_OUTPUT: functions[sig.FEATURES_OUTPUT]})
        if _parameters(features_only) <= MAX_TWIN_PARAMETERS:
            return features_only, [sig.FEATURES_OUTPUT], too_big
    raise TwinUnusable(f"{too_big}; TensorFlow serves it")


def convert(both: Any) -> bytes:
    """A tf.function from :func:`plan` as one serialized ONNX model; raises :class:`TwinUnusable`."""
    import tensorflow as tf
    import tf2onnx

    spec = both.input_signature[0]
    captured = {
        internal.name: external
        for external, internal in both.get_concrete_function().graph.captures
        if external.dtype != tf.resource
    }
    try:
        proto, _ = tf2onnx.convert.from_function(both, input_signature=[spec], opset=OPSET)
    except Exception as exc:  # tf2onnx raises anything from ValueError to KeyError on an unsupported op
        reason = (str(exc) or type(exc).__name__).strip().splitlines()[0][:300]
        raise TwinUnusable(f"tf2onnx cannot convert the network: {type(exc).__name__}: {reason}") from None
    _freeze_captured_constants(proto, captured)
    # NOTE: tf2onnx does not fail on an op it cannot convert: it copies the TensorFlow op into the graph,
    # which ONNX Runtime then refuses. Name those ops here instead.
    import onnx

    unknown = sorted(
        {
            node.op_type
            for node in proto.graph.node
            if node.domain in ("", "ai.onnx") and not onnx.defs.has(node.op_type)
        }
    )
    if unknown:
        raise TwinUnusable(
            f"tf2onnx cannot convert the TensorFlow op(s) {', '.join(unknown)} of this network"
        )
    return proto.SerializeToString()


def _freeze_captured_constants(proto: Any, captured: dict[str, Any]) -> None:
    """Turn graph inputs that are captured constant tensors into initializers.

    NOTE: tf2onnx freezes captured variables but leaves captured plain tensors (e.g. the mean and
    variance that Keras' EfficientNet normalises with) as extra graph inputs; the twin must take
    pixels only, so their values are baked in here.
    """
    from onnx import numpy_helper

    for graph_input in [i for i in proto.graph.input if i.name != sig.PIXELS_INPUT]:
        if graph_input.name not in captured:
            raise TwinUnusable(f"the converted network has an unexpected input {graph_input.name!r}")
        proto.graph.initializer.append(
            numpy_helper.from_array(captured[graph_input.name].numpy(), graph_input.name)
        )
        proto.graph.input.remove(graph_input)


def check_twin(module: Any, session: Any, size: int, pixels: np.ndarray | None = None) -> dict[str, Any]:
    """Compare the twin with the module's own functions; return the figures or raise :class:`TwinUnusable`."""
    import tensorflow as tf

    pixels = check_pixels(size) if pixels is None else pixels
    figures: dict[str, Any] = {"images": int(pixels.shape[0])}
    functions, present = twin_functions(module), twin_outputs(session)
    # A twin may leave out probabilities (a features-only twin, see plan()), never the features.
    if sig.FEATURES_OUTPUT in functions and sig.FEATURES_OUTPUT not in present:
        raise TwinUnusable(f"the twin has no {sig.FEATURES_OUTPUT} output")
    for output, function in functions.items():
        if output not in present:
            continue
        expected = function(tf.constant(pixels)).numpy()
        actual = run_twin(session, output, pixels)
        if actual.shape != expected.shape:
            raise TwinUnusable(
                f"the twin's {output} have shape {actual.shape}, the SavedModel's {expected.shape}"
            )
        if output == sig.FEATURES_OUTPUT:
            scale = np.maximum(np.abs(expected).max(axis=1), np.finfo(np.float32).tiny)
            error = float((np.abs(actual - expected).max(axis=1) / scale).max())
            figures["max_feature_error"] = error
            if not error <= FEATURE_TOLERANCE:
                raise TwinUnusable(
                    f"the twin's features differ by {error:.2e} x max|feature| (allowed {FEATURE_TOLERANCE})"
                )
        else:
            difference = float(np.abs(actual - expected).max())
            figures["max_probability_difference"] = difference
            if not difference <= PROBABILITY_TOLERANCE:
                raise TwinUnusable(
                    f"the twin's probabilities differ by {difference:.2e} (allowed {PROBABILITY_TOLERANCE})"
                )
            k = min(TOP_K, expected.shape[1])
            for row in range(expected.shape[0]):
                mine = np.argsort(-actual[row], kind="stable")[:k]
                theirs = np.argsort(-expected[row], kind="stable")[:k]
                # Classes tied within the tolerance may trade places; their probabilities may not.
                if not np.array_equal(mine, theirs) and not np.allclose(
                    expected[row][mine], expected[row][theirs], rtol=0, atol=PROBABILITY_TOLERANCE
                ):
                    raise TwinUnusable(
                        f"the twin's top-{k} classes differ on check image {row}: {mine} vs {theirs}"
                    )
            figures["top5_identical"] = True
    return figures


def make_twin(module: Any, size: int, threads: int = 1) -> tuple[bytes, dict[str, Any], Any]:
    """Convert and check; return (ONNX bytes, record, ready session). Raises :class:`TwinUnusable`."""
    started = time.monotonic()
    function, outputs, left_out = plan(module, size)
    model = convert(function)
    converted = time.monotonic()
    session = new_session(model, threads)
    figures = check_twin(module, session, size)
    record = {
        "file": TWIN_FILE,
        "sha256": sha256_of(model),
        "opset": OPSET,
        "outputs": outputs,
        "input_size": size,
        "tools": tool_versions(),
        "check": figures,
        "convert_seconds": round(converted - started, 2),
    }
    if left_out:
        record["left_out"] = f"{sig.PROBABILITIES_OUTPUT} stay on TensorFlow: {left_out}"
    return model, record, session


def read_twin(directory: Path, record: dict[str, Any] | None) -> bytes:
    """The twin's bytes in ``directory`` if they match the record's sha256; raises :class:`TwinUnusable`."""
    if not record or "sha256" not in record:
        raise TwinUnusable("no ONNX twin recorded")
    path = directory / record.get("file", TWIN_FILE)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise TwinUnusable(f"the ONNX twin {path.name} is unreadable: {exc.strerror}") from None
    if sha256_of(data) != record["sha256"]:
        raise TwinUnusable(
            f"the ONNX twin {path.name} does not match its recorded sha256 (changed or corrupt)"
        )
    return data


def write_cached(directory: Path, model: bytes, record: dict[str, Any]) -> None:
    """Store a twin and its record in a cache directory (written then renamed: readers see all or nothing)."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, content in ((TWIN_FILE, model), (TWIN_RECORD_FILE, json.dumps(record, indent=2).encode())):
        partial = directory / f".{name}.partial"
        partial.write_bytes(content)
        partial.replace(directory / name)


def read_cached_record(directory: Path) -> dict[str, Any] | None:
    try:
        return json.loads((directory / TWIN_RECORD_FILE).read_text())
    except (OSError, json.JSONDecodeError):
        return None


def attach_twin(module: Any, size: int, manifest: dict[str, Any], progress: Any) -> dict[str, bytes]:
    """Convert and check the network's ONNX twin; record it (or why there is none) in the manifest.

    Returns the twin's file for the version (``extra_files`` of :func:`graphs.publish.save_and_publish`).
    A network tf2onnx cannot convert is still published: the server serves it with TensorFlow. The
    exporter and fine-tuning both call this, so that a version's twin is published with it.
    """
    with progress.step("converting the network to ONNX and checking it against TensorFlow"):
        try:
            model, record, _session = make_twin(module, size)
        except TwinUnusable as exc:
            manifest["onnx"] = {"error": str(exc)}
            progress.note(f"note: no ONNX twin ({exc}); the server will use TensorFlow for this version")
            return {}
    check = record["check"]
    figures = ", ".join(f"{key} {value:.1e}" for key, value in check.items() if isinstance(value, float))
    progress.note(f"  ONNX twin: {len(model) / 1e6:.1f} MB, opset {record['opset']}, {figures}")
    if "left_out" in record:
        progress.note(f"  note: the twin computes features only; {record['left_out']}")
    manifest["onnx"] = record
    return {TWIN_FILE: model}
