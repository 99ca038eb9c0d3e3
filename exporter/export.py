"""Export one model: build the network, wrap it in serving signatures, publish a new version."""

from __future__ import annotations

import datetime as dt
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from exporter import __version__
from exporter.catalog import CATALOG, CatalogEntry, get_entry, hub_entry
from exporter.errors import UserError
from exporter.labels import default_labels_for, load_label_set, read_labels_file, write_labels_file
from exporter.progress import Progress
from exporter.publish import save_and_publish
from exporter.signatures import LABELS_ASSET, ServingModule, describe_signatures
from exporter.sources import IMAGENET, RANDOM, BuiltNetwork, build_hub, build_keras

MANIFEST_FORMAT = "imageserve.manifest/1"


@dataclass
class ExportSpec:
    """What to export; the fields mirror ``python -m exporter`` options."""

    name: str
    weights: str = IMAGENET
    output_dir: Path = Path("models")
    version: int | None = None
    input_size: int | None = None
    seed: int = 0
    include_top: bool = True
    hub_handle: str | None = None
    hub_feature_handle: str | None = None
    hub_outputs_probabilities: bool = False
    labels_file: str | None = None


@dataclass
class ExportResult:
    path: Path
    version: int
    manifest: dict[str, Any]
    network: BuiltNetwork = field(repr=False)
    loaded: Any = field(default=None, repr=False)  # the verified reload of the version, already warm


def resolve_entry(spec: ExportSpec) -> CatalogEntry:
    """The catalog entry for ``spec.name``, with Hub handles overridden from the spec if given."""
    if spec.hub_handle or spec.hub_feature_handle:
        known = CATALOG.get(spec.name)
        if known is not None and known.source != "hub":
            raise UserError(f"{spec.name} is a Keras model; --hub-handle only applies to TF Hub models")
        if known is not None:  # same entry (labels, preprocessing), local or mirrored handles
            return replace(
                known,
                hub_handle=spec.hub_handle or known.hub_handle,
                hub_feature_handle=spec.hub_feature_handle or known.hub_feature_handle,
            )
        return hub_entry(
            spec.name,
            spec.hub_handle,
            spec.hub_feature_handle,
            spec.input_size or 224,
            spec.hub_outputs_probabilities,
        )
    return get_entry(spec.name)


def _labels_for(entry: CatalogEntry, spec: ExportSpec, num_classes: int | None) -> list[str] | None:
    if num_classes is None:
        return None
    if spec.labels_file:
        labels = read_labels_file(spec.labels_file)
    elif entry.labels == "auto":
        labels = default_labels_for(num_classes)
    else:
        labels = load_label_set(entry.labels)
    if len(labels) != num_classes:
        raise UserError(f"{len(labels)} labels for a classifier with {num_classes} outputs")
    return labels


def validate_spec(entry: CatalogEntry, spec: ExportSpec) -> int:
    """Check option combinations before any heavy work; return the input size."""
    if not entry.supports_random_weights and spec.weights != IMAGENET:
        raise UserError(
            f"{entry.name} is a TF Hub model: its weights come from the handle, so --weights {spec.weights} "
            "does not apply. Offline, use the Keras stand-in: python -m exporter mobilenet_v2_keras --weights random"
        )
    size = spec.input_size or entry.default_input_size
    if size < entry.min_input_size:
        raise UserError(f"{entry.name} needs --input-size >= {entry.min_input_size}, got {size}")
    if spec.labels_file and not Path(spec.labels_file).is_file():
        raise UserError(f"--labels {spec.labels_file}: no such file")
    if spec.seed < 0:
        raise UserError(f"--seed must be >= 0, got {spec.seed}")
    return size


def export_model(spec: ExportSpec, progress: Progress | None = None) -> ExportResult:
    """Build, wrap, write, verify and publish one model version. Raises UserError for user mistakes."""
    progress = progress or Progress("exporter")
    entry = resolve_entry(spec)
    size = validate_spec(entry, spec)
    weights_label = f"{spec.weights} (seed {spec.seed})" if spec.weights == RANDOM else spec.weights
    with progress.step(f"building {entry.name} ({entry.source}, {size}x{size}, weights {weights_label})"):
        if entry.source == "keras":
            network = build_keras(entry, spec.weights, size, spec.seed, spec.include_top)
        else:
            network = build_hub(entry, size)
    for note in network.notes:
        progress.note(f"note: {note}")
    labels = _labels_for(entry, spec, network.num_classes)

    with tempfile.TemporaryDirectory(prefix="imageserve-labels-") as scratch:
        labels_path = None
        if labels is not None:
            labels_path = str(Path(scratch) / LABELS_ASSET)
            write_labels_file(labels_path, labels)
        with progress.step("tracing serving signatures"):
            module = ServingModule(size, network.classify, network.features, labels_path, network.trackables)
            signatures = module.signature_map
        source: dict[str, Any] = {"kind": entry.source, "catalog_entry": entry.name}
        if entry.source == "keras":
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
            "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        }
        published = save_and_publish(
            module, signatures, Path(spec.output_dir) / spec.name, spec.version, manifest, progress
        )
    return ExportResult(
        path=published.path,
        version=published.version,
        manifest=published.manifest,
        network=network,
        loaded=published.loaded,
    )


def _tf_version() -> str:
    import tensorflow as tf

    return tf.__version__
