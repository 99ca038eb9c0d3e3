"""The fine-tuned model: the trained head composed onto the base's ``embed``, published as a new version.

The version has the same signatures and baked-in preprocessing as every exported model
(:mod:`graphs.signatures`): ``classify`` with the dataset's labels, ``classify_pixels``,
``features``/``features_pixels`` (the base's features), ``serving_default`` = ``classify``. It is
written, verified and renamed into ``<model_root>/<output_model>/<version>/`` by
:func:`graphs.publish.save_and_publish`, with metrics.json and the plots inside before the rename.
"""

from __future__ import annotations

import datetime as dt
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from graphs import calibration, onnx_twin
from graphs import head as graph_head
from graphs.onnx_twin import PROBABILITY_TOLERANCE
from graphs.progress import Progress
from graphs.publish import save_and_publish
from graphs.signatures import LABELS_ASSET, ServingModule, describe_signatures
from model_format.labels import format_labels
from model_format.manifest import MANIFEST_FORMAT
from server import __version__ as exporter_version
from server.finetune.trainer import FrozenBase
from storage.errors import VersionExists

PUBLISH_ATTEMPTS = 3
#: Feature rows the head's NumPy form is checked on when the job passes none (random, seeded).
HEAD_CHECK_ROWS = 16


def head_files(
    head: Any, manifest: dict[str, Any], feature_dim: int, check_features: np.ndarray | None
) -> dict[str, bytes]:
    """``head.npz`` and the manifest's ``head`` record, if the head can be written as NumPy and
    answers as Keras does (within the promise, PROBABILITY_TOLERANCE); else nothing (served whole)."""
    try:
        layers, arrays = graph_head.extract(head)
    except graph_head.HeadUnsupported as exc:
        manifest["head"] = {"error": str(exc)}
        return {}
    features = check_features
    if features is None or not len(features):
        features = np.random.default_rng(0).standard_normal((HEAD_CHECK_ROWS, feature_dim)).astype(np.float32)
    features = np.asarray(features[:256], np.float32)
    expected = np.asarray(head(features, training=False))
    difference = float(np.abs(graph_head.apply(layers, arrays, features) - expected).max())
    if not difference <= PROBABILITY_TOLERANCE:
        manifest["head"] = {"error": f"the NumPy head differs from Keras by {difference:.2e}"}
        return {}
    data = graph_head.to_bytes(arrays)
    manifest["head"] = {
        "file": graph_head.HEAD_FILE,
        "sha256": graph_head.sha256_of(data),
        "layers": layers,
        "feature_dim": feature_dim,
        "check": {"rows": len(features), "max_probability_difference": difference},
    }
    return {graph_head.HEAD_FILE: data}


def publish_finetuned(
    base: FrozenBase,
    base_manifest: dict[str, Any],
    head: Any,
    labels: Sequence[str],
    model_dir: Path | str,
    source: dict[str, Any],
    training: dict[str, Any],
    extra_files: dict[str, bytes],
    twin: bool = False,
    check_features: np.ndarray | None = None,
    calibration_images: Sequence[bytes] = (),
    held_out: tuple[Sequence[bytes], Sequence[int]] = ((), ()),
) -> tuple[Path | str, int]:
    """Publish the next version of ``model_dir`` (a directory or an object store URL); returns its path
    (or URL) and version number. ``twin``: convert and check the version's ONNX twin and publish it
    with the version (servers on ``runtime = auto`` then serve it without converting it at load).
    ``calibration_images``: the job's own images, kept for int8; ``held_out``: validation images and
    their class ids, on which a reduced precision must keep fp32's accuracy (:mod:`graphs.calibration`)."""
    import tensorflow as tf

    embed = base.embed

    def classify(pixels: tf.Tensor) -> tf.Tensor:
        return head(embed(pixels), training=False)

    with tempfile.TemporaryDirectory(prefix="imageserve-labels-") as scratch:
        labels_path = str(Path(scratch) / LABELS_ASSET)
        Path(labels_path).write_text(format_labels(list(labels)), encoding="utf-8")
        module = ServingModule(
            base.input_size, classify, embed, labels_path, {"base": base.variables, "head": head}
        )
        signatures = module.signature_map
        feature_dim = int(base_manifest.get("feature_dim") or head.input_shape[-1])
        manifest = {
            "format": MANIFEST_FORMAT,
            "name": os.path.basename(os.fspath(model_dir)),
            "source": {"kind": "finetune", **source},
            "weights": {"kind": "finetune", "base_weights": base_manifest.get("weights")},
            "input_size": base.input_size,
            "preprocessing": base_manifest.get("preprocessing"),
            "num_classes": len(labels),
            "feature_dim": feature_dim,
            "labels_file": f"assets/{LABELS_ASSET}",
            "signatures": describe_signatures(sorted(signatures), len(labels), feature_dim),
            "training": training,
            "exporter_version": exporter_version,
            "tensorflow_version": tf.__version__,
            "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        }
        quiet = Progress("finetune", stream=None)
        extra_files = {**extra_files, **head_files(head, manifest, feature_dim, check_features)}
        if twin:
            extra_files = {**extra_files, **onnx_twin.attach_twin(module, base.input_size, manifest, quiet)}
        if calibration_images:
            content, manifest["calibration"] = calibration.pack(calibration_images)
            extra_files = {**extra_files, calibration.CALIBRATION_FILE: content}
        if held_out[0]:
            content, manifest["validation"] = calibration.pack(*held_out, file=calibration.VALIDATION_FILE)
            extra_files = {**extra_files, calibration.VALIDATION_FILE: content}
        for attempt in range(PUBLISH_ATTEMPTS):
            try:
                published = save_and_publish(
                    module, signatures, model_dir, None, manifest, quiet, extra_files=extra_files
                )
                return published.path, published.version
            except VersionExists:  # another publisher took the next number first; take the one after
                if attempt == PUBLISH_ATTEMPTS - 1:
                    raise
    raise AssertionError("unreachable")
