"""model_format: the names every package shares, readable without TensorFlow, and true to the exports."""

from __future__ import annotations

import subprocess
import sys

from model_format import signatures
from model_format.layout import parse_version
from model_format.manifest import KEYS, MANIFEST_FORMAT
from storage.local import existing_versions, read_manifest


def test_importing_the_format_does_not_import_tensorflow():
    code = (
        "import sys, model_format.signatures, model_format.manifest, model_format.layout; "
        "print('tensorflow' in sys.modules)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert result.stdout.strip() == "False"


def test_the_default_signature_is_tensorflows():
    import tensorflow as tf

    assert signatures.DEFAULT == tf.saved_model.DEFAULT_SERVING_SIGNATURE_DEF_KEY


def test_version_names(tmp_path):
    assert [parse_version(name) for name in ("1", "12", "01", "0", "-1", "v1", "1.0")] == [
        1,
        12,
        None,
        None,
        None,
        None,
        None,
    ]
    for name in ("3", "1", "10", "01", ".staging-4-1-x", "README"):
        (tmp_path / name).mkdir()
    assert existing_versions(tmp_path) == [1, 3, 10]
    assert existing_versions(tmp_path / "absent") == []


def test_the_exporter_writes_only_the_documented_keys(classifier_export, features_export, hub_export):
    for export in (classifier_export, features_export, hub_export):  # ExportResults
        manifest = read_manifest(export.path)
        assert manifest["format"] == MANIFEST_FORMAT
        assert set(manifest) <= KEYS, set(manifest) - KEYS
        assert manifest["signatures"].keys() >= {signatures.FEATURES}
