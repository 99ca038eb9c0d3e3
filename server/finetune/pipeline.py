"""One fine-tuning job, step by step, inside the worker process (see :mod:`server.finetune.worker`).

Phases: VALIDATING (counts, every image read and decoded by the serving decoder), EXTRACTING_FEATURES
(the frozen base once per image), TRAINING (the head, one event per epoch), the accuracy gate, and
EXPORTING (the new version, published atomically with its metrics.json and plots). Progress goes to
a :class:`Reporter` as protocol events; a reason the user can act on ends the job as :class:`JobFailed`.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from graphs import calibration
from graphs.errors import VerificationFailed
from server.errors import InvalidImage, ServingError
from server.finetune.datasets import (
    DIRECTORY,
    Entry,
    check_counts,
    describe_undecodable,
    read_index,
    still_inside,
)
from server.finetune.hyperparameters import Hyperparameters
from server.finetune.jobs import EpochMetrics, FineTuneMetrics, JobPhase
from server.finetune.messages import Progress, Succeeded, WorkerMessage, encode
from server.images import inspect_image
from storage.errors import PublishFailed
from storage.local import content_key
from storage.roots import as_root, join

log = logging.getLogger("server.finetune.worker")

PROGRESS_INTERVAL_S = 0.5
VALIDATE_BATCH = 64


class JobFailed(Exception):
    """The job cannot go on, for a reason the user can act on; ``metrics`` if training got that far."""

    def __init__(self, message: str, metrics: FineTuneMetrics | None = None) -> None:
        super().__init__(message)
        self.metrics = metrics


@dataclass(frozen=True)
class JobSpec:
    """Everything a worker needs, sent by the server as the first line of stdin."""

    job_id: str
    base_model: str
    base_version: int
    base_path: str
    output_model: str
    model_root: str
    dataset_index: str
    dataset_kind: str
    hyperparameters: dict[str, Any]
    threads: int
    max_image_pixels: int
    data_root: str | None = None
    onnx_cache: str | None = None  # the server's ONNX twin cache (server/runtime.py), for the base's features
    #: What computes the base's features in serving (the loaded version's choice, else the settings').
    base_runtime: str = "auto"
    base_precision: str = "fp32"
    #: Without min_val_accuracy, the gate: validation accuracy above chance by at least this much.
    min_margin_over_chance: float = 0.05
    #: Publish the version's ONNX twin with it (the output model's runtime is not ``tensorflow``).
    publish_twin: bool = False


def check_above_chance(metrics: FineTuneMetrics, margin: float) -> None:
    """The default gate: a head no better than always answering the commonest validation class
    (two balanced classes: 0.5) is useless, and is not published. ``min_val_accuracy`` replaces it."""
    supports = {c.label: c.support for c in metrics.per_class}
    total = sum(supports.values())
    if not total:
        return
    majority = max(supports, key=supports.get)
    chance = supports[majority] / total
    if metrics.val_accuracy < chance + margin - 1e-9:
        raise JobFailed(
            f"validation accuracy {metrics.val_accuracy:.4f} is not above chance ({chance:.4f}: always "
            f"answering {majority!r}) by {margin:g} (finetune_min_margin_over_chance); nothing was "
            "published: the head learned nothing useful. Check the labels, add images or train longer; "
            "or set min_val_accuracy to choose the gate yourself",
            metrics,
        )


@dataclass
class Reporter:
    """Writes protocol messages; progress events of one phase at most every PROGRESS_INTERVAL_S."""

    stream: TextIO
    phase: JobPhase = JobPhase.UNSPECIFIED
    _last_progress: float = field(default=0.0)

    def send(self, message: WorkerMessage) -> None:
        self.stream.write(encode(message))
        self.stream.flush()

    def event(
        self,
        phase: JobPhase,
        message: str,
        progress: float = 0.0,
        eta_seconds: float = 0.0,
        epoch: EpochMetrics | None = None,
        throttle: bool = False,
    ) -> None:
        now = time.monotonic()
        if throttle and phase is self.phase and now - self._last_progress < PROGRESS_INTERVAL_S:
            return
        self.phase, self._last_progress = phase, now
        self.send(Progress(phase, message, progress, eta_seconds, epoch))


def _read(entry: Entry) -> bytes:
    return Path(entry.path).read_bytes()


def _held_out(base: Any, entries: list[Entry], class_ids: Any, val: Any) -> tuple[list[bytes], list[int]]:
    """Up to MAX_VALIDATION_IMAGES of the validation split (spread over it) and their class ids."""
    chosen = calibration.spread(sorted(int(i) for i in val), calibration.MAX_VALIDATION_IMAGES)
    return _at_input_size(base, [_read(entries[i]) for i in chosen]), [int(class_ids[i]) for i in chosen]


def _at_input_size(base: Any, images: list[bytes]) -> list[bytes]:
    """``images`` as the signature decodes them (at the input size), JPEG-encoded at quality 95: a few
    kB each in the version, not the uploads' own sizes (decoded again, they are at the input size
    already, so the signature's resize leaves them as they are)."""
    import io

    import numpy as np
    import tensorflow as tf
    from PIL import Image

    encoded = []
    for start in range(0, len(images), 32):
        pixels = base.decode(tf.constant(images[start : start + 32], dtype=tf.string)).numpy()
        for image in np.clip(np.rint(pixels), 0, 255).astype(np.uint8):
            buffer = io.BytesIO()
            Image.fromarray(image).save(buffer, format="JPEG", quality=95)
            encoded.append(buffer.getvalue())
    return encoded


