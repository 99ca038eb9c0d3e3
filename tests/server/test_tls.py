"""TLS and mutual TLS: the right certificates connect, plaintext and strangers do not."""

from __future__ import annotations

import subprocess
import sys

import pytest

from client import AsyncModelClient, ModelClient, Unavailable
from tests.conftest import CLASSIFIER, REPO_ROOT
from tests.servers import InProcessServer, test_settings


@pytest.fixture(scope="module")
def tls_server(model_root, pki):
    running = InProcessServer(
        test_settings(model_root, tls_cert=pki / "server.crt", tls_key=pki / "server.key")
    ).start()
    yield running
    running.stop()


@pytest.fixture(scope="module")
def mtls_server(model_root, pki):
    running = InProcessServer(
        test_settings(
            model_root, tls_cert=pki / "server.crt", tls_key=pki / "server.key", tls_client_ca=pki / "ca.crt"
        )
    ).start()
    yield running
    running.stop()


def localhost(server) -> str:
    return f"localhost:{server.server.port}"  # the certificate names localhost and 127.0.0.1


def test_tls_with_the_servers_ca(tls_server, pki, photos):
    with ModelClient(localhost(tls_server), root_certificates=pki / "ca.crt", timeout=60) as client:
        assert client.classify(photos["chelsea.png"], model=CLASSIFIER).version == 1


def test_tls_async_client(tls_server, pki, photos):
    import asyncio

    async def call():
        async with AsyncModelClient(
            localhost(tls_server), root_certificates=pki / "ca.crt", timeout=60
        ) as client:
            return await client.classify(photos["chelsea.png"], model=CLASSIFIER)

    assert asyncio.run(call()).version == 1


@pytest.mark.parametrize("how", ["plaintext", "untrusted CA"])
def test_tls_refuses_plaintext_and_untrusted_servers(tls_server, pki, photos, how):
    options = {} if how == "plaintext" else {"root_certificates": pki / "stranger-ca.crt"}
    with (
        ModelClient(localhost(tls_server), timeout=5, retries=0, **options) as client,
        pytest.raises(Unavailable),
    ):
        client.classify(photos["chelsea.png"], model=CLASSIFIER)


def test_mutual_tls_needs_a_client_certificate_from_the_ca(mtls_server, pki, photos):
    good = dict(client_certificate=pki / "client.crt", client_key=pki / "client.key")
    with ModelClient(localhost(mtls_server), root_certificates=pki / "ca.crt", timeout=60, **good) as client:
        assert client.classify(photos["chelsea.png"], model=CLASSIFIER).version == 1
    for refused in ({}, dict(client_certificate=pki / "stranger.crt", client_key=pki / "stranger.key")):
        with ModelClient(
            localhost(mtls_server), root_certificates=pki / "ca.crt", timeout=5, retries=0, **refused
        ) as client:
            with pytest.raises(Unavailable):
                client.classify(photos["chelsea.png"], model=CLASSIFIER)


def test_the_health_check_command_speaks_tls(mtls_server, pki):
    command = [
        sys.executable,
        "-m",
        "server.healthcheck",
        "--address",
        localhost(mtls_server),
        "--ca-cert",
        str(pki / "ca.crt"),
        "--client-cert",
        str(pki / "client.crt"),
        "--client-key",
        str(pki / "client.key"),
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60, cwd=REPO_ROOT)
    assert result.returncode == 0 and result.stdout.strip() == "SERVING", result.stderr
