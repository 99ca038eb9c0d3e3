"""Versions are numbered, immutable and appear atomically; a failed verification publishes nothing."""

from __future__ import annotations

import threading
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


def test_versions_count_up_and_are_never_overwritten(tmp_path):
    assert small_export(tmp_path).version == 1
    assert small_export(tmp_path).version == 2
    assert small_export(tmp_path, version=7).version == 7
    assert small_export(tmp_path).version == 8
    before = sorted(p.name for p in (tmp_path / "vgg16" / "7").iterdir())
    with pytest.raises(VersionExists, match="never overwritten"):
        small_export(tmp_path, version=7)
    assert sorted(p.name for p in (tmp_path / "vgg16" / "7").iterdir()) == before
    assert existing_versions(tmp_path / "vgg16") == [1, 2, 7, 8]
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


def test_reader_polling_the_root_never_sees_half_a_version(tmp_path):
    seen_incomplete: list[str] = []
    seen_complete: set[str] = set()
    stop = threading.Event()

    def watch() -> None:
        model_dir = tmp_path / "vgg16"
        while not stop.is_set():
            for version in existing_versions(model_dir):
                path = model_dir / str(version)
                required = [
                    path / "saved_model.pb",
                    path / "variables" / "variables.index",
                    path / "manifest.json",
                ]
                if all(p.exists() for p in required):
                    seen_complete.add(path.name)
                else:
                    seen_incomplete.append(path.name)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        small_export(tmp_path)
        small_export(tmp_path)
    finally:
        stop.set()
        watcher.join()
    assert seen_incomplete == []
    assert seen_complete == {"1", "2"}


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
