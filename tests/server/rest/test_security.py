"""The REST port has the gRPC port's tokens and TLS: same scopes, same certificates, client
certificates required when tls_client_ca is set."""

from __future__ import annotations

import base64
import ssl
import urllib.error
from http.client import HTTPException

import pytest

from tests.conftest import CLASSIFIER
from tests.pki import READ_TOKEN, TUNE_ONLY_TOKEN
from tests.rest_client import http
from tests.servers import InProcessServer, test_settings


@pytest.fixture(scope="module")
def server(model_root, tokens_file, pki):
    settings = test_settings(
        model_root,
        rest_port=0,
        auth_tokens_file=tokens_file,
        tls_cert=pki / "server.crt",
        tls_key=pki / "server.key",
        tls_client_ca=pki / "ca.crt",
    )
    running = InProcessServer(settings).start()
    yield running
    running.stop()


@pytest.fixture(scope="module")
def base(server) -> str:
    return f"https://localhost:{server.server.rest.port}"


@pytest.fixture(scope="module")
def trusted(pki) -> ssl.SSLContext:
    """Trusts the server's CA and presents a client certificate it signed."""
    context = ssl.create_default_context(cafile=str(pki / "ca.crt"))
    context.load_cert_chain(str(pki / "client.crt"), str(pki / "client.key"))
    return context


def predict(base, trusted, photos, token=None, scheme="Bearer"):
    body = {"instances": [{"b64": base64.b64encode(photos["chelsea.png"]).decode()}]}
    headers = {"Authorization": f"{scheme} {token}"} if token else {}
    return http("POST", f"{base}/v1/models/{CLASSIFIER}:predict", body, headers, context=trusted)


def test_tokens_and_scopes(base, trusted, photos):
    assert predict(base, trusted, photos, READ_TOKEN).status == 200
    missing = predict(base, trusted, photos)
    assert missing.status == 401 and "missing token" in missing.json()["error"]
    assert missing.headers["WWW-Authenticate"] == "Bearer"
    wrong = predict(base, trusted, photos, "guess-guess-guess-guess")
    assert wrong.status == 401 and "guess" not in wrong.json()["error"]
    assert predict(base, trusted, photos, TUNE_ONLY_TOKEN).status == 403
    # The scheme is case-insensitive (RFC 7235); another scheme is no token at all.
    assert predict(base, trusted, photos, READ_TOKEN, scheme="bearer").status == 200
    assert predict(base, trusted, photos, READ_TOKEN, scheme="BEARER").status == 200
    assert predict(base, trusted, photos, READ_TOKEN, scheme="Basic").status == 401
    # V2 metadata needs a token; the V2 health probes stay open, like grpc.health.
    assert http("GET", f"{base}/v2/models/{CLASSIFIER}", context=trusted).status == 401
    assert http("GET", f"{base}/v2/health/ready", context=trusted).status == 200


def test_tls_is_required_and_verifiable(base, server, photos):
    with pytest.raises(urllib.error.URLError, match="CERTIFICATE_VERIFY_FAILED"):
        predict(base, ssl.create_default_context(), photos, READ_TOKEN)
    with pytest.raises((OSError, HTTPException)):  # plaintext HTTP to a TLS port: closed or garbled
        http("GET", f"http://localhost:{server.server.rest.port}/v2/health/live", timeout=10)


@pytest.mark.parametrize(
    "client", [None, "stranger"], ids=["no-client-certificate", "untrusted-client-certificate"]
)
def test_mutual_tls_needs_a_client_certificate_from_the_ca(base, pki, photos, client):
    context = ssl.create_default_context(cafile=str(pki / "ca.crt"))
    if client:
        context.load_cert_chain(str(pki / f"{client}.crt"), str(pki / f"{client}.key"))
    with pytest.raises((OSError, HTTPException)):  # the handshake or the first read fails
        predict(base, context, photos, READ_TOKEN)
