"""The Node.js example (examples/node) gets the same answers as the Python client."""

from __future__ import annotations

import json
import shutil
import subprocess

import numpy as np

from client import ModelClient
from tests.answers import assert_same_features, assert_same_probabilities
from tests.conftest import CLASSIFIER, FEATURES, REPO_ROOT

EXAMPLE = REPO_ROOT / "examples" / "node"


def run_example(*args: str) -> subprocess.CompletedProcess:
    node = shutil.which("node")
    assert node, "Node.js is needed for the example (scripts/test installs its packages with npm)"
    assert (EXAMPLE / "node_modules" / "@grpc" / "grpc-js").exists(), "run `npm ci --prefix examples/node`"
    return subprocess.run(
        [node, str(EXAMPLE / "classify.js"), *args], capture_output=True, text=True, timeout=120
    )


def test_node_example_matches_the_python_client(server, tmp_path, photos):
    paths = []
    for name in ("chelsea.jpg", "coffee.png"):
        path = tmp_path / name
        path.write_bytes(photos[name])
        paths.append(path)
    result = run_example(
        "--address",
        server.address,
        "--model",
        CLASSIFIER,
        "--features-model",
        FEATURES,
        "--top-k",
        "3",
        *map(str, paths),
    )
    assert result.returncode == 0, result.stderr
    output = json.loads(result.stdout)

    with ModelClient(server.address) as client:
        classified = client.classify(paths, model=CLASSIFIER, top_k=3)
        features = client.extract_features(paths, model=FEATURES)
    assert output["classify"]["model"] == CLASSIFIER and output["classify"]["version"] == classified.version
    for node_predictions, python_predictions in zip(output["classify"]["results"], classified.predictions):
        assert [p["class_id"] for p in node_predictions] == [p.class_id for p in python_predictions]
        assert [p["label"] for p in node_predictions] == [p.label for p in python_predictions]
        assert_same_probabilities(
            [p["score"] for p in node_predictions], [p.score for p in python_predictions]
        )
    assert output["features"]["dimension"] == features.features.shape[1] == 512
    assert_same_features(np.array(output["features"]["features"], np.float32), features.features)


def test_node_example_reports_the_servers_error(server, tmp_path, photos):
    path = tmp_path / "cat.png"
    path.write_bytes(photos["chelsea.png"])
    result = run_example("--address", server.address, "--model", "no-such-model", str(path))
    assert result.returncode == 1
    assert result.stderr.startswith("NOT_FOUND: unknown model 'no-such-model'; available models:")
