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

import numpy as np

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
FP32 = "fp32"
#: ``precision``: fp32, or a reduced one through OpenVINO (gated), or ``auto``: the fastest that passes.
PRECISIONS = (FP32, "bf16", "int8", AUTO)
CACHE_FOLDER = "onnx"
TIMING_ROUNDS = 3


@dataclass(frozen=True)
class RuntimeOptions:
    """How one version picks and runs its runtime (from the settings)."""

    runtime: str = AUTO
    cache_dir: Path | None = None  # <state_dir>/onnx; None: convert without caching
    onnx_threads: int = 1  # intra-op threads of the ONNX Runtime session
    timing_batch: int = 8  # images in the warm-up batch that auto times
    precision: str = "fp32"  # fp32, bf16, int8 or auto: OpenVINO's (graphs/openvino_twin.py)


@dataclass(frozen=True)
class GateImages:
    """A version's own images for reduced precisions, decoded to the twin's pixels
    (:mod:`graphs.calibration`): calibration images (int8 quantizes on them, every gate compares on
    them) and a fine-tuned version's held-out images with their class ids."""

    calibration: np.ndarray | None = None
    validation: np.ndarray | None = None
    validation_classes: np.ndarray | None = None


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
    #: The reduced precision's gate figures, or why the precision asked is not used ("" at fp32).
    precision_detail: str = ""


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


