"""Export one model: build the network, wrap it in serving signatures, publish a new version."""

from __future__ import annotations

import datetime as dt
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from exporter import __version__
from exporter.catalog import CatalogEntry
from exporter.errors import UserError
from exporter.labels import default_labels_for, load_label_set
from exporter.sources import BuiltNetwork, build_hub, build_keras
from exporter.spec import RANDOM, ExportSpec, resolve_entry, validate_spec
from graphs import calibration, onnx_twin
from graphs.progress import Progress
from graphs.publish import save_and_publish
from graphs.signatures import LABELS_ASSET, ServingModule, decode_images, describe_signatures
from model_format.labels import format_labels, parse_labels
from model_format.manifest import MANIFEST_FORMAT
from storage.roots import join

__all__ = ["ExportResult", "ExportSpec", "export_model"]


@dataclass
class ExportResult:
    path: Path
    version: int
    manifest: dict[str, Any]
    network: BuiltNetwork = field(repr=False)
    loaded: Any = field(default=None, repr=False)  # the verified reload of the version, already warm


def _labels_for(entry: CatalogEntry, spec: ExportSpec, num_classes: int | None) -> list[str] | None:
    if num_classes is None:
        return None
    if spec.labels_file:
        labels = parse_labels(Path(spec.labels_file).read_text(encoding="utf-8"))
    elif entry.labels == "auto":
        labels = default_labels_for(num_classes)
    else:
        labels = load_label_set(entry.labels)
    if len(labels) != num_classes:
        raise UserError(f"{len(labels)} labels for a classifier with {num_classes} outputs")
    return labels


def export_model(
    spec: ExportSpec, progress: Progress | None = None, adjust: Callable[[BuiltNetwork], None] | None = None
) -> ExportResult:
    """Build, wrap, write, verify and publish one model version. Raises UserError for user mistakes.

    ``adjust`` is called on the built network before it is wrapped (the runtime tests give random
    weights varied BatchNorm statistics with it).
    """
    progress = progress or Progress("exporter")
    entry = resolve_entry(spec)
    size = validate_spec(entry, spec)
    weights_label = f"{spec.weights} (seed {spec.seed})" if spec.weights == RANDOM else spec.weights
    with progress.step(f"building {entry.name} ({entry.source}, {size}x{size}, weights {weights_label})"):
        if entry.source == "keras":
            network = build_keras(entry, spec.weights, size, spec.seed, spec.include_top)
        else:
            network = build_hub(entry, size)
    if adjust is not None:
        adjust(network)
    for note in network.notes:
        progress.note(f"note: {note}")
    labels = _labels_for(entry, spec, network.num_classes)

    with tempfile.TemporaryDirectory(prefix="imageserve-labels-") as scratch:
        labels_path = None
        if labels is not None:
            labels_path = str(Path(scratch) / LABELS_ASSET)
            Path(labels_path).write_text(format_labels(labels), encoding="utf-8")
        with progress.step("tracing serving signatures"):
            module = ServingModule(size, network.classify, network.features, labels_path, network.trackables)
            signatures = module.signature_map
        source: dict[str, Any] = {"kind": entry.source, "catalog_entry": entry.name}
        if entry.source == "keras":
            if entry.keras_builder:
                source["keras_builder"] = entry.keras_builder
            else:
                source["keras_application"] = entry.keras_application
        manifest = {
            "format": MANIFEST_FORMAT,
            "name": spec.name,
            "source": source,
            "weights": network.weights,
            "input_size": size,
            "preprocessing": entry.preprocessing,
            "num_classes": network.num_classes,
            "feature_dim": network.feature_dim,
            "labels_file": f"assets/{LABELS_ASSET}" if labels is not None else None,
            "signatures": describe_signatures(sorted(signatures), network.num_classes, network.feature_dim),
            "exporter_version": __version__,
            "tensorflow_version": _tf_version(),
            "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        }
        extra_files = {}
        if spec.onnx:
            extra_files = onnx_twin.attach_twin(module, size, manifest, progress)
        if spec.calibration is not None:
            extra_files[calibration.CALIBRATION_FILE] = _calibration_file(spec.calibration, size, manifest)
        published = save_and_publish(
            module,
            signatures,
            join(spec.output_dir, spec.name),
            spec.version,
            manifest,
            progress,
            extra_files,
        )
    return ExportResult(
        path=published.path,
        version=published.version,
        manifest=published.manifest,
        network=network,
        loaded=published.loaded,
    )


def _calibration_file(directory: str, size: int, manifest: dict[str, Any]) -> bytes:
    """The calibration file of ``--calibration DIR``, every image decoded first by the signature's
    own decode (an image the server could not decode is reported now); its record goes into the
    manifest."""
    import tensorflow as tf

    try:
        files = calibration.images_in(directory)
    except calibration.CalibrationError as exc:
        raise UserError(str(exc)) from None
    for path, image in files:
        try:
            decode_images(tf.constant([image]), size)
        except tf.errors.OpError:
            raise UserError(f"--calibration: {path} is not an image TensorFlow can decode") from None
    content, record = calibration.pack([image for _path, image in files])
    manifest["calibration"] = record
    return content


def _tf_version() -> str:
    import tensorflow as tf

    return tf.__version__
