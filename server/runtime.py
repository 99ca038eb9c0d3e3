"""Which runtime runs a version's network: TensorFlow (the SavedModel itself), or its ONNX twin on ONNX
Runtime or OpenVINO (the latter at fp32 or bf16, :mod:`graphs.openvino_twin`).

Decode and resize are always TensorFlow's (:func:`graphs.signatures.decode_images`, the very code
in the signatures), so both runtimes see the same pixels and answer the same. Only the network
(normalisation + layers, the SavedModel's ``predict``/``embed``) changes runtime.

Where a version's twin comes from, first found wins:

1. the version directory (the exporter wrote it; its record is in ``manifest.json`` under ``"onnx"``);
2. the server's cache, ``<state_dir>/onnx/<content key>/`` (keyed by the SavedModel's bytes, so a
   rewritten version never reuses a stale twin; the model root may be read-only);
3. a conversion now (seconds), stored in the cache for the next load.

Every twin is checked against the SavedModel on fixed images before it serves
(:func:`graphs.onnx_twin.check_twin`). A network without a usable twin is served by TensorFlow;
the reason is logged once and shown in the version's status.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from graphs import onnx_twin
from model_format import signatures as sig
from storage.local import content_key

log = logging.getLogger(__name__)

AUTO = "auto"
TENSORFLOW = "tensorflow"
ONNXRUNTIME = "onnxruntime"
OPENVINO = "openvino"
RUNTIMES = (AUTO, TENSORFLOW, ONNXRUNTIME, OPENVINO)
#: Runtimes that run the twin (the version's sessions); TensorFlow runs the SavedModel.
TWIN_RUNTIMES = (ONNXRUNTIME, OPENVINO)
CACHE_FOLDER = "onnx"
TIMING_ROUNDS = 3


@dataclass(frozen=True)
class RuntimeOptions:
    """How one version picks and runs its runtime (from the settings)."""

    runtime: str = AUTO
    cache_dir: Path | None = None  # <state_dir>/onnx; None: convert without caching
    onnx_threads: int = 1  # intra-op threads of the ONNX Runtime session
    timing_batch: int = 8  # images in the warm-up batch that auto times
    precision: str = "fp32"  # runtime = openvino: fp32 or bf16 (graphs/openvino_twin.py)


@dataclass
class Choice:
    """The runtime a version runs on and why (shown in its status)."""

    runtime: str
    detail: str
    session: Any = None  # the twin's session when runtime is onnxruntime or openvino
    lone_session: Any = None  # the same twin on every core, for a batch running alone (lone_batch_session)
    outputs: frozenset[str] = frozenset()  # what the twin computes (a features-only twin: features)
    precision: str = "fp32"
    #: The twin's ONNX Runtime session that checked it, when another runtime serves it: the caller
    #: shrinks the process's arena through it (its check batches grew the arena), then drops it.
    reference: Any = None


def cache_dir_for(state_dir: Path) -> Path:
    return Path(state_dir) / CACHE_FOLDER


def obtain_twin(
    saved_model: Any,
    path: Path,
    manifest: dict[str, Any],
    size: int,
    cache_dir: Path | None,
    threads: int = 1,
) -> tuple[Any, str, bytes]:
    """A checked ONNX Runtime session for the version, where its twin came from, and the twin itself.

    Raises :class:`graphs.onnx_twin.TwinUnusable` with the reason when there is none.
    """
    exported = manifest.get("onnx") or {}
    if "sha256" in exported:
        model = onnx_twin.read_twin(path, exported)
        session = onnx_twin.new_session(model, threads)
        onnx_twin.check_twin(saved_model, session, size)  # at load too: a twin is never trusted blindly
        return session, "exported with the version", model
    cached = cache_dir / content_key(path) if cache_dir is not None else None
    if cached is not None:
        record = onnx_twin.read_cached_record(cached)
        if record is not None:
            try:
                model = onnx_twin.read_twin(cached, record)
                session = onnx_twin.new_session(model, threads)
                onnx_twin.check_twin(saved_model, session, size)
                return session, f"from the cache {cached.name}", model
            except onnx_twin.TwinUnusable as exc:
                log.warning("cached ONNX twin of %s unusable (%s); converting again", path, exc)
    started = time.monotonic()
    model, record, session = onnx_twin.make_twin(saved_model, size, threads)
    where = "converted at load"
    if cached is not None:
        try:
            onnx_twin.write_cached(cached, model, record)
            where += f" in {time.monotonic() - started:.1f} s, cached as {cached.name}"
        except OSError as exc:
            log.warning("could not cache the ONNX twin in %s: %s", cached, exc.strerror)
    return session, where, model


def best_of_alternating(
    first: Callable[[], Any], second: Callable[[], Any], rounds: int = TIMING_ROUNDS
) -> tuple[float, float]:
    """Fastest of ``rounds`` timed calls of each, in seconds, after one untimed call of each.

    NOTE: the calls alternate: a server loads its versions side by side, so the machine is busier
    while the first is timed than later; timing one runtime after the other favoured the second
    (measured: auto kept TensorFlow for every default model of a starting server).
    """
    first()
    second()
    times: tuple[list[float], list[float]] = ([], [])
    for _ in range(rounds):
        for run, timed in zip((first, second), times):
            started = time.monotonic()
            run()
            timed.append(time.monotonic() - started)
    return min(times[0]), min(times[1])


def choose(
    options: RuntimeOptions,
    load_twin: Callable[[], tuple[Any, str, bytes]],
    run_tensorflow: Callable[[str], Any],
    run_onnx: Callable[[Any, str], Any],
    label: str,
    needed: frozenset[str] | None = None,
    recorded: frozenset[str] | None = None,
    check: Callable[[Any], Any] | None = None,
    size: int = 224,
) -> Choice:
    """Pick the runtime of one version following ``options.runtime``.

    ``auto`` and ``onnxruntime`` use the twin when one is usable; ``auto`` also times both runtimes on
    the warm-up batch and keeps the faster (a network ONNX Runtime runs slower stays on TensorFlow).
    ``run_tensorflow(output)`` and ``run_onnx(session, output)`` run that batch once: probabilities
    when the twin has them, else features. Both are timed on every core: TensorFlow uses them all,
    so the twin is timed on its lone-batch session (one thread per core), not a one-thread session.

    ``needed`` is the outputs the version serves. On ``auto``, a twin without all of them (a
    features-only twin) is not used: TensorFlow must keep the whole network for the rest, so the twin
    would be a second copy of the features' layers, with its sessions and their buffers (measured,
    issue 29: the default vgg16 held 1310 MiB on auto that way against 597 on TensorFlow, for
    features 3% faster). ``onnxruntime`` still uses it. ``recorded`` is the outputs the version's
    manifest records for its exported twin: when they already say so, the twin is not even loaded
    (its check runs the SavedModel on a batch, which grows TensorFlow's buffers).

    ``openvino``: :func:`choose_openvino` (``check(session)`` checks a session against the SavedModel;
    ``size`` is the version's input size).
    """
    if options.runtime == TENSORFLOW:
        return Choice(TENSORFLOW, "runtime = tensorflow (setting)")
    if options.runtime == OPENVINO:
        return choose_openvino(options, load_twin, label, check, size)
    if options.runtime == AUTO and needed is not None and recorded and not needed <= recorded:
        return _partial_twin(needed, recorded, label)
    loaded = _load_twin(load_twin, label)
    if isinstance(loaded, Choice):
        return loaded
    session, origin, model = loaded
    outputs = onnx_twin.twin_outputs(session)
    if options.runtime == AUTO and needed is not None and not needed <= outputs:
        return dataclasses.replace(_partial_twin(needed, outputs, label), reference=session)
    try:
        lone = lone_batch_session(model, options.onnx_threads)
    except Exception as exc:  # the twin already runs on one session: serve without the lone-batch one
        log.warning("%s: no lone-batch session of the twin: %s", label, exc)
        lone = None
    if options.runtime == ONNXRUNTIME:
        detail = f"runtime = onnxruntime (setting); twin {origin}"
        return Choice(ONNXRUNTIME, detail, session, lone, outputs)
    timed = sig.PROBABILITIES_OUTPUT if sig.PROBABILITIES_OUTPUT in outputs else sig.FEATURES_OUTPUT
    try:
        run_onnx(session, timed)
    except Exception as exc:  # as above: a twin that fails on the warm-up batch is not served
        log.warning(
            "%s: served by TensorFlow, the ONNX twin failed its warm-up: %s", label, exc, exc_info=True
        )
        detail = f"the ONNX twin failed on the warm-up batch: {type(exc).__name__}"
        return Choice(TENSORFLOW, detail, reference=session)
    every_core = lone if lone is not None else session
    onnx_s, tensorflow_s = best_of_alternating(
        lambda: run_onnx(every_core, timed), lambda: run_tensorflow(timed)
    )
    timings = (
        f"warm-up batch of {options.timing_batch}: onnxruntime {onnx_s * 1000:.1f} ms,"
        f" tensorflow {tensorflow_s * 1000:.1f} ms"
    )
    log.info("%s: %s (twin %s)", label, timings, origin)
    if onnx_s <= tensorflow_s:
        detail = f"auto: {timings}; twin {origin}"
        return Choice(ONNXRUNTIME, detail, session, lone, outputs)
    return Choice(TENSORFLOW, f"auto: {timings}; TensorFlow is faster here", reference=session)


def _load_twin(
    load_twin: Callable[[], tuple[Any, str, bytes]], label: str
) -> tuple[Any, str, bytes] | Choice:
    """The checked twin's (session, origin, bytes), or TensorFlow's :class:`Choice` with the reason
    when there is none (ONNX Runtime's own errors included: TensorFlow can still serve the version)."""
    try:
        return load_twin()
    except onnx_twin.TwinUnusable as exc:
        log.warning("%s: served by TensorFlow, no usable ONNX twin: %s", label, exc)
        return Choice(TENSORFLOW, f"no usable ONNX twin: {exc}")
    except Exception as exc:  # only its type reaches the status: its text may name server paths
        log.warning("%s: served by TensorFlow, the ONNX twin failed: %s", label, exc, exc_info=True)
        return Choice(TENSORFLOW, f"the ONNX twin failed to load: {type(exc).__name__}")


def choose_openvino(
    options: RuntimeOptions,
    load_twin: Callable[[], tuple[Any, str, bytes]],
    label: str,
    check: Callable[[Any], Any] | None = None,
    size: int = 224,
) -> Choice:
    """``runtime = openvino``: the twin compiled by OpenVINO at ``options.precision``.

    The twin is first loaded and checked on ONNX Runtime as on any runtime (its fp32 reference, kept
    in :attr:`Choice.reference` so that the caller can shrink the arena it grew). At fp32, OpenVINO's
    compilation is checked against the SavedModel as ONNX Runtime's is (``check``); at bf16 it must
    pass :func:`graphs.openvino_twin.precision_gate` against the fp32 twin on the check images, else it
    serves at fp32, with the reason and the figures in the detail. Both sessions (the batch one and
    the lone-batch one, compiled apart) pass. Without a usable twin, or if OpenVINO fails, TensorFlow
    serves the version (as with ONNX Runtime).
    """
    from graphs import openvino_twin

    loaded = _load_twin(load_twin, label)
    if isinstance(loaded, Choice):
        return loaded
    reference, origin, model = loaded
    outputs = onnx_twin.twin_outputs(reference)
    cores = os.cpu_count() or 1
    pixels = onnx_twin.check_pixels(size)

    def compiled(precision: str) -> tuple[Any, Any, dict[str, Any]]:
        """Both sessions at ``precision``, checked (fp32) or gated (bf16); raises TwinUnusable."""
        session = openvino_twin.new_session(model, options.onnx_threads, precision)
        lone = openvino_twin.new_session(model, cores, precision) if options.onnx_threads < cores else None
        figures: dict[str, Any] = {}
        for each in filter(None, (lone, session)):  # the figures shown are the batch session's
            if precision == openvino_twin.FP32:
                figures = dict(check(each)) if check is not None else {}
            else:
                figures = openvino_twin.precision_gate(reference, each, pixels)
        return session, lone, figures

    def tensorflow(exc: Exception) -> Choice:
        reason = (
            str(exc) if isinstance(exc, onnx_twin.TwinUnusable) else f"OpenVINO failed: {type(exc).__name__}"
        )
        log.warning(
            "%s: served by TensorFlow: %s",
            label,
            reason,
            exc_info=not isinstance(exc, onnx_twin.TwinUnusable),
        )
        return Choice(TENSORFLOW, f"runtime = openvino (setting), but {reason}", reference=reference)

    why = ""
    try:
        precision = options.precision
        if precision == openvino_twin.BF16 and (unsupported := openvino_twin.bf16_support()):
            precision, why = openvino_twin.FP32, f"bf16 asked, fp32 used: {unsupported}"
        try:
            session, lone, figures = compiled(precision)
        except Exception as exc:
            if precision == openvino_twin.FP32:
                raise
            reason = str(exc) if isinstance(exc, onnx_twin.TwinUnusable) else type(exc).__name__
            log.warning("%s: bf16 refused (%s); OpenVINO at fp32", label, reason)
            precision, why = openvino_twin.FP32, f"bf16 failed its gate against fp32, fp32 used: {reason}"
            session, lone, figures = compiled(precision)
    except Exception as exc:  # TwinUnusable, and OpenVINO's own errors: TensorFlow serves the version
        return tensorflow(exc)
    if session.compiled_precision != openvino_twin.COMPILED[precision]:
        why = "; ".join(filter(None, [why, f"OpenVINO compiled it at {session.compiled_precision}"]))
    gate = ", ".join(
        f"{key} {value:g}"
        for key, value in figures.items()
        if isinstance(value, (int, float)) and not isinstance(value, bool)
    )
    detail = f"runtime = openvino (setting), precision {precision}" + (f" ({gate})" if gate else "")
    if why:
        detail += f"; {why}"
    detail += f"; twin {origin}"
    log.info("%s: %s", label, detail)
    return Choice(OPENVINO, detail, session, lone, outputs, precision, reference)


def _partial_twin(needed: frozenset[str], outputs: frozenset[str], label: str) -> Choice:
    """``auto`` on a twin without every output the version serves: TensorFlow serves it all."""
    detail = (
        f"auto: the twin computes {', '.join(sorted(outputs))} only, so TensorFlow keeps the whole "
        f"network for {', '.join(sorted(needed - outputs))}; running the rest on the twin would hold "
        "its layers twice (runtime = onnxruntime does)"
    )
    log.info("%s: served by TensorFlow: %s", label, detail)
    return Choice(TENSORFLOW, detail)


def lone_batch_session(model: bytes, onnx_threads: int) -> Any | None:
    """A second session of the twin, on every core, for a batch that runs while no other does.

    NOTE: under load, batches run side by side, one per model thread, each on ``onnx_threads``
    (cores / model_threads): that uses the cores best (two one-thread sessions ran MobileNetV2 at 117
    img/s here, one two-thread session at 103). At light load a batch runs alone and would leave cores
    idle, so it gets every core: a single image took 9.8 ms on two threads against 14.6 on one. None when
    ``onnx_threads`` already covers every core.
    """
    cores = os.cpu_count() or 1
    if onnx_threads >= cores:
        return None
    return onnx_twin.new_session(model, cores)


def default_onnx_threads(model_threads: int) -> int:
    """ONNX Runtime threads per session so that ``model_threads`` concurrent batches fill the cores once."""
    return max(1, (os.cpu_count() or 1) // max(1, model_threads))


def tensorflow_preprocessing(size: int) -> tuple[Callable[[Any], Any], Any]:
    """(decode, resize): the signatures' own code for encoded images and for pixels, as tf.functions.

    ``decode`` takes a string tensor ``[N]``. NOTE: a single image skips ``map_fn``'s loop (decoding a
    photo took 3.8 ms that way against 4.6 here); the ops are the same, so are the pixels.
    """
    import tensorflow as tf

    from graphs import signatures as sig

    decode_batch = tf.function(
        lambda images: sig.decode_images(images, size), input_signature=[tf.TensorSpec([None], tf.string)]
    )
    decode_one = tf.function(
        lambda data: sig.decode_image(data, size)[None], input_signature=[tf.TensorSpec([], tf.string)]
    )

    def decode(images: Any) -> Any:
        images = tf.convert_to_tensor(images, tf.string)
        return decode_one(images[0]) if images.shape[0] == 1 else decode_batch(images)

    resize = tf.function(
        lambda pixels: sig.resize_pixels(pixels, size),
        input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8)],
    )
    return decode, resize
