"""``pip install imageserve`` is the client alone: in a fresh virtual environment, pip resolves only
the client's dependencies from the package index (no TensorFlow), and both the CLI and the SDK
classify through a running server.

Slow (~1 min: a venv and a real pip install of grpcio, grpcio-status, protobuf, numpy, Pillow and
tqdm); it needs the package index, like ``scripts/test``'s own set-up.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tests.client.conftest import CLASSIFIER
from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.slow

#: Distributions of the server and exporter, which the client install must not pull in.
SERVER_ONLY = {
    "tensorflow",
    "tensorflow-hub",
    "tensorflow-serving-api",
    "keras",
    "matplotlib",
    "grpcio-tools",
    "grpcio-health-checking",
    "grpcio-reflection",
    "prometheus-client",
    "onnxruntime",
    "onnx",
    "tf2onnx",
}

SDK_SCRIPT = """
import json, sys
from client import ModelClient

with ModelClient(sys.argv[1], timeout=60) as client:
    result = client.classify(sys.argv[2], model=sys.argv[3], top_k=3)
import client
print(json.dumps({
    "version": result.version,
    "labels": [p.label for p in result[0]],
    "client_file": client.__file__,
    "imported": sorted(
        m for m in sys.modules if m.split(".")[0] in ("tensorflow", "server", "exporter", "storage", "graphs")
    ),
}))
"""


def run(args: list, cwd: Path, timeout: float = 120) -> str:
    # Without PYTHONPATH (the suite runs with the checkout on it) and outside the checkout, so that
    # only what pip installed can be imported.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run(
        [str(a) for a in args], check=False, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert done.returncode == 0, (
        f"{' '.join(map(str, args))} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    )
    return done.stdout


def project_packages() -> list[str]:
    """The top-level packages pyproject.toml ships (``[tool.setuptools.packages.find] include``)."""
    found = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"][
        "find"
    ]
    return [pattern.rstrip("*") for pattern in found["include"]]


@pytest.fixture(scope="module")
def client_venv(tmp_path_factory) -> Path:
    """A fresh venv with ``pip install <this project>`` and no extra."""
    root = tmp_path_factory.mktemp("client-install")
    # A copy of the project: pip builds in the source tree, and setuptools would leave build/ and
    # imageserve.egg-info in the checkout.
    source = root / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO_ROOT / name, source / name)
    for package in project_packages():
        shutil.copytree(REPO_ROOT / package, source / package, ignore=shutil.ignore_patterns("__pycache__"))
    venv = root / "venv"
    run([sys.executable, "-m", "venv", venv], cwd=root)
    run(
        [venv / "bin" / "python", "-m", "pip", "install", "--quiet", "--disable-pip-version-check", source],
        cwd=root,
        timeout=600,
    )
    return venv


def test_the_client_install_has_no_tensorflow(client_venv):
    listed = json.loads(
        run([client_venv / "bin" / "python", "-m", "pip", "list", "--format", "json"], cwd=client_venv)
    )
    installed = {item["name"].lower().replace("_", "-") for item in listed}
    assert {"imageserve", "grpcio", "protobuf", "numpy", "pillow", "tqdm"} <= installed
    assert not installed & SERVER_ONLY, f"the client install pulled in {sorted(installed & SERVER_ONLY)}"


def test_the_installed_cli_classifies(client_venv, server, client, photos):
    image = client_venv.parent / "chelsea.png"
    image.write_bytes(photos["chelsea.png"])
    expected = client.classify(photos["chelsea.png"], model=CLASSIFIER, top_k=3)
    output = run(
        [
            client_venv / "bin" / "python",
            "-m",
            "client",
            "--address",
            server.address,
            "--timeout",
            "60",
            "classify",
            image,
            "--model",
            CLASSIFIER,
            "--top-k",
            "3",
            "--json",
        ],
        cwd=client_venv.parent,
    )
    answer = json.loads(output)
    assert (answer["model"], answer["version"]) == (CLASSIFIER, expected.version)
    assert [p["label"] for p in answer["results"][0]["predictions"]] == [p.label for p in expected[0]]


def test_the_installed_sdk_classifies_without_importing_the_server(client_venv, server, client, photos):
    image = client_venv.parent / "coffee.png"
    image.write_bytes(photos["coffee.png"])
    expected = client.classify(photos["coffee.png"], model=CLASSIFIER, top_k=3)
    answer = json.loads(
        run(
            [client_venv / "bin" / "python", "-c", SDK_SCRIPT, server.address, image, CLASSIFIER],
            cwd=client_venv.parent,
        )
    )
    assert Path(answer["client_file"]).is_relative_to(client_venv), (
        "the SDK should come from the installed package"
    )
    assert answer["imported"] == [], (
        "importing and using the client should import no TensorFlow, server or exporter"
    )
    assert (answer["version"], answer["labels"]) == (expected.version, [p.label for p in expected[0]])
