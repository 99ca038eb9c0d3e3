"""Calibration images kept in a version (graphs/calibration.py): chosen, packed, read back, checked."""

from __future__ import annotations

import pytest

from graphs import calibration


def test_at_most_max_images_are_kept_spread_over_every_class(tmp_path):
    for label in ("a", "b"):
        (tmp_path / label).mkdir()
        for index in range(50):
            (tmp_path / label / f"{index:02d}.png").write_bytes(f"{label}{index}".encode())
    (tmp_path / "notes.txt").write_text("not an image")
    chosen = calibration.images_in(tmp_path)
    assert len(chosen) == calibration.MAX_IMAGES
    assert {path.split("/")[-2] for path, _ in chosen} == {"a", "b"}
    assert calibration.spread([1, 2, 3], 5) == [1, 2, 3]


def test_a_directory_without_images_is_a_clear_error(tmp_path):
    with pytest.raises(calibration.CalibrationError, match="no images"):
        calibration.images_in(tmp_path)


def test_packed_images_read_back_and_a_partial_copy_is_refused(tmp_path):
    images = [b"first", b"second"]
    content, record = calibration.pack(images)
    (tmp_path / record["file"]).write_bytes(content)
    manifest = {"calibration": record}
    assert calibration.read(tmp_path, manifest) == images and record["images"] == 2
    assert calibration.read(tmp_path, {}) == []
    (tmp_path / record["file"]).write_bytes(content[:-10])
    with pytest.raises(calibration.CalibrationError, match="does not match the manifest's checksum"):
        calibration.read(tmp_path, manifest)
