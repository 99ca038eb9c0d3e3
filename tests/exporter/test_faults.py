"""Disk full or permission denied while exporting: a clear message, exit code 4, nothing partial."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

EXPORT = [sys.executable, "-m", "exporter", "vgg16", "--weights", "random", "--input-size", "32", "--no-top"]


def run(command, **kwargs) -> subprocess.CompletedProcess:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", **kwargs.pop("env", {})}
    return subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300, env=env, **kwargs)


@pytest.fixture
def small_disk(tmp_path):
    """A 3 MiB tmpfs: too small for the ~60 MB of VGG16's variables."""
    mount_point = tmp_path / "small-disk"
    mount_point.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mount_point)], capture_output=True)
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


def test_permission_denied_leaves_nothing_behind(tmp_path):
    if os.geteuid() != 0 or not shutil.which("setpriv"):
        pytest.skip("switching to an unprivileged user needs root and setpriv")
    output = tmp_path / "models"
    (output / "vgg16").mkdir(parents=True)  # owned by root, 0755: not writable by nobody
    home = tmp_path / "home"
    home.mkdir(mode=0o777)
    os.chmod(tmp_path, 0o755)
    result = run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *EXPORT, "--output", str(output)],
        env={"HOME": str(home), "KERAS_HOME": str(home / ".keras")},
    )
    assert result.returncode == 4, result.stderr
    assert "Permission denied" in result.stderr and "nothing was published" in result.stderr
    assert "Traceback" not in result.stderr
    assert list((output / "vgg16").iterdir()) == []
