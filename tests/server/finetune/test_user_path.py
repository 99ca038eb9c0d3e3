"""The path a new user takes, with the defaults a user gets (docs/finetuning.md, "Try it on digits"):

    python -m exporter vgg16 --weights random --output models     # what scripts/serve exports offline
    python -m server --model-root models
    python examples/digits.py write digits/
    python -m client fine-tune digits/train --base vgg16 --output digits
    python examples/digits.py score digits/test --model digits

The default ``vgg16`` is 224x224 **with** its classification head; fine-tuning on it once published
a version the server refused (the base's 1,000 labels beside the job's 10). Slow: VGG16 at 224 on
1,797 images is most of the time (about 4 images/s on 2 cores).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from model_format.labels import parse_labels
from tests.conftest import REPO_ROOT
from tests.servers import InProcessServer, test_settings

# NOTE: the fine-tuning fixture allows its job 1500 s (VGG16 at 224 extracts ~1,400 images on 2 cores:
# ~9 min on a quiet machine, more on a shared one); pytest's default 600 s per test would cut it first.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]


def run(*args: str, timeout: float) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if k != "IMAGESERVE_ADDRESS"}
    result = subprocess.run(
        [sys.executable, *args], cwd=REPO_ROOT, env=environ, capture_output=True, text=True, timeout=timeout
    )
    assert result.returncode == 0, f"{args}: exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("user-models")
    run("-m", "exporter", "vgg16", "--weights", "random", "--output", str(root), timeout=600)
    return root


@pytest.fixture(scope="module")
def server(models, tmp_path_factory):
    # The user's runtime, auto (test servers otherwise run TensorFlow): the twins are part of the path.
    settings = test_settings(models, state_dir=tmp_path_factory.mktemp("user-state"), runtime="auto")
    running = InProcessServer(settings).start()
    yield running
    running.stop()


@pytest.fixture(scope="module")
def digits_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("user-digits") / "digits"
    written = run("examples/digits.py", "write", str(directory), timeout=120)
    assert "1497 images in" in written.stdout and "300 images in" in written.stdout
    return directory


@pytest.fixture(scope="module")
def fine_tuned(server, digits_dir):
    result = run(
        "-m", "client", "fine-tune", str(digits_dir / "train"), "--base", "vgg16", "--output", "digits",
        "--address", server.address,
        timeout=1500,
    )  # fmt: skip
    return result


def test_the_default_vgg16_with_its_head_is_exported_at_224(models):
    manifest = json.loads((models / "vgg16" / "1" / "manifest.json").read_text())
    assert (manifest["input_size"], manifest["num_classes"], manifest["feature_dim"]) == (224, 1000, 512)


def test_fine_tuning_it_publishes_a_served_version_of_the_digits(fine_tuned, models):
    stderr = fine_tuned.stderr
    assert re.search(r"SUCCEEDED: digits v1 now served; validation accuracy 0\.9\d+", stderr), stderr
    version = models / "digits" / "1"
    assert sorted(p.name for p in (version / "assets").iterdir()) == ["labels.txt"]
    assert parse_labels((version / "assets" / "labels.txt").read_text(encoding="utf-8")) == [
        str(d) for d in range(10)
    ]
    manifest = json.loads((version / "manifest.json").read_text())
    assert (manifest["num_classes"], manifest["labels_file"], manifest["input_size"]) == (
        10,
        "assets/labels.txt",
        224,
    )
    # Published with its checked ONNX twin: every replica serves it at once, without converting it.
    assert (version / "network.onnx").is_file() and manifest["onnx"]["outputs"] == [
        "features",
        "probabilities",
    ]


def test_the_new_version_classifies_held_out_digits(fine_tuned, server, digits_dir):
    scored = run(
        "examples/digits.py", "score", str(digits_dir / "test"), "--address", server.address, timeout=900
    )
    found = re.fullmatch(r"digits v1: held-out accuracy (\d\.\d{4}) \((\d+)/300\)\n", scored.stdout)
    assert found, scored.stdout
    assert float(found.group(1)) >= 0.95, scored.stdout
