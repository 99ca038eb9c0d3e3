"""Publishing a version (storage.publish): numbered, never overwritten, and never seen half-written,
on a local root. No TensorFlow: a version here is a directory of plain files."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from storage.errors import PublishFailed, VersionExists
from storage.local import existing_versions
from storage.publish import staging
from tests.servers import wait_for

FILES = [
    "saved_model.pb",
    "variables/variables.index",
    "variables/variables.data-00000-of-00001",
    "manifest.json",
]


def publish(model_dir: Path, version: int | None = None, delay_s: float = 0.0) -> Path:
    """Publish a version of four files, written ``delay_s`` apart."""
    with staging(model_dir, version) as staged:
        for name in FILES:
            (staged.directory / name).parent.mkdir(parents=True, exist_ok=True)
            (staged.directory / name).write_text(f"{name} of version {staged.version}\n")
            time.sleep(delay_s)
        return staged.publish()


def test_versions_count_up_and_are_never_overwritten(tmp_path):
    model_dir = tmp_path / "vgg16"
    assert [publish(model_dir).name for _ in range(2)] == ["1", "2"]
    assert publish(model_dir, version=7).name == "7"
    assert publish(model_dir).name == "8"
    before = (model_dir / "7" / "manifest.json").read_text()
    with pytest.raises(VersionExists, match="never overwritten"):
        publish(model_dir, version=7)
    assert (model_dir / "7" / "manifest.json").read_text() == before
    assert existing_versions(model_dir) == [1, 2, 7, 8]
    assert not [p for p in model_dir.iterdir() if p.name.startswith(".")], "staging left behind"


def test_a_version_taken_while_staging_is_refused_not_replaced(tmp_path):
    """Two publishers chose the same number: the second rename fails, the first version stays."""
    model_dir = tmp_path / "m"
    with staging(model_dir, None) as first, staging(model_dir, None) as second:
        assert first.version == second.version == 1
        (first.directory / "owner").write_text("first")
        (second.directory / "owner").write_text("second")
        first.publish()
        with pytest.raises(VersionExists):
            second.publish()
    assert (model_dir / "1" / "owner").read_text() == "first"
    assert os.listdir(model_dir) == ["1"]


def test_a_published_version_is_readable_by_others(tmp_path):
    path = publish(tmp_path / "m")
    assert path.stat().st_mode & 0o777 != 0o700, "a published version must be readable by others"


def test_a_failure_while_staging_leaves_nothing(tmp_path):
    model_dir = tmp_path / "m"
    with pytest.raises(RuntimeError, match="writing failed"), staging(model_dir, None) as staged:
        (staged.directory / "half").write_text("x")
        raise RuntimeError("writing failed")
    assert list(model_dir.iterdir()) == []


def test_a_root_that_cannot_be_written_is_a_publish_failure_naming_the_reason(tmp_path):
    (tmp_path / "a-file").write_text("not a directory")
    with pytest.raises(PublishFailed, match="Not a directory"), staging(tmp_path / "a-file" / "m", None):
        pass


def test_a_reader_polling_the_root_never_sees_half_a_version(tmp_path):
    model_dir = tmp_path / "m"
    seen_incomplete: list[str] = []
    seen_complete: set[str] = set()
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            for version in existing_versions(model_dir):
                path = model_dir / str(version)
                if all((path / name).exists() for name in FILES):
                    seen_complete.add(path.name)
                else:
                    seen_incomplete.append(path.name)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        publish(model_dir, delay_s=0.05)
        publish(model_dir, delay_s=0.05)
        wait_for(lambda: seen_complete == {"1", "2"}, 10, what="the watcher to see both versions")
    finally:
        stop.set()
        watcher.join()
    assert seen_incomplete == []
    assert seen_complete == {"1", "2"}
