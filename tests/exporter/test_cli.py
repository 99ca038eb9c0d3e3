"""``python -m exporter`` as a user runs it: messages, exit codes, TensorFlow's own CLI on the result."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

# A closed local port as proxy: every download fails at once, with or without internet on the machine.
OFFLINE_ENV = {"HTTPS_PROXY": "http://127.0.0.1:9", "HTTP_PROXY": "http://127.0.0.1:9", "NO_PROXY": ""}


def run_exporter(
    *args: str, env: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "exporter", *args],
        cwd=REPO_ROOT,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_list_prints_the_catalog():
    result = run_exporter("--list")
    assert result.returncode == 0
    for name in ("vgg16", "mobilenet_v2", "mobilenet_v2_keras", "resnet50", "efficientnet_b0", "densenet121"):
        assert name in result.stdout
    assert "efficientnet_lite0  keras    224  lite" in result.stdout
    assert "default models: efficientnet_lite0, mobilenet_v2, vgg16" in result.stdout


def test_unknown_name_lists_known_ones_without_traceback(tmp_path):
    result = run_exporter("vgg61", "--output", str(tmp_path))
    assert result.returncode == 2
    assert (
        "unknown model 'vgg61'; known: densenet121, efficientnet_b0, efficientnet_lite0, efficientnet_lite1, "
        "efficientnet_lite2, mobilenet_v2" in result.stderr
    )
    assert "Traceback" not in result.stderr


def test_offline_imagenet_weights_say_what_to_do(tmp_path):
    result = run_exporter(
        "vgg16", "--output", str(tmp_path), env={**OFFLINE_ENV, "KERAS_HOME": str(tmp_path / "keras-home")}
    )
    assert result.returncode == 3, result.stderr
    err = result.stderr
    assert "fetching: https://storage.googleapis.com/tensorflow/keras-applications/vgg16/" in err
    assert "vgg16_weights_tf_dim_ordering_tf_kernels.h5" in err
    assert str(tmp_path / "keras-home" / "models" / "vgg16_weights_tf_dim_ordering_tf_kernels.h5") in err
    assert "--weights PATH" in err and "--weights random" in err
    assert "Traceback" not in err
    assert not (tmp_path / "vgg16").exists() or existing_is_empty(tmp_path / "vgg16")


def test_offline_hub_handle_says_what_to_do(tmp_path):
    result = run_exporter(
        "mobilenet_v2",
        "--output",
        str(tmp_path),
        env={**OFFLINE_ENV, "TFHUB_CACHE_DIR": str(tmp_path / "hub")},
    )
    assert result.returncode == 3, result.stderr
    err = result.stderr
    assert "fetching: https://tfhub.dev/google/imagenet/mobilenet_v2_100_224/classification/4" in err
    assert str(tmp_path / "hub") in err
    assert "mobilenet_v2_keras --weights random" in err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    "args, message",
    [
        (["mobilenet_v2", "--weights", "random"], "does not apply"),
        (["vgg16", "--weights", "/no/such/file.h5"], "no such file"),
        (["vgg16", "--weights", "random", "--input-size", "8"], "needs --input-size >= 32"),
        (["my_model", "--hub-handle", "/no/such/dir"], "no such local path"),
        (["vgg16", "--weights", "random", "--calibration", "/no/such/dir"], "not a directory"),
        (["vgg16", "--weights", "random", "--no-onnx", "--calibration", "."], "not with --no-onnx"),
        (["vgg16", "--weights", "random", "--calibration", "protos/imageserve"], "no images (.jpg"),
    ],
)
def test_user_errors_are_one_line_messages(args, message, tmp_path, capsys):
    from exporter import cli

    assert cli.main([*args, "--output", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert message in err
    assert err.startswith("error: ") or "\nerror: " in err


def test_export_shows_progress_and_saved_model_cli_lists_signatures(tmp_path):
    result = run_exporter("vgg16", "--weights", "random", "--input-size", "32", "--output", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(tmp_path / "vgg16" / "1")
    for step in (
        "building vgg16",
        "tracing serving signatures",
        "writing SavedModel",
        "verifying",
        "published",
    ):
        assert step in result.stderr
    assert " s" in result.stderr and "done in" in result.stderr

    saved_model_cli = Path(sys.executable).with_name("saved_model_cli")
    shown = subprocess.run(
        [str(saved_model_cli), "show", "--dir", str(tmp_path / "vgg16" / "1"), "--all"],
        capture_output=True,
        text=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
        timeout=300,
    )
    assert shown.returncode == 0, shown.stderr
    blocks = shown.stdout.split("signature_def[")
    described = {block.split("'")[1]: block for block in blocks[1:]}
    assert {"serving_default", "classify", "classify_pixels", "features", "features_pixels"} <= set(described)
    assert "inputs['images']" in described["classify"] and "DT_STRING" in described["classify"]
    assert "outputs['probabilities']" in described["classify"] and "(-1, 1000)" in described["classify"]
    assert "inputs['pixels']" in described["classify_pixels"] and "DT_UINT8" in described["classify_pixels"]
    assert "(-1, -1, -1, 3)" in described["features_pixels"]
    assert "outputs['features']" in described["features"] and "(-1, 512)" in described["features"]
    assert "outputs['probabilities']" in described["serving_default"]


def test_calibration_images_are_checked_and_kept_in_the_version(tmp_path, capsys):
    """``--calibration DIR``: every image is decoded as the server will (a bad one is named, nothing is
    published), then kept in the version with its manifest record (graphs/calibration.py)."""
    import json

    from exporter import cli
    from graphs import calibration
    from tests.images import encode, photo

    images = tmp_path / "photos"
    (images / "cats").mkdir(parents=True)
    good = encode(photo("chelsea"), "JPEG", quality=90)
    (images / "cats" / "chelsea.jpg").write_bytes(good)
    (images / "broken.jpg").write_bytes(b"not an image")
    args = ["vgg16", "--weights", "random", "--input-size", "32", "--output", str(tmp_path / "models")]
    assert cli.main([*args, "--calibration", str(images), "-q"]) == 2
    assert (
        f"--calibration: {images / 'broken.jpg'} is not an image TensorFlow can decode"
        in capsys.readouterr().err
    )
    assert not (tmp_path / "models" / "vgg16" / "1").exists()

    (images / "broken.jpg").unlink()
    assert cli.main([*args, "--calibration", str(images), "-q"]) == 0
    version = tmp_path / "models" / "vgg16" / "1"
    manifest = json.loads((version / "manifest.json").read_text())
    assert manifest["calibration"]["images"] == 1 and manifest["calibration"]["file"] == "calibration.zip"
    assert calibration.read(version, manifest) == [good]


def existing_is_empty(path: Path) -> bool:
    return not any(path.iterdir())


def test_user_errors_are_reported_before_tensorflow_loads(tmp_path):
    """Mistakes answer in a fraction of a second: TensorFlow (seconds to import) is not loaded for them."""
    probe = (
        "import sys; from exporter.cli import main; "
        f"codes = [main(['vgg61']), main(['vgg16', '--weights', {str(tmp_path / 'missing.h5')!r}]), "
        "main(['mobilenet_v2', '--weights', 'random'])]; "
        "print(codes, 'tensorflow' in sys.modules)"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, cwd=REPO_ROOT
    )
    assert result.stdout.split() == ["[2,", "2,", "2]", "False"], result.stderr
    assert "missing.h5: no such file" in result.stderr
