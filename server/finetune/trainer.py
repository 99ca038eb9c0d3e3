"""The training recipe: a frozen base, its features computed once, a small head trained on them.

This is the tutorial's ``GlobalAveragePooling2D -> Dense(256, relu) -> Dense(n, softmax)`` on a frozen
base, done the way TensorFlow's old ``retrain.py`` did it: the base's pooled features are computed
once per image (:func:`extract_features`, through the base's own serving signature, so training sees
exactly what serving will compute), and only the head trains on them. The head standardises its
input with a ``Normalization`` layer adapted on the training features: features of a frozen base can
have a tiny or uneven scale (VGG16 with random weights: mean 0.1, std 0.01), which plain Adam learns
slowly from. With ``augment`` the base runs on every augmented batch instead (no cache; much slower).

Everything here is deterministic for a given seed: the stratified split, the initialisation, the
shuffling and dropout.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from server.finetune.hyperparameters import Hyperparameters
from server.finetune.jobs import ClassMetrics, EpochMetrics

log = logging.getLogger(__name__)

EXTRACT_BATCH = 64
EVAL_BATCH = 512
# NOTE: several optimizer steps per tf.function call; a small head is otherwise dominated by the
# per-step dispatch overhead (it only changes how often per-batch callbacks run, and none is used).
STEPS_PER_EXECUTION = 16


def stratified_split(class_ids: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices of (train, validation): ``fraction`` of each class (at least one image) is held out."""
    rng = np.random.default_rng(seed)
    train, val = [], []
    for class_id in range(int(class_ids.max()) + 1):
        members = rng.permutation(np.flatnonzero(class_ids == class_id))
        n_val = min(max(1, int(round(fraction * len(members)))), len(members) - 1)
        val.append(members[:n_val])
        train.append(members[n_val:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(val))


def class_weights(class_ids: np.ndarray, num_classes: int, weighting: str) -> dict[int, float] | None:
    """``balanced``: n_images / (n_classes * n_class_images), as scikit-learn's; ``none``: None."""
    if weighting == "none":
        return None
    counts = np.bincount(class_ids, minlength=num_classes)
    return {c: float(len(class_ids) / (num_classes * counts[c])) for c in range(num_classes) if counts[c]}


class Decoder:
    """The serving signatures' decoder (:func:`graphs.signatures.decode_images`) on its own."""

    def __init__(self, input_size: int) -> None:
        import tensorflow as tf

        from graphs import signatures as sig

        self.decode = tf.function(
            lambda images: sig.decode_images(images, input_size),
            input_signature=[tf.TensorSpec([None], tf.string)],
        )

    def undecodable(self, images: Sequence[bytes]) -> dict[int, str]:
        """Which of ``images`` the serving decoder rejects (index -> reason); one batch call when none."""
        import tensorflow as tf

        from server.model import tf_error_reason

        if not images:
            return {}
        try:
            self.decode(tf.constant(list(images), dtype=tf.string))
            return {}
        except tf.errors.InvalidArgumentError:
            pass
        failures = {}
        for index, data in enumerate(images):
            try:
                self.decode(tf.constant([data], dtype=tf.string))
            except tf.errors.InvalidArgumentError as exc:
                failures[index] = tf_error_reason(exc)
        return failures


class FrozenBase:
    """An exported model loaded from its version directory, used as a frozen feature extractor.

    Features run on the base's ONNX twin when it has a usable one (3x faster on CPU; checked against the
    SavedModel first, see :mod:`server.runtime`), else through its own ``features`` signature. Either way
    decode is the signature's, so training sees what serving computes. ``embed`` (what the fine-tuned
    version is composed of) stays the SavedModel's.

    ``runtime`` and ``precision``: what computes the base's features in serving. At a reduced precision
    the twin runs as it is served (OpenVINO at bf16 or int8, the same gate against fp32), so that the
    head is trained on the features it is served with; fp32 answers within 1e-5 on any runtime.
    """

    def __init__(
        self,
        path: str,
        input_size: int,
        twin_cache: str | None = None,
        threads: int = 1,
        runtime: str = "auto",
        precision: str = "fp32",
    ) -> None:
        import tensorflow as tf

        from graphs import signatures as sig
        from graphs.onnx_twin import TwinUnusable
        from server import runtime as rt
        from storage.local import read_manifest

        self.saved_model = tf.saved_model.load(path)
        if not hasattr(self.saved_model, "embed") or sig.FEATURES not in self.saved_model.signatures:
            raise ValueError("it has no feature function (exported by an older exporter?); re-export it")
        self.input_size = input_size
        self.embed = self.saved_model.embed
        self.variables = embed_variables(self.embed)
        self.decode = Decoder(input_size).decode
        self._features = self.saved_model.signatures[sig.FEATURES]
        self.runtime, self.precision, self._session = rt.TENSORFLOW, rt.FP32, None
        cache = Path(twin_cache) if twin_cache else None
        if precision != rt.FP32 and runtime in (rt.AUTO, rt.OPENVINO):
            self._reduced(Path(path), cache, threads, runtime, precision)
            return
        try:
            self._session, origin, _ = rt.obtain_twin(
                self.saved_model, Path(path), read_manifest(Path(path)), input_size, cache, threads
            )
            self.runtime = rt.ONNXRUNTIME
            log.info("frozen base features on onnxruntime (twin %s)", origin)
        except (TwinUnusable, OSError, ValueError) as exc:
            log.info("frozen base features on tensorflow: %s", exc)
        except Exception as exc:  # ONNX Runtime's own errors: the base's SavedModel still works
            log.warning("frozen base features on tensorflow, the ONNX twin failed: %s", exc, exc_info=True)

    def _reduced(self, path: Path, cache: Path | None, threads: int, runtime: str, precision: str) -> None:
        """The base's features chosen as serving chooses them (:func:`server.runtime.choose`)."""
        import tensorflow as tf

        from graphs import calibration
        from graphs import signatures as sig
        from graphs.onnx_twin import check_twin, run_twin
        from graphs.publish import sample_png
        from server import runtime as rt
        from storage.local import read_manifest

        def tf_strings(items: Sequence[bytes]) -> Any:
            return tf.constant(list(items), dtype=tf.string)

        manifest = read_manifest(path)
        size = self.input_size
        batch = [sample_png()] * 8

        def own_images() -> rt.GateImages:  # a base's: calibration images only (held-out: fine-tuned)
            images = calibration.read(path, manifest)
            return rt.GateImages(self.decode(tf_strings(images)).numpy() if images else None)

        choice = rt.choose(
            rt.RuntimeOptions(runtime, cache, threads, precision=precision),
            lambda: rt.obtain_twin(self.saved_model, path, manifest, size, cache, threads),
            lambda output: self._features(**{sig.IMAGES_INPUT: tf_strings(batch)}),
            lambda session, output: run_twin(session, output, self.decode(tf_strings(batch)).numpy()),
            f"base {path}",
            frozenset({sig.FEATURES_OUTPUT}),
            check=lambda session: check_twin(self.saved_model, session, size),
            size=size,
            own_images=own_images,
        )
        if choice.runtime in rt.TWIN_RUNTIMES:
            self.runtime, self.precision, self._session = choice.runtime, choice.precision, choice.session
        log.info("frozen base features on %s at %s: %s", self.runtime, self.precision, choice.detail)

    def features(self, images: Sequence[bytes]) -> np.ndarray:
        """Pooled features of the base: exactly what serving computes."""
        import tensorflow as tf

        from graphs import signatures as sig
        from graphs.onnx_twin import run_twin

        batch = tf.constant(list(images), dtype=tf.string)
        if self._session is not None:
            return run_twin(self._session, sig.FEATURES_OUTPUT, self.decode(batch).numpy())
        return self._features(**{sig.IMAGES_INPUT: batch})[sig.FEATURES_OUTPUT].numpy()


def embed_variables(embed: Any) -> list[Any]:
    """The variables a loaded ``embed`` function reads, and nothing else of its SavedModel.

    NOTE: a fine-tuned version tracks these, not the whole base SavedModel: the base object also
    carries its ``labels.txt`` asset (which would be saved beside the new labels as ``labels.txt_1``)
    and, for a base with its classification head, the head's weights (VGG16: 124 M unused parameters).
    """
    variables: dict[int, Any] = {}
    for function in embed.concrete_functions:
        for variable in function.variables:
            variables.setdefault(id(variable), variable)
    return list(variables.values())


def extract_features(
    base: FrozenBase,
    read: Callable[[int], bytes],
    count: int,
    on_progress: Callable[[int, float], None],
) -> np.ndarray:
    """Run the base once per image, in batches; ``on_progress(done, elapsed_s)`` after each batch."""
    started = time.monotonic()
    rows = []
    for start in range(0, count, EXTRACT_BATCH):
        batch = [read(i) for i in range(start, min(count, start + EXTRACT_BATCH))]
        rows.append(base.features(batch))
        on_progress(start + len(batch), time.monotonic() - started)
    return np.concatenate(rows).astype(np.float32)


def build_head(
    train_features: np.ndarray, num_classes: int, hp: Hyperparameters, normalize: bool = True
) -> Any:
    """``[Normalization] -> Dense(hidden, relu) -> Dropout -> Dense(n, softmax)`` on pooled features."""
    import keras

    keras.utils.set_random_seed(hp.seed)
    layers: list[Any] = [keras.Input((train_features.shape[1],), name="features")]
    if normalize:
        normalization = keras.layers.Normalization(name="standardize")
        normalization.adapt(train_features)
        layers.append(normalization)
    layers += [
        keras.layers.Dense(hp.hidden_units, activation="relu", name="hidden"),
        keras.layers.Dropout(hp.dropout, seed=hp.seed, name="dropout"),
        keras.layers.Dense(num_classes, activation="softmax", name="probabilities"),
    ]
    head = keras.Sequential(layers, name="head")
    head.compile(
        optimizer=keras.optimizers.Adam(hp.learning_rate),
        loss="categorical_crossentropy",
        metrics=["accuracy"],
        steps_per_execution=STEPS_PER_EXECUTION,
    )
    return head


@dataclass
class TrainingResult:
    history: list[EpochMetrics]
    best_epoch: int  # 1-based; its weights are the head's
    seconds: float


def cached_batches(features: np.ndarray, onehot: np.ndarray, hp: Hyperparameters) -> Any:
    """Training batches from cached features, reshuffled every epoch (seeded)."""
    import tensorflow as tf

    return (
        tf.data.Dataset.from_tensor_slices((features, onehot))
        .shuffle(len(features), seed=hp.seed, reshuffle_each_iteration=True)
        .batch(hp.batch_size)
        .prefetch(2)
    )


def augmented_batches(base: FrozenBase, images: list[bytes], onehot: np.ndarray, hp: Hyperparameters) -> Any:
    """Training batches that decode, randomly flip and rotate the images and run the base on every batch."""
    import keras
    import tensorflow as tf

    augment = keras.Sequential(
        [keras.layers.RandomFlip("horizontal", seed=hp.seed), keras.layers.RandomRotation(0.05, seed=hp.seed)]
    )
    return (
        tf.data.Dataset.from_tensor_slices((tf.constant(images, dtype=tf.string), onehot))
        .shuffle(len(images), seed=hp.seed, reshuffle_each_iteration=True)
        .batch(hp.batch_size)
        .map(lambda batch, y: (base.embed(augment(base.decode(batch), training=True)), y))
        .prefetch(1)
    )


def train_head(
    head: Any,
    batches: Any,
    val_features: np.ndarray,
    val_onehot: np.ndarray,
    hp: Hyperparameters,
    weights: dict[int, float] | None,
    on_epoch: Callable[[EpochMetrics, float], None],
    early_stopping: bool = True,
) -> TrainingResult:
    """Fit the head; early stopping on validation loss restores the best epoch's weights."""
    import keras

    class Report(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.history: list[EpochMetrics] = []
            self.best_epoch = 0
            self.best_loss = float("inf")

        def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
            self.started = time.monotonic()

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            logs = logs or {}
            metrics = EpochMetrics(
                epoch=epoch + 1,
                loss=float(logs.get("loss", np.nan)),
                accuracy=float(logs.get("accuracy", np.nan)),
                val_loss=float(logs.get("val_loss", np.nan)),
                val_accuracy=float(logs.get("val_accuracy", np.nan)),
            )
            if metrics.val_loss < self.best_loss:  # the same rule as EarlyStopping (min_delta 0)
                self.best_loss, self.best_epoch = metrics.val_loss, epoch + 1
            self.history.append(metrics)
            on_epoch(metrics, time.monotonic() - self.started)

    report = Report()
    callbacks: list[Any] = [report]
    if early_stopping:
        callbacks.append(
            keras.callbacks.EarlyStopping(
                monitor="val_loss", patience=hp.early_stopping_patience, restore_best_weights=True
            )
        )
    started = time.monotonic()
    head.fit(
        batches,
        validation_data=(val_features, val_onehot),
        validation_batch_size=EVAL_BATCH,
        epochs=hp.epochs,
        class_weight=weights,
        callbacks=callbacks,
        shuffle=False,  # the dataset reshuffles itself, seeded
        verbose=0,
    )
    best = report.best_epoch if early_stopping else len(report.history)
    return TrainingResult(report.history, best, time.monotonic() - started)


@dataclass
class Evaluation:
    loss: float
    accuracy: float
    per_class: list[ClassMetrics]
    confusion: np.ndarray  # [true, predicted] counts


def evaluate(head: Any, features: np.ndarray, class_ids: np.ndarray, labels: Sequence[str]) -> Evaluation:
    """Loss, accuracy, per-class precision/recall and the confusion matrix, in inference mode."""
    probabilities = head.predict(features, batch_size=EVAL_BATCH, verbose=0)
    predicted = probabilities.argmax(axis=1)
    n = len(labels)
    confusion = np.zeros((n, n), dtype=np.int64)
    np.add.at(confusion, (class_ids, predicted), 1)
    per_class = []
    for c, label in enumerate(labels):
        predicted_c, actual_c = confusion[:, c].sum(), confusion[c, :].sum()
        per_class.append(
            ClassMetrics(
                label=label,
                precision=float(confusion[c, c] / predicted_c) if predicted_c else 0.0,
                recall=float(confusion[c, c] / actual_c) if actual_c else 0.0,
                support=int(actual_c),
            )
        )
    true_probabilities = np.clip(probabilities[np.arange(len(class_ids)), class_ids], 1e-7, 1.0)
    return Evaluation(
        loss=float(-np.log(true_probabilities).mean()),
        accuracy=float((predicted == class_ids).mean()),
        per_class=per_class,
        confusion=confusion,
    )
