"""``python -m client`` as a user runs it, against a real server: output, JSON, exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tests.answers import assert_same_features, assert_same_probabilities
from tests.client.conftest import CLASSIFIER, FEATURES
from tests.conftest import REPO_ROOT
from tests.servers import free_port


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if k != "IMAGESERVE_ADDRESS"}
    return subprocess.run(
        [sys.executable, "-m", "client", *args],
        cwd=REPO_ROOT,
        env={**environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture(scope="module")
def files(tmp_path_factory, photos):
    folder = tmp_path_factory.mktemp("cli-images")
    paths = {}
    for name in ("chelsea.jpg", "coffee.png"):
        paths[name] = folder / name
        paths[name].write_bytes(photos[name])
    paths["bad.jpg"] = folder / "bad.jpg"
    paths["bad.jpg"].write_text("just some text, not a picture\n")
    return paths


def test_classify_prints_a_table(server, client, files):
    result = run_cli(
        "classify",
        str(files["chelsea.jpg"]),
        str(files["coffee.png"]),
        "--model",
        CLASSIFIER,
        "--top-k",
        "3",
        "--address",
        server.address,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["image", "rank", "class", "score", "label"]
    assert len(lines) == 1 + 2 * 3 + 1
    assert lines[1].startswith(str(files["chelsea.jpg"])) and lines[4].startswith(str(files["coffee.png"]))
    expected = client.classify([files["chelsea.jpg"], files["coffee.png"]], CLASSIFIER, top_k=3)
    assert lines[1].rstrip().endswith(expected[0][0].label) and lines[4].rstrip().endswith(
        expected[1][0].label
    )
    assert lines[-1] == f"answered by {CLASSIFIER} v1"


def test_classify_json_matches_the_library(server, client, files):
    # Options may come before the command too, and the address from the environment.
    result = run_cli(
        "--timeout",
        "60",
        "classify",
        str(files["coffee.png"]),
        "--model",
        CLASSIFIER,
        "--json",
        env={"IMAGESERVE_ADDRESS": server.address},
    )
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    expected = client.classify(files["coffee.png"], CLASSIFIER)
    assert (answer["model"], answer["version"]) == (CLASSIFIER, 1)
    (entry,) = answer["results"]
    assert entry["image"] == str(files["coffee.png"])
    assert [(p["class_id"], p["label"]) for p in entry["predictions"]] == [
        (p.class_id, p.label) for p in expected[0]
    ]
    assert_same_probabilities([p["score"] for p in entry["predictions"]], [p.score for p in expected[0]])


def test_features_saves_npy(server, client, files, tmp_path):
    out = tmp_path / "features.npy"
    result = run_cli(
        "features",
        str(files["chelsea.jpg"]),
        str(files["coffee.png"]),
        "--model",
        FEATURES,
        "--out",
        str(out),
        "--address",
        server.address,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        f"features: 2 x 512 float32, answered by {FEATURES} v1",
        f"saved to {out}",
    ]
    saved = np.load(out)
    assert saved.dtype == np.float32 and saved.shape == (2, 512)
    expected = client.extract_features([files["chelsea.jpg"], files["coffee.png"]], FEATURES).features
    assert_same_features(saved, expected)


def test_models_lists_versions_and_states(server):
    result = run_cli("models", "--address", server.address)
    assert result.returncode == 0, result.stderr
    rows = [line.split() for line in result.stdout.splitlines()]
    assert rows[0] == [
        "model",
        "version",
        "state",
        "default",
        "labels",
        "input",
        "classes",
        "features",
        "error",
    ]
    assert rows[1:] == [
        [CLASSIFIER, "1", "AVAILABLE", "*", "96", "1000", "1280"],
        [FEATURES, "1", "AVAILABLE", "*", "32", "0", "512"],
    ]

    as_json = json.loads(run_cli("models", "--json", "--address", server.address).stdout)
    assert [(m["name"], m["default_version"], m["versions"][0]["state"]) for m in as_json] == [
        (CLASSIFIER, 1, "AVAILABLE"),
        (FEATURES, 1, "AVAILABLE"),
    ]


def test_server_error_exits_1_with_the_message(server, files):
    result = run_cli("classify", str(files["coffee.png"]), "--model", "vgg61", "--address", server.address)
    assert result.returncode == 1
    assert (
        result.stderr.strip()
        == f"error: NOT_FOUND: unknown model 'vgg61'; available models: {CLASSIFIER}, {FEATURES}"
    )
    assert result.stdout == ""


def test_bad_image_error_names_the_file(server, files):
    result = run_cli(
        "classify",
        str(files["coffee.png"]),
        str(files["bad.jpg"]),
        "--model",
        CLASSIFIER,
        "--address",
        server.address,
    )
    assert result.returncode == 1
    assert result.stderr.startswith(f"error: {files['bad.jpg']} (image 1): text, not an image")
    assert "Traceback" not in result.stderr


def test_missing_file_is_a_usage_error(server, tmp_path):
    result = run_cli("classify", str(tmp_path / "missing.jpg"), "--address", server.address)
    assert result.returncode == 2
    assert result.stderr.strip() == f"error: {tmp_path / 'missing.jpg'}: No such file or directory"


def test_unreachable_server_exits_3_with_a_hint():
    address = f"127.0.0.1:{free_port()}"
    result = run_cli("models", "--address", address, "--timeout", "2")
    assert result.returncode == 3
    assert result.stderr.startswith("error: UNAVAILABLE: failed to connect")
    assert f"hint: is the server running at {address}?" in result.stderr
    assert "Traceback" not in result.stderr


def test_status_and_info(server):
    status = run_cli("status", FEATURES, "--address", server.address)
    assert status.returncode == 0, status.stderr
    assert status.stdout.splitlines()[1].split() == [FEATURES, "1", "AVAILABLE", "*", "32", "0", "512"]
    assert "preprocessing caffe" in status.stdout
    info = run_cli("info", "--json", "--address", server.address)
    assert info.returncode == 0, info.stderr
    assert json.loads(info.stdout)["max_images_per_request"] == 64


def test_the_default_top_k_works_on_a_two_class_model(tmp_path, files):
    """A fine-tuned model may have 2 classes; the CLI's default --top-k 5 then lists both."""
    from tests.fake_backend import write_fake_version
    from tests.servers import InProcessServer, test_settings

    write_fake_version(tmp_path / "models", "cats_or_dogs", 1, num_classes=2, labels=["cat", "dog"])
    server = InProcessServer(test_settings(tmp_path / "models")).start()
    try:
        result = run_cli(
            "classify", str(files["coffee.png"]), "--model", "cats_or_dogs", "--address", server.address
        )
    finally:
        server.stop()
    assert result.returncode == 0, result.stderr
    assert {line.split()[-1] for line in result.stdout.splitlines()[1:3]} == {"cat", "dog"}
    assert "answered by cats_or_dogs v1" in result.stdout
