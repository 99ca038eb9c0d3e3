"""One loaded SavedModel version: its signatures, labels and manifest, and how to run a batch.

The real :class:`server.backend.ModelBackend`. Loading is synchronous and slow (seconds); the
repository runs it in a loader thread (:func:`load_saved_model`). ``run`` is called from model threads
(TensorFlow functions and ONNX Runtime sessions are thread-safe) with a batch of encoded images. The
network runs on the runtime :mod:`server.runtime` picks at load.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import logging
import re
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from graphs import calibration, onnx_twin
from graphs.publish import sample_png
from model_format import signatures as sig
from model_format.manifest import MANIFEST_FILE
from server import runtime as rt
from server.backend import KINDS, LoadError, VersionMetadata
from server.batching import BatchOutcome
from server.memory import release_memory, resident_bytes
from server.memory_budget import size_on_disk

log = logging.getLogger(__name__)


def redact_path(message: str, path: Path, label: str) -> str:
    """Replace the server's directory in a message by ``label`` (clients never see server paths)."""
    return message.replace(str(path), label).replace(str(path.resolve()), label)


def _describe_source(manifest: dict[str, Any]) -> str:
    source = manifest.get("source", {})
    weights = manifest.get("weights", {})
    kind = source.get("kind", "unknown")
    if kind == "keras":
        builder = source.get("keras_application") or source.get("keras_builder")
        return f"keras {builder} weights={weights.get('kind')}"
    if kind == "hub":
        return "hub " + ", ".join(f"{k}={v}" for k, v in weights.get("handles", {}).items())
    if kind == "finetune":
        return (
            f"finetune of {source.get('base_model')} v{source.get('base_version')} "
            f"(job {source.get('job_id')})"
        )
    return kind


def read_metadata(path: Path, signature_names: list[str]) -> VersionMetadata:
    """A version's metadata from its manifest and labels file (no TensorFlow)."""
    manifest_path = path / MANIFEST_FILE
    try:
        manifest = json.loads(manifest_path.read_text())
    except FileNotFoundError:
        raise LoadError(
            f"no {MANIFEST_FILE}: not written by the exporter (export it with python -m exporter)"
        ) from None
    except json.JSONDecodeError as exc:
        raise LoadError(f"{MANIFEST_FILE} is not valid JSON: {exc}") from None
    labels: tuple[str, ...] = ()
    if manifest.get("labels_file"):
        try:
            labels = tuple((path / manifest["labels_file"]).read_text(encoding="utf-8").splitlines())
        except (OSError, UnicodeDecodeError) as exc:
            reason = (
                exc.strerror if isinstance(exc, OSError) else str(exc)
            )  # an OSError's text names the path
            raise LoadError(f"labels file {manifest['labels_file']} unreadable: {reason}") from None
    num_classes = int(manifest.get("num_classes") or 0)
    if num_classes and len(labels) != num_classes:
        raise LoadError(f"{len(labels)} labels for {num_classes} classes")
    created = manifest.get("created_at")
    return VersionMetadata(
        input_size=int(manifest["input_size"]),
        num_classes=num_classes,
        feature_dim=int(manifest.get("feature_dim") or 0),
        signature_names=tuple(sorted(signature_names)),
        labels=labels,
        preprocessing=str(manifest.get("preprocessing", "")),
        source=_describe_source(manifest),
        created_at=dt.datetime.fromisoformat(created) if created else None,
    )


_TF_NOISE = re.compile(
    r"^(Graph execution error|Detected at node|<stack traces unavailable>|\[\[|\{\{function_node)"
)


def tf_error_reason(exc: Exception) -> str:
    """The human part of a TensorFlow op error ("Invalid PNG data, size 200")."""
    message = getattr(exc, "message", None) or str(exc)
    lines = [line.strip() for line in message.splitlines()]
    useful = [line for line in lines if line and not _TF_NOISE.match(line)]
    reason = useful[-1] if useful else "could not decode"
    return re.sub(r"\s*\[Op:[^\]]*\]$", "", reason)


def _warm_up_inputs() -> tuple[bytes, np.ndarray]:
    """The warm-up image: encoded, and as decoded pixels ``[1, H, W, 3]``."""
    image = sample_png()
    return image, np.asarray(Image.open(io.BytesIO(image)).convert("RGB"))[None]


def read_signature_defs(path: Path, names: tuple[str, ...]) -> dict[str, Any]:
    """The SignatureDef protos of ``names``, parsed from ``saved_model.pb`` (no graph is loaded)."""
    from tensorflow.core.protobuf import saved_model_pb2

    saved = saved_model_pb2.SavedModel.FromString((Path(path) / "saved_model.pb").read_bytes())
    if not saved.meta_graphs:
        return {}
    graph = next((m for m in saved.meta_graphs if "serve" in m.meta_info_def.tags), saved.meta_graphs[0])
    return {name: graph.signature_def[name] for name in names if name in graph.signature_def}