def validate(spec: JobSpec, hp: Hyperparameters, report: Reporter) -> tuple[list[Entry], list[str], int]:
    """Check counts and that every image is readable and decodable; returns (entries, labels, input size)."""
    from server.finetune.trainer import Decoder

    entries, skipped = read_index(Path(spec.dataset_index))
    counts: dict[str, int] = {}
    for entry in entries:
        counts[entry.label] = counts.get(entry.label, 0) + 1
    labels = sorted(counts)
    report.event(JobPhase.VALIDATING, f"validating {len(entries)} images in {len(labels)} classes")
    try:
        check_counts(counts, hp.min_images_per_class)
    except ServingError as exc:
        raise JobFailed(str(exc)) from None
    base_manifest = _base_manifest(spec)
    decoder = Decoder(int(base_manifest["input_size"]))
    failures: list[tuple[str, str]] = []
    started = time.monotonic()
    for start in range(0, len(entries), VALIDATE_BATCH):
        batch, readable = entries[start : start + VALIDATE_BATCH], []
        for offset, entry in enumerate(batch):
            if (
                spec.dataset_kind == DIRECTORY
                and spec.data_root
                and not still_inside(entry.path, spec.data_root)
            ):
                failures.append((entry.name, "now a symbolic link leading outside the data root"))
                continue
            try:
                data = _read(entry)
                inspect_image(start + offset, data, spec.max_image_pixels)
            except OSError as exc:
                failures.append((entry.name, f"cannot be read ({exc.strerror})"))
                continue
            except InvalidImage as exc:
                failures.append((entry.name, exc.reason))
                continue
            readable.append((entry, data))
        bad = decoder.undecodable([data for _entry, data in readable])
        failures.extend((readable[i][0].name, reason) for i, reason in sorted(bad.items()))
        done = min(len(entries), start + VALIDATE_BATCH)
        elapsed = time.monotonic() - started
        report.event(
            JobPhase.VALIDATING,
            f"checked {done}/{len(entries)} images",
            done / len(entries),
            elapsed / done * (len(entries) - done),
            throttle=True,
        )
    if failures:
        raise JobFailed(describe_undecodable(failures))
    smallest, largest = min(counts.items(), key=lambda kv: kv[1]), max(counts.items(), key=lambda kv: kv[1])
    ignored = f"; ignored {skipped} files that are not images (by extension)" if skipped else ""
    report.event(
        JobPhase.VALIDATING,
        f"dataset OK: {len(entries)} images, {len(labels)} classes, {smallest[1]} ({smallest[0]!r}) to "
        f"{largest[1]} ({largest[0]!r}) per class, imbalance ratio {largest[1] / smallest[1]:.2f}{ignored}",
        1.0,
    )
    return entries, labels, int(base_manifest["input_size"])


