"""The exporter publishes through storage: numbered, complete and readable versions; a failed
verification publishes nothing (the atomic publish itself: tests/storage/test_publish.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from exporter.export import ExportSpec, export_model
from graphs import publish
from graphs.errors import VerificationFailed
from graphs.progress import Progress
from storage.errors import VersionExists
from storage.local import existing_versions, read_manifest

QUIET = Progress("test", stream=None)


def small_export(root: Path, **options):
    spec = ExportSpec(
        name="vgg16", weights="random", input_size=32, include_top=False, output_dir=root, **options
    )
    return export_model(spec, QUIET)


def test_exports_are_numbered_and_never_overwrite(tmp_path):
    """The numbering itself is storage's (tests/storage/test_publish.py); here, through the exporter."""
    assert small_export(tmp_path).version == 1
    with pytest.raises(VersionExists, match="never overwritten"):
        small_export(tmp_path, version=1)
    assert existing_versions(tmp_path / "vgg16") == [1]
    assert not [p for p in (tmp_path / "vgg16").iterdir() if p.name.startswith(".")], "staging left behind"


def test_published_version_is_complete_and_readable(tmp_path):
    result = small_export(tmp_path)
    names = {p.name for p in result.path.iterdir()}
    assert {"saved_model.pb", "variables", "manifest.json"} <= names
    assert oct(result.path.stat().st_mode & 0o777) != oct(0o700), (
        "a published version must be readable by others"
    )
    manifest = read_manifest(result.path)
    assert manifest["version"] == 1 and manifest["weights"] == {"kind": "random", "seed": 0}
    assert manifest["num_classes"] is None and manifest["feature_dim"] == 512
    assert set(manifest["signatures"]) == {"serving_default", "features", "features_pixels"}
    for key in (
        "source",
        "input_size",
        "preprocessing",
        "exporter_version",
        "created_at",
        "tensorflow_version",
    ):
        assert key in manifest


def broken_verification(path, manifest, labels_source=None):
    raise VerificationFailed("signature 'features' failed on a test image: simulated")


def test_failed_verification_publishes_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(publish, "verify_saved_model", broken_verification)
    with pytest.raises(VerificationFailed):
        small_export(tmp_path)
    assert list((tmp_path / "vgg16").iterdir()) == []


def test_failed_verification_exits_non_zero(tmp_path, monkeypatch, capsys):
    from exporter import cli

    monkeypatch.setattr(publish, "verify_saved_model", broken_verification)
    code = cli.main(
        ["vgg16", "--weights", "random", "--input-size", "32", "--no-top", "--output", str(tmp_path)]
    )
    assert code == 1
    assert "nothing was published" in capsys.readouterr().err
    assert list((tmp_path / "vgg16").iterdir()) == []