class LoadedModel:
    """A SavedModel version in memory. Use :meth:`load`; then :meth:`run` from any thread."""

    def __init__(
        self, name: str, version: int, path: Path, saved_model: Any, metadata: VersionMetadata
    ) -> None:
        self.name = name
        self.version = version
        self.path = path
        self.metadata = metadata
        self.signature_defs: dict[str, Any] = {}
        self.runtime = rt.TENSORFLOW
        self.runtime_detail = ""
        #: What the twin computes in (fp32, bf16, int8; TensorFlow: fp32) and its gate's figures or why
        #: the precision asked is not used (graphs/openvino_twin.py).
        self.precision = rt.FP32
        self.precision_detail = ""
        self.resident_bytes = 0  # measured by load()
        self._saved_model = saved_model
        self._functions = {
            kind: saved_model.signatures[signature]
            for kind, (signature, _output) in KINDS.items()
            if signature in saved_model.signatures
        }
        self._kinds = frozenset(self._functions)
        self._session: Any = None  # the twin's session when it runs on onnxruntime or openvino
        self._lone_session: Any = None  # the twin on every core, for a batch running alone (runtime.py)
        # Kinds the twin runs; the others stay TensorFlow's (a features-only twin, graphs/onnx_twin.py).
        self._onnx_kinds: frozenset[str] = frozenset()
        self._twin_bytes = 0  # size of the twin the sessions run
        self._twin_runtime = rt.ONNXRUNTIME  # what runs the twin: onnxruntime or openvino
        self._onnx_batches = 0  # batches inside _run_onnx now
        self._onnx_batches_lock = threading.Lock()
        self._decode, self._resize = rt.tensorflow_preprocessing(metadata.input_size)

    @classmethod
    def load(
        cls, name: str, version: int, path: Path, options: rt.RuntimeOptions | None = None
    ) -> LoadedModel:
        """Load, warm up and pick the runtime; raise :class:`LoadError` with a reason a user can act on."""
        import tensorflow as tf

        options = options or rt.RuntimeOptions()

        if not (path / "saved_model.pb").is_file():
            raise LoadError("no saved_model.pb")
        started = time.monotonic()
        memory_before = resident_bytes()
        try:
            saved_model = tf.saved_model.load(str(path))
        except Exception as exc:  # TensorFlow raises anything from OpError to IndexError on corrupt files
            lines = (getattr(exc, "message", None) or str(exc) or type(exc).__name__).strip().splitlines()
            reason = redact_path(lines[0] if lines else type(exc).__name__, path, f"{name}/{version}")
            raise LoadError(f"TensorFlow could not load the SavedModel: {reason}") from None
        if not any(signature in saved_model.signatures for signature, _ in KINDS.values()):
            raise LoadError(
                f"no {sig.CLASSIFY!r} or {sig.FEATURES!r} signature (not written by the exporter?)"
            )
        metadata = read_metadata(path, list(saved_model.signatures))
        model = cls(name, version, path, saved_model, metadata)
        del saved_model  # the model holds it, and drops it if the twin runs every kind
        # Kept for TF Serving's GetModelMetadata, which must answer even if the directory is deleted later.
        model.signature_defs = read_signature_defs(path, metadata.signature_names)
        loaded = time.monotonic()
        model.warm_up()
        warm = time.monotonic()
        model._pick_runtime(options)
        # NOTE: give back what the load freed (TensorFlow's copy of the network when the twin runs every
        # kind; the warm-up's and the timing's buffers): measured, the three defaults' server on auto
        # held ~700 MiB more without it (glibc keeps freed memory in each thread's arena).
        release_memory()
        # NOTE: loads run one at a time, so the growth is this version's (give or take requests' buffers).
        # It is at least the weights it holds: allocators keep what an unloaded version freed and hand it
        # to the next load (TensorFlow's oneDNN allocator does: a VGG16 loaded after another was evicted
        # grew RSS by 15 MiB), and a budget trusting that growth would hold every version at once.
        model.resident_bytes = max(resident_bytes() - memory_before, model.weights_bytes())
        log.info(
            "loaded %s v%d: %.1f s load + %.1f s warm-up + %.1f s runtime choice (%s) on %s: %s",
            name,
            version,
            loaded - started,
            warm - loaded,
            time.monotonic() - warm,
            ", ".join(sorted(model._kinds)),
            model.runtime,
            model.runtime_detail,
        )
        return model

    def _pick_runtime(self, options: rt.RuntimeOptions) -> None:
        """Follow ``options.runtime``; if the twin runs every kind, drop TensorFlow's copy of the network."""
        batch = [sample_png()] * options.timing_batch
        kind_of_output = {output: kind for kind, (_signature, output) in KINDS.items()}

        manifest = json.loads((self.path / MANIFEST_FILE).read_text())
        recorded = (manifest.get("onnx") or {}).get("outputs")

        def load_twin() -> tuple[Any, str, bytes]:
            session, origin, twin = rt.obtain_twin(
                self._saved_model,
                self.path,
                manifest,
                self.metadata.input_size,
                options.cache_dir,
                options.onnx_threads,
            )
            self._twin_bytes = len(twin)
            return session, origin, twin

        def own_images() -> rt.GateImages:
            images = calibration.read(self.path, manifest)
            held_out, class_ids = calibration.read_validation(self.path, manifest)
            return rt.GateImages(
                self._decode(images).numpy() if images else None,
                self._decode(held_out).numpy() if held_out else None,
                np.asarray(class_ids) if held_out else None,
            )

        choice = rt.choose(
            options,
            load_twin,
            lambda output: self._run_tensorflow(kind_of_output[output], batch),
            lambda session, output: onnx_twin.run_twin(session, output, self._decode(batch).numpy()),
            f"{self.name} v{self.version}",
            frozenset(KINDS[kind][1] for kind in self._kinds),
            frozenset(recorded) if recorded else None,
            lambda session: onnx_twin.check_twin(self._saved_model, session, self.metadata.input_size),
            self.metadata.input_size,
            own_images,
        )
        self.runtime, self.runtime_detail = choice.runtime, choice.detail
        self.precision, self.precision_detail = choice.precision, choice.precision_detail
        # The check and timing batches grew ONNX Runtime's arena: keep what one image needs.
        self._shrink_arena(choice.session if choice.runtime == rt.ONNXRUNTIME else choice.reference)
        if choice.runtime not in rt.TWIN_RUNTIMES:
            return
        self._session, self._lone_session = choice.session, choice.lone_session
        self._twin_runtime = choice.runtime
        self._onnx_kinds = frozenset(kind for kind in self._kinds if KINDS[kind][1] in choice.outputs)
        left = sorted(self._kinds - self._onnx_kinds)
        if left:
            default = self.kind_of(sig.DEFAULT) or "features"
            self.runtime, self.precision = self.runtime_of(default), self.precision_of(default)
            on_twin = choice.runtime + (f" at {choice.precision}" if choice.precision != rt.FP32 else "")
            self.runtime_detail = (
                f"{', '.join(sorted(self._onnx_kinds))} on {on_twin}, {', '.join(left)} on tensorflow "
                f"(the twin has {', '.join(sorted(choice.outputs))} only: the whole network is too big "
                f"to convert); {choice.detail}"
            )
        self._warm_up_twin()
        if left:
            return
        # NOTE: the SavedModel holds the network's weights and compiled functions; nothing needs them
        # once the twin serves every kind (decode/resize are separate functions), so they are released.
        self._saved_model = None
        self._functions = {}

    def weights_bytes(self) -> int:
        """Bytes of the weights this version holds: the SavedModel's variables while TensorFlow keeps
        it, and the twin's in each of its sessions."""
        held = 0 if self.tensorflow_released else size_on_disk(self.path / "variables")
        sessions = sum(session is not None for session in (self._session, self._lone_session))
        return held + self._twin_bytes * sessions

    @property
    def tensorflow_released(self) -> bool:
        """The SavedModel was dropped: the twin runs every kind."""
        return self._saved_model is None

    def runtime_of(self, kind: str) -> str:
        """The runtime that runs ``kind`` (the ``runtime`` label of its batches' metrics)."""
        return self._twin_runtime if kind in self._onnx_kinds else rt.TENSORFLOW

    def precision_of(self, kind: str) -> str:
        """The precision ``kind`` is computed in (the ``precision`` label of its batches' metrics)."""
        return self.precision if kind in self._onnx_kinds else rt.FP32

    def has(self, kind: str) -> bool:
        return kind in self._kinds

    def function(self, kind: str) -> Any:
        """A callable ``f(images=<string tensor>) -> {output: tensor or array}`` running ``kind`` on the
        chosen runtime (what :meth:`run` calls; the benchmark times it directly)."""
        if kind not in self._onnx_kinds:
            return self._functions[kind]
        output = KINDS[kind][1]
        return lambda images: {output: self._run_onnx(kind, images)}

    @property
    def signature_names(self) -> tuple[str, ...]:
        return self.metadata.signature_names

    def kind_of(self, signature: str) -> str | None:
        """Which request kind (classify/features) a signature belongs to; None if unknown."""
        if signature == sig.DEFAULT:
            return "classify" if self.has("classify") else "features"
        if signature not in self.metadata.signature_names:
            return None
        return "classify" if signature.startswith(sig.CLASSIFY) else "features"

    def call_signature(self, signature: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run any signature on numpy inputs (the TF Serving Predict path for pixel inputs)."""
        import tensorflow as tf

        try:
            kind = self.kind_of(signature)
            if kind in self._onnx_kinds:
                if signature.endswith("_pixels"):
                    pixels = self._resize(tf.constant(inputs[sig.PIXELS_INPUT])).numpy()
                else:
                    pixels = self._decode(tf.constant(inputs[sig.IMAGES_INPUT])).numpy()
                output = KINDS[kind][1]
                return {output: onnx_twin.run_twin(self._session, output, pixels)}
            function = self._saved_model.signatures[signature]
            outputs = function(**{name: tf.constant(value) for name, value in inputs.items()})
        except tf.errors.InvalidArgumentError as exc:
            raise ValueError(tf_error_reason(exc)) from None
        return {name: tensor.numpy() for name, tensor in outputs.items()}

    def warm_up(self) -> None:
        """One request through each TensorFlow signature (at load, before the runtime is chosen), so the
        first real request does not pay for tracing."""
        import tensorflow as tf

        image, pixels = _warm_up_inputs()
        for name, function in self._saved_model.signatures.items():
            try:
                if sig.PIXELS_INPUT in function.structured_input_signature[1]:
                    function(**{sig.PIXELS_INPUT: tf.constant(pixels)})
                else:
                    function(**{sig.IMAGES_INPUT: tf.constant([image])})
            except tf.errors.OpError as exc:
                raise LoadError(f"warm-up request through {name!r} failed: {tf_error_reason(exc)}") from None

    def _warm_up_twin(self) -> None:
        """One request through each signature the twin now runs, and a batch through the batch decode."""
        import tensorflow as tf

        image, pixels = _warm_up_inputs()
        for signature in self.signature_names:
            if self.kind_of(signature) in self._onnx_kinds:
                takes_pixels = signature.endswith("_pixels")
                self.call_signature(
                    signature,
                    {sig.PIXELS_INPUT: pixels} if takes_pixels else {sig.IMAGES_INPUT: np.array([image])},
                )
        self._decode(tf.constant([image, image]))  # batches decode through their own function

    def _shrink_arena(self, session: Any) -> None:
        """One image through an ONNX Runtime ``session`` with arena shrinkage: the process's one arena
        gives back what the load's batches took beyond it (None: no ONNX Runtime session ran)."""
        import tensorflow as tf

        if session is not None:
            onnx_twin.shrink_arena(session, self._decode(tf.constant([sample_png()])).numpy())

    def run(self, kind: str, images: list[bytes]) -> BatchOutcome:
        """Run the ``kind`` signature on a batch of encoded images; bad images are reported per index."""
        import tensorflow as tf

        forward = self._run_onnx if kind in self._onnx_kinds else self._run_tensorflow
        try:
            return BatchOutcome(forward(kind, images))
        except tf.errors.InvalidArgumentError as batch_error:
            if len(images) == 1:
                return BatchOutcome(
                    np.zeros((1, self._width(kind)), np.float32),
                    {0: f"could not decode: {tf_error_reason(batch_error)}"},
                )
        # Some image broke the batch: run them one by one to keep the good ones and name the bad.
        rows = np.zeros((len(images), self._width(kind)), np.float32)
        errors: dict[int, str] = {}
        for index, image in enumerate(images):
            try:
                rows[index] = forward(kind, [image])[0]
            except tf.errors.InvalidArgumentError as exc:
                errors[index] = f"could not decode: {tf_error_reason(exc)}"
        return BatchOutcome(rows, errors)

    def _run_tensorflow(self, kind: str, images: Any) -> np.ndarray:
        import tensorflow as tf

        return self._functions[kind](images=tf.constant(images, dtype=tf.string))[KINDS[kind][1]].numpy()

    def _run_onnx(self, kind: str, images: Any) -> np.ndarray:
        import tensorflow as tf

        with self._onnx_batches_lock:
            self._onnx_batches += 1
        try:
            pixels = self._decode(tf.constant(images, dtype=tf.string)).numpy()
            # Counted from before the decode: a batch decoding now will want its cores in a moment.
            alone = self._onnx_batches == 1 and self._lone_session is not None
            return onnx_twin.run_twin(self._lone_session if alone else self._session, KINDS[kind][1], pixels)
        finally:
            with self._onnx_batches_lock:
                self._onnx_batches -= 1

    def close(self) -> None:
        """Drop the SavedModel and the sessions (the repository releases the memory afterwards)."""
        self._saved_model = None
        self._functions = {}
        self._session = self._lone_session = None

    def _width(self, kind: str) -> int:
        return self.metadata.num_classes if kind == "classify" else self.metadata.feature_dim


def load_saved_model(name: str, version: int, path: Path, options: rt.RuntimeOptions) -> LoadedModel:
    """The repository's default :data:`server.backend.BackendLoader`."""
    return LoadedModel.load(name, version, path, options)
