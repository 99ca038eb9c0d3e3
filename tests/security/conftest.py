"""Security fixtures: certificates made with openssl, token files, servers with TLS and auth."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.servers import copy_version

CLASSIFIER = "mobilenet_v2_keras"
READ_TOKEN = "read-only-token-5f2b9c7e"
TUNE_TOKEN = "fine-tuning-token-9a41d3c8"
TUNE_ONLY_TOKEN = "upload-only-token-77e0b1f4"


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def make_ca(directory: Path, name: str) -> None:
    openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        f"/CN={name}",
        "-keyout",
        f"{name}.key",
        "-out",
        f"{name}.crt",
        cwd=directory,
    )


def make_signed(directory: Path, name: str, ca: str, *, server: bool) -> None:
    openssl(
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        f"/CN={name}",
        "-keyout",
        f"{name}.key",
        "-out",
        f"{name}.csr",
        cwd=directory,
    )
    extensions = directory / f"{name}.ext"
    extensions.write_text(
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n"
        if server
        else "extendedKeyUsage=clientAuth\n"
    )
    openssl(
        "x509",
        "-req",
        "-in",
        f"{name}.csr",
        "-CA",
        f"{ca}.crt",
        "-CAkey",
        f"{ca}.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-out",
        f"{name}.crt",
        "-extfile",
        extensions.name,
        cwd=directory,
    )


@pytest.fixture(scope="session")
def pki(tmp_path_factory) -> Path:
    """ca (trusted), server (signed by ca), client (signed by ca), and a stranger CA with its client."""
    directory = tmp_path_factory.mktemp("pki")
    make_ca(directory, "ca")
    make_ca(directory, "stranger-ca")
    make_signed(directory, "server", "ca", server=True)
    make_signed(directory, "client", "ca", server=False)
    make_signed(directory, "stranger", "stranger-ca", server=False)
    return directory


@pytest.fixture(scope="module")
def model_root(tmp_path_factory, classifier_export):
    root = tmp_path_factory.mktemp("security-models")
    copy_version(classifier_export.path, root, CLASSIFIER, 1)
    return root


@pytest.fixture(scope="session")
def tokens_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("tokens") / "tokens"
    path.write_text(
        f"# token  scopes\n{READ_TOKEN} read\n{TUNE_TOKEN} read,finetune\n{TUNE_ONLY_TOKEN} finetune\n"
    )
    return path