def _base_manifest(spec: JobSpec) -> dict[str, Any]:
    from storage.local import read_manifest

    try:
        return read_manifest(Path(spec.base_path))
    except (OSError, ValueError):
        raise JobFailed(
            f"the base model {spec.base_model} v{spec.base_version} is no longer on disk "
            "(or has no manifest); "
            "start the job again with a served base version"
        ) from None


def run_job(spec: JobSpec, report: Reporter) -> Succeeded:
    """Validate, extract, train, gate, export. Returns the ``succeeded`` message; raises JobFailed."""
    import numpy as np

    from server.finetune import report as files
    from server.finetune import trainer
    from server.finetune.export import publish_finetuned

    hp = Hyperparameters.from_dict(spec.hyperparameters)
    entries, labels, input_size = validate(spec, hp, report)
    class_index = {label: i for i, label in enumerate(labels)}
    class_ids = np.array([class_index[e.label] for e in entries])
    train, val = trainer.stratified_split(class_ids, hp.validation_fraction, hp.seed)

    cache = (
        "once per image (features cached)"
        if not hp.augment
        else "once per image, for normalisation and validation"
    )
    report.event(
        JobPhase.EXTRACTING_FEATURES,
        f"running the frozen base {spec.base_model} v{spec.base_version} {cache}",
    )
    try:
        base = trainer.FrozenBase(
            spec.base_path, input_size, spec.onnx_cache, spec.threads, spec.base_runtime, spec.base_precision
        )
    except (OSError, ValueError) as exc:
        raise JobFailed(
            f"the base model {spec.base_model} v{spec.base_version} cannot be loaded: {exc}"
        ) from None
    report.event(
        JobPhase.EXTRACTING_FEATURES,
        f"the base's features on {base.runtime} at {base.precision}, as it serves them",
    )

    def extracted(done: int, elapsed: float) -> None:
        report.event(
            JobPhase.EXTRACTING_FEATURES,
            f"extracted features of {done}/{len(entries)} images",
            done / len(entries),
            elapsed / done * (len(entries) - done),
            throttle=done < len(entries),
        )

    extract_started = time.monotonic()
    features = trainer.extract_features(base, lambda i: _read(entries[i]), len(entries), extracted)
    extract_seconds = time.monotonic() - extract_started

    num_classes = len(labels)
    onehot = np.eye(num_classes, dtype=np.float32)[class_ids]
    early = f"early stopping after {hp.early_stopping_patience} epochs without val_loss improvement"
    report.event(
        JobPhase.TRAINING,
        f"training the head on {len(train)} images, validating on {len(val)} "
        f"(up to {hp.epochs} epochs, {early})",
    )
    if hp.augment:
        report.event(
            JobPhase.TRAINING,
            "augmentation is on: the feature cache is off, the base runs on every training batch "
            "of every epoch "
            "(much slower)",
        )
        batches = trainer.augmented_batches(base, [_read(entries[i]) for i in train], onehot[train], hp)
    else:
        batches = trainer.cached_batches(features[train], onehot[train], hp)
    head = trainer.build_head(features[train], num_classes, hp)
    epoch_seconds: list[float] = []

    def epoch_done(metrics: EpochMetrics, seconds: float) -> None:
        epoch_seconds.append(seconds)
        report.event(
            JobPhase.TRAINING,
            f"epoch {metrics.epoch}/{hp.epochs}: loss {metrics.loss:.4f}, accuracy {metrics.accuracy:.4f}, "
            f"val_loss {metrics.val_loss:.4f}, val_accuracy {metrics.val_accuracy:.4f}",
            metrics.epoch / hp.epochs,
            float(np.mean(epoch_seconds[-5:])) * (hp.epochs - metrics.epoch),
            epoch=metrics,
        )

    weights = trainer.class_weights(class_ids[train], num_classes, hp.class_weighting)
    result = trainer.train_head(head, batches, features[val], onehot[val], hp, weights, epoch_done)
    on_train = trainer.evaluate(head, features[train], class_ids[train], labels)
    on_val = trainer.evaluate(head, features[val], class_ids[val], labels)
    metrics = FineTuneMetrics(
        val_accuracy=on_val.accuracy,
        val_loss=on_val.loss,
        train_accuracy=on_train.accuracy,
        train_loss=on_train.loss,
        epochs_run=len(result.history),
        best_epoch=result.best_epoch,
        per_class=list(on_val.per_class),
        extract_seconds=round(extract_seconds, 3),
        train_seconds=round(result.seconds, 3),
    )
    report.event(
        JobPhase.TRAINING,
        f"trained {metrics.epochs_run} epochs in {result.seconds:.1f} s; best epoch {metrics.best_epoch}: "
        f"val_accuracy {metrics.val_accuracy:.4f}, val_loss {metrics.val_loss:.4f}",
        1.0,
    )
    if hp.min_val_accuracy is not None and metrics.val_accuracy < hp.min_val_accuracy:
        raise JobFailed(
            f"validation accuracy {metrics.val_accuracy:.4f} is below min_val_accuracy "
            f"{hp.min_val_accuracy:g}; nothing was published. Add images, train longer "
            "(epochs, early_stopping_patience) or lower the gate",
            metrics,
        )
    if hp.min_val_accuracy is None:
        check_above_chance(metrics, spec.min_margin_over_chance)

    report.event(
        JobPhase.EXPORTING, f"writing a new version of {spec.output_model} with its metrics and plots"
    )
    title = f"{spec.output_model}: fine-tuned {spec.base_model} v{spec.base_version} (job {spec.job_id})"
    context = {
        "base_model": spec.base_model,
        "base_version": spec.base_version,
        "output_model": spec.output_model,
        "hyperparameters": hp.to_dict(),
        "dataset": {"num_images": len(entries), "train_images": len(train), "validation_images": len(val)},
        "base_features": {"runtime": base.runtime, "precision": base.precision},
    }
    document = files.metrics_document(spec.job_id, labels, result.history, metrics, on_val.confusion, context)
    extra_files = {
        files.METRICS_FILE: document,
        files.CURVE_FILE: files.training_curve_png(result.history, metrics.best_epoch, title),
        files.CONFUSION_FILE: files.confusion_matrix_png(
            on_val.confusion, labels, f"{title}\nvalidation split"
        ),
    }
    source = {
        "base_model": spec.base_model,
        "base_version": spec.base_version,
        # The base's network, so that a server holding it serves this version as a head on it.
        "base_hash": content_key(Path(spec.base_path)),
        "job_id": spec.job_id,
    }
    try:
        _path, version = publish_finetuned(
            base,
            _base_manifest(spec),
            head,
            labels,
            join(as_root(spec.model_root), spec.output_model),  # a directory or an object store URL
            source,
            context,
            extra_files,
            twin=spec.publish_twin,
            check_features=features[val],
            calibration_images=_at_input_size(
                base, [_read(entries[i]) for i in calibration.spread(sorted(int(i) for i in train))]
            ),
            held_out=_held_out(base, entries, class_ids, val),
        )
    except PublishFailed as exc:  # disk full, permission denied: the reason, without the server's paths
        log.error("job %s: publishing failed: %s", spec.job_id, exc)
        reason = str(exc).rsplit(": ", 1)[-1]
        raise JobFailed(
            f"could not write the new version ({reason}); nothing was published. Free space in the "
            "model root or fix its permissions, then start the job again"
        ) from None
    except VerificationFailed as exc:  # its message names server paths: those stay in the log
        log.error("job %s: the new version failed verification: %s", spec.job_id, exc)
        raise JobFailed(
            "the new version did not pass verification (reload and one image through every signature); "
            "nothing was published. Details are in the server log"
        ) from None
    report.event(JobPhase.EXPORTING, f"published {spec.output_model} v{version}", 1.0)
    return Succeeded(
        output_version=version,
        metrics=metrics,
        artifacts=tuple(f"{spec.output_model}/{version}/{name}" for name in files.ARTIFACTS),
    )