def best_of_rounds(calls: list[Callable[[], Any]], rounds: int = TIMING_ROUNDS) -> list[float]:
    """Fastest of ``rounds`` timed calls of each, in seconds, after one untimed call of each.

    NOTE: the calls take turns: a server loads its versions side by side, so the machine is busier
    while the first is timed than later; timing one runtime after the other favoured the second
    (measured: auto kept TensorFlow for every default model of a starting server).
    """
    for call in calls:
        call()
    times: list[list[float]] = [[] for _ in calls]
    for _ in range(rounds):
        for call, timed in zip(calls, times):
            started = time.monotonic()
            call()
            timed.append(time.monotonic() - started)
    return [min(each) for each in times]


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
    own_images: Callable[[], GateImages] | None = None,
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

    ``auto`` with a reduced ``options.precision`` (bf16, int8, auto) also times the twin on OpenVINO at
    each precision that passes its gate (:func:`reduced_precisions`; ``own_images()``: the version's
    calibration and held-out images) and keeps the fastest of all; there a features-only twin is used too (the
    precision was asked for speed), but not on ONNX Runtime fp32.

    ``openvino``: :func:`choose_openvino` (``check(session)`` checks a session against the SavedModel;
    ``size`` is the version's input size).
    """
    if options.runtime == TENSORFLOW:
        return Choice(TENSORFLOW, "runtime = tensorflow (setting)")
    if options.runtime == OPENVINO:
        return choose_openvino(options, load_twin, label, check, size, run_onnx, own_images)
    reduced_asked = options.runtime == AUTO and options.precision != FP32
    if options.runtime == AUTO and needed is not None and recorded and not needed <= recorded:
        if not reduced_asked:
            return _partial_twin(needed, recorded, label)
    loaded = _load_twin(load_twin, label)
    if isinstance(loaded, Choice):
        return loaded
    session, origin, model = loaded
    outputs = onnx_twin.twin_outputs(session)
    partial = needed is not None and not needed <= outputs
    if options.runtime == AUTO and partial and not reduced_asked:
        return dataclasses.replace(_partial_twin(needed, outputs, label), reference=session)
    try:  # (a partial twin on auto never serves on ONNX Runtime: it needs no lone-batch session)
        lone = (
            None if partial and options.runtime == AUTO else lone_batch_session(model, options.onnx_threads)
        )
    except Exception as exc:  # the twin already runs on one session: serve without the lone-batch one
        log.warning("%s: no lone-batch session of the twin: %s", label, exc)
        lone = None
    if options.runtime == ONNXRUNTIME:
        detail = f"runtime = onnxruntime (setting); twin {origin}"
        asked = options.precision
        ignored = f"precision {asked} needs runtime openvino or auto" if asked != FP32 else ""
        return Choice(ONNXRUNTIME, detail, session, lone, outputs, precision_detail=ignored)
    timed = sig.PROBABILITIES_OUTPUT if sig.PROBABILITIES_OUTPUT in outputs else sig.FEATURES_OUTPUT
    try:
        run_onnx(session, timed)
    except Exception as exc:  # as above: a twin that fails on the warm-up batch is not served
        log.warning(
            "%s: served by TensorFlow, the ONNX twin failed its warm-up: %s", label, exc, exc_info=True
        )
        detail = f"the ONNX twin failed on the warm-up batch: {type(exc).__name__}"
        return Choice(TENSORFLOW, detail, reference=session)
    reduced: list[Compiled] = []
    notes: list[str] = []
    if reduced_asked:
        try:
            reduced, notes = reduced_precisions(options, model, session, size, own_images, label)
            reduced = runnable(reduced, run_onnx, timed, notes, label)
        except Exception as exc:  # OpenVINO's own errors: the fp32 runtimes still serve
            log.warning("%s: OpenVINO failed: %s", label, exc, exc_info=True)
            reduced, notes = [], [f"OpenVINO failed: {type(exc).__name__}"]
    # Candidates, timed in turns on the warm-up batch, each on every core. A partial twin on ONNX
    # Runtime fp32 would hold the features' layers twice for nothing (see above): not a candidate.
    every_core = lone if lone is not None else session
    runs: dict[str, Callable[[], Any]] = {}
    if not partial:
        runs[ONNXRUNTIME] = lambda: run_onnx(every_core, timed)
    runs[TENSORFLOW] = lambda: run_tensorflow(timed)
    for candidate in reduced:
        runs[f"openvino {candidate.precision}"] = lambda c=candidate: run_onnx(c.every_core, timed)
    seconds = dict(zip(runs, best_of_rounds(list(runs.values()))))
    timings = f"warm-up batch of {options.timing_batch}: " + ", ".join(
        f"{name} {s * 1000:.1f} ms" for name, s in seconds.items()
    )
    log.info("%s: %s (twin %s)", label, timings, origin)
    fastest = min(seconds, key=seconds.__getitem__)  # the first of equals: ONNX Runtime before TensorFlow
    notes_shown = "".join(f"; {note}" for note in notes)
    if fastest == ONNXRUNTIME:
        detail = f"auto: {timings}{notes_shown}; twin {origin}"
        return Choice(ONNXRUNTIME, detail, session, lone, outputs, precision_detail="; ".join(notes))
    if fastest == TENSORFLOW:
        detail = f"auto: {timings}; TensorFlow is faster here{notes_shown}"
        return Choice(TENSORFLOW, detail, reference=session, precision_detail="; ".join(notes))
    chosen = next(c for c in reduced if f"openvino {c.precision}" == fastest)
    gate = chosen.gate()
    precision_detail = "; ".join([f"{chosen.precision} ({gate})", *notes])
    detail = f"auto: {timings}; precision {chosen.precision} ({gate}){notes_shown}; twin {origin}"
    return Choice(
        OPENVINO, detail, chosen.session, chosen.lone, outputs, chosen.precision, session, precision_detail
    )


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


@dataclass
class Compiled:
    """The twin compiled by OpenVINO at one precision, past its check (fp32) or its gate (bf16, int8)."""

    precision: str
    session: Any
    lone: Any  # the lone-batch session (every core), None when ``onnx_threads`` covers them
    figures: dict[str, Any]

    @property
    def every_core(self) -> Any:
        return self.lone if self.lone is not None else self.session

    def gate(self) -> str:
        """The figures, as shown in status: ``images 6, features_cosine_min 0.99998``."""
        return ", ".join(
            f"{key} {value:g}"
            for key, value in self.figures.items()
            if isinstance(value, (int, float)) and not isinstance(value, bool)
        )


def _compile(
    model: bytes, precision: str, options: RuntimeOptions, accept: Callable[[Any], dict[str, Any]]
) -> Compiled:
    """Both sessions at ``precision``, each passing ``accept`` (which raises TwinUnusable otherwise)."""
    from graphs import openvino_twin

    cores = os.cpu_count() or 1
    session = openvino_twin.new_session(model, options.onnx_threads, precision)
    lone = openvino_twin.new_session(model, cores, precision) if options.onnx_threads < cores else None
    figures: dict[str, Any] = {}
    for each in filter(None, (lone, session)):  # the figures shown are the batch session's
        figures = dict(accept(each))
    return Compiled(precision, session, lone, figures)


def reduced_precisions(
    options: RuntimeOptions,
    model: bytes,
    reference: Any,
    size: int,
    own_images: Callable[[], GateImages] | None,
    label: str,
) -> tuple[list[Compiled], list[str]]:
    """The twin on OpenVINO at each reduced precision ``options.precision`` asks for (``auto``: bf16
    and int8) that this CPU and version allow and that passes :func:`graphs.openvino_twin.precision_gate`
    against the fp32 ``reference`` on the check images plus the version's calibration images (and, for
    a fine-tuned version, :func:`graphs.openvino_twin.held_out_gate` on its held-out images); and why
    the others are not used. int8 needs calibration images (:mod:`graphs.calibration`). The version's
    own images are read only when a precision needs them, and the fp32 answers computed once."""
    from graphs import openvino_twin, quantize

    asked = options.precision
    wanted = openvino_twin.REDUCED if asked == AUTO else [p for p in openvino_twin.REDUCED if p == asked]
    passed: list[Compiled] = []
    notes: list[str] = []
    gate: dict[str, Any] = {}  # the gate's images and fp32 answers, made for the first candidate

    def prepare() -> None:
        try:
            own = own_images() if own_images is not None else GateImages()
        except Exception as exc:  # a partial copy, an undecodable file: bf16 can still serve
            log.warning("%s: the version's own images are unusable: %s", label, exc, exc_info=True)
            notes.append(f"the version's own images are unusable: {type(exc).__name__}: {exc}"[:300])
            own = GateImages()
        pixels = onnx_twin.check_pixels(size)
        if own.calibration is not None and len(own.calibration):
            pixels = np.concatenate([pixels, np.asarray(own.calibration, np.float32)])
        outputs = [output.name for output in reference.get_outputs()]
        gate.update(own=own, pixels=pixels, expected=openvino_twin.run_in_chunks(reference, outputs, pixels))
        held_out = own.validation is not None and own.validation_classes is not None and len(own.validation)
        if held_out and sig.PROBABILITIES_OUTPUT in outputs:
            answers = openvino_twin.run_in_chunks(reference, [sig.PROBABILITIES_OUTPUT], own.validation)
            gate["held_out"] = answers[sig.PROBABILITIES_OUTPUT]

    def accept(session: Any) -> dict[str, Any]:
        figures = openvino_twin.precision_gate(reference, session, gate["pixels"], gate["expected"])
        if "held_out" in gate:
            own = gate["own"]
            figures.update(
                openvino_twin.held_out_gate(
                    reference, session, own.validation, own.validation_classes, gate["held_out"]
                )
            )
        return figures

    for precision in wanted:
        fallback = f"{precision} asked, fp32 used" if asked != AUTO else f"{precision} not used"
        if precision == openvino_twin.BF16 and (unsupported := openvino_twin.bf16_support()):
            notes.append(f"{fallback}: {unsupported}")
            continue
        if not gate:
            prepare()
        calibrated = gate["own"].calibration
        if precision == openvino_twin.INT8 and (calibrated is None or not len(calibrated)):
            notes.append(f"{fallback}: the version has no calibration images (export with --calibration DIR)")
            continue
        try:
            network = model if precision != openvino_twin.INT8 else quantize.quantize(model, calibrated)
            passed.append(_compile(network, precision, options, accept))
        except Exception as exc:  # the gate, the quantizer, OpenVINO's own errors: fp32 still serves
            refused = isinstance(exc, openvino_twin.GateRefused)
            reason = str(exc) if isinstance(exc, onnx_twin.TwinUnusable) else type(exc).__name__
            log.warning("%s: %s refused (%s)", label, precision, reason, exc_info=not refused)
            failed = f"{precision} failed its gate against fp32" if refused else f"{precision} failed"
            notes.append(f"{failed}, fp32 used: {reason}" if asked != AUTO else f"{failed}: {reason}")
    return passed, notes


def runnable(
    candidates: list[Compiled], run_onnx: Callable[[Any, str], Any], timed: str, notes: list[str], label: str
) -> list[Compiled]:
    """The candidates that answer the warm-up batch (``run_onnx(session, timed)``) on every core; why the
    others are dropped goes into ``notes`` (a failure there must not fail the version's load)."""
    kept = []
    for candidate in candidates:
        try:
            run_onnx(candidate.every_core, timed)
            kept.append(candidate)
        except Exception as exc:  # OpenVINO's own errors: the other candidates still serve
            log.warning("%s: %s failed on the warm-up batch", label, candidate.precision, exc_info=True)
            notes.append(f"{candidate.precision} failed on the warm-up batch: {type(exc).__name__}")
    return kept


def choose_openvino(
    options: RuntimeOptions,
    load_twin: Callable[[], tuple[Any, str, bytes]],
    label: str,
    check: Callable[[Any], Any] | None = None,
    size: int = 224,
    run_onnx: Callable[[Any, str], Any] | None = None,
    own_images: Callable[[], GateImages] | None = None,
) -> Choice:
    """``runtime = openvino``: the twin compiled by OpenVINO at ``options.precision``.

    The twin is first loaded and checked on ONNX Runtime as on any runtime (its fp32 reference, kept
    in :attr:`Choice.reference` so that the caller can shrink the arena it grew). At fp32, OpenVINO's
    compilation is checked against the SavedModel as ONNX Runtime's is (``check``); a reduced precision
    (:func:`reduced_precisions`) serves only past its gate, else fp32 does, with the reason and the
    figures in the detail. ``precision = auto``: fp32 and every precision that passes are timed on the
    warm-up batch (``run_onnx``) and the fastest serves. Both sessions (the batch one and the lone-batch
    one, compiled apart) pass. Without a usable twin, or if OpenVINO fails, TensorFlow serves the
    version (as with ONNX Runtime).
    """
    from graphs import openvino_twin

    loaded = _load_twin(load_twin, label)
    if isinstance(loaded, Choice):
        return loaded
    reference, origin, model = loaded
    outputs = onnx_twin.twin_outputs(reference)

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

    try:
        pool, notes = reduced_precisions(options, model, reference, size, own_images, label)
        if not pool or options.precision == AUTO:
            pool.append(_compile(model, openvino_twin.FP32, options, check or (lambda session: {})))
    except Exception as exc:  # TwinUnusable, and OpenVINO's own errors: TensorFlow serves the version
        return tensorflow(exc)
    timings = ""
    if len(pool) > 1 and run_onnx is not None:
        timed = sig.PROBABILITIES_OUTPUT if sig.PROBABILITIES_OUTPUT in outputs else sig.FEATURES_OUTPUT
        pool = runnable(pool, run_onnx, timed, notes, label)
        if not pool:
            return tensorflow(onnx_twin.TwinUnusable("no precision answered the warm-up batch"))
        if len(pool) > 1:
            seconds = best_of_rounds([lambda c=c: run_onnx(c.every_core, timed) for c in pool])
            timings = f"precision auto, warm-up batch of {options.timing_batch}: " + ", ".join(
                f"{c.precision} {s * 1000:.1f} ms" for c, s in zip(pool, seconds)
            )
            pool = [pool[seconds.index(min(seconds))]]
    chosen = pool[0]
    if chosen.session.compiled_precision != openvino_twin.COMPILED[chosen.precision]:
        notes.append(f"OpenVINO compiled it at {chosen.session.compiled_precision}")
    gate = chosen.gate()
    shown = f"{chosen.precision} ({gate})" if gate else ""
    precision_detail = "; ".join(filter(None, [shown, timings, *notes]))
    detail = f"runtime = openvino (setting), precision {chosen.precision}" + (f" ({gate})" if gate else "")
    detail += "".join(f"; {part}" for part in filter(None, [timings, *notes]))
    detail += f"; twin {origin}"
    log.info("%s: %s", label, detail)
    return Choice(
        OPENVINO, detail, chosen.session, chosen.lone, outputs, chosen.precision, reference, precision_detail
    )


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
