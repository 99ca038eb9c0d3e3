"""model_format: the names every package shares, readable without TensorFlow, and true to the exports."""

from __future__ import annotations

import subprocess
import sys

import pytest

from model_format import signatures
from model_format.labels import format_labels, parse_labels
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


def test_version_names():
    names = ("1", "12", "01", "0", "-1", "v1", "1.0", "²", "1²", "٣", "9" * 18, "9" * 19, "9" * 5000)
    assert [parse_version(name) for name in names] == [1, 12, *[None] * 8, int("9" * 18), None, None]


def test_versions_on_a_local_disk(tmp_path):
    for name in ("3", "1", "10", "01", ".staging-4-1-x", "README", "²"):
        (tmp_path / name).mkdir()
    assert existing_versions(tmp_path) == [1, 3, 10]
    assert existing_versions(tmp_path / "absent") == []


def test_labels_round_trip_one_per_line_and_refuse_line_breaks():
    assert format_labels(["cat", "dog ", "ünïcode"]) == "cat\ndog \nünïcode\n"
    assert parse_labels("cat\r\ndog \nünïcode\n") == ["cat", "dog ", "ünïcode"]
    with pytest.raises(ValueError, match="line break"):
        format_labels(["two\nlines"])


def test_the_exporter_writes_only_the_documented_keys(classifier_export, features_export):
    for export in (classifier_export, features_export):  # ExportResults (the hub pair: test_fidelity.py)
        manifest = read_manifest(export.path)
        assert manifest["format"] == MANIFEST_FORMAT
        assert set(manifest) <= KEYS, set(manifest) - KEYS
        assert manifest["signatures"].keys() >= {signatures.FEATURES}


@pytest.mark.slow  # the TF Hub pair is exported at 96x96 for this alone
def test_a_hub_export_writes_only_the_documented_keys(hub_export):
    manifest = read_manifest(hub_export.path)
    assert manifest["format"] == MANIFEST_FORMAT and set(manifest) <= KEYS, set(manifest) - KEYS
