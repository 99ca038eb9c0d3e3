"""Disk full or permission denied while exporting: a clear message, exit code 4, nothing partial."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import REPO_ROOT

EXPORT = [sys.executable, "-m", "exporter", "vgg16", "--weights", "random", "--input-size", "32", "--no-top"]


def run(command, **kwargs) -> subprocess.CompletedProcess:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", **kwargs.pop("env", {})}
    return subprocess.run(
        command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300, env=env, **kwargs
    )


@pytest.fixture
def small_disk(tmp_path):
    """A 3 MiB tmpfs: too small for the ~60 MB of VGG16's variables."""
    mount_point = tmp_path / "small-disk"
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mount_point)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"mounting a size-limited tmpfs needs root: {mounted.stderr.decode().strip()}")
    yield mount_point
    subprocess.run(["umount", str(mount_point)], check=True)


def test_disk_full_leaves_nothing_behind(small_disk):
    result = run([*EXPORT, "--output", str(small_disk)])
    assert result.returncode == 4, result.stderr
    assert "No space left on device" in result.stderr and "nothing was published" in result.stderr
    assert "Traceback" not in result.stderr
    assert list((small_disk / "vgg16").iterdir()) == []


@pytest.mark.slow  # the disk-full test takes the same path (PublishFailed)
def test_permission_denied_leaves_nothing_behind(tmp_path):
    output = tmp_path / "models"
    locked = output / "vgg16"
    locked.mkdir(parents=True)
    # chattr +i: even root may not create entries here (EPERM, "Operation not permitted").
    made_immutable = subprocess.run(["chattr", "+i", str(locked)], capture_output=True)
    if made_immutable.returncode != 0:
        pytest.skip(
            "the immutable flag needs root and a filesystem that has it: "
            f"{made_immutable.stderr.decode().strip()}"
        )
    try:
        result = run([*EXPORT, "--output", str(output)])
    finally:
        subprocess.run(["chattr", "-i", str(locked)], check=True)
    assert result.returncode == 4, result.stderr
    assert "Operation not permitted" in result.stderr and "nothing was published" in result.stderr
    assert "Traceback" not in result.stderr
    assert list(locked.iterdir()) == []
