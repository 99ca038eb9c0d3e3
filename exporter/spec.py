"""What to export, and its checks: plain Python, no TensorFlow, so that mistakes are reported at once."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from exporter.catalog import CATALOG, CatalogEntry, get_entry, hub_entry
from exporter.errors import UserError
from graphs import calibration

RANDOM = "random"
IMAGENET = "imagenet"


@dataclass
class ExportSpec:
    """What to export; the fields mirror ``python -m exporter`` options."""

    name: str
    weights: str = IMAGENET
    output_dir: Path | str = Path("models")  # or an object store URL (storage/object_store.py)
    version: int | None = None
    input_size: int | None = None
    seed: int = 0
    include_top: bool = True
    hub_handle: str | None = None
    hub_feature_handle: str | None = None
    hub_outputs_probabilities: bool = False
    labels_file: str | None = None
    onnx: bool = True  # write the network's checked ONNX twin into the version (graphs/onnx_twin.py)
    calibration: str | None = None  # a directory of images for int8 (graphs/calibration.py)


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


def validate_spec(entry: CatalogEntry, spec: ExportSpec) -> int:
    """Check option combinations before any heavy work; return the input size."""
    if not entry.supports_random_weights and spec.weights != IMAGENET:
        raise UserError(
            f"{entry.name} is a TF Hub model: its weights come from the handle, so --weights {spec.weights} "
            "does not apply. Offline, use the Keras stand-in: python -m exporter mobilenet_v2_keras "
            "--weights random"
        )
    size = spec.input_size or entry.default_input_size
    if size < entry.min_input_size:
        raise UserError(f"{entry.name} needs --input-size >= {entry.min_input_size}, got {size}")
    if spec.weights not in (IMAGENET, RANDOM) and not Path(spec.weights).is_file():
        raise UserError(
            f"--weights {spec.weights}: no such file (expected 'imagenet', 'random' or a weights file)"
        )
    if spec.labels_file and not Path(spec.labels_file).is_file():
        raise UserError(f"--labels {spec.labels_file}: no such file")
    if spec.seed < 0:
        raise UserError(f"--seed must be >= 0, got {spec.seed}")
    if spec.calibration is not None:
        if not spec.onnx:
            raise UserError("--calibration is for the ONNX twin's int8 precision: not with --no-onnx")
        try:
            calibration.image_paths(spec.calibration)  # listed now: decoded once TensorFlow is loaded
        except calibration.CalibrationError as exc:
            raise UserError(str(exc)) from None
    return size
