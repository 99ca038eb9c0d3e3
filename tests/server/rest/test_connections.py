"""The REST port's connections: every address on the default host, and bounded on purpose (how many,
how long a request's headers and body may take, no compressed bodies)."""

from __future__ import annotations

import gzip
import json
import socket
import time
import urllib.request

import pytest

from server.settings import ServerSettings
from tests.conftest import CLASSIFIER
from tests.rest_client import http
from tests.servers import InProcessServer, test_settings, wait_for

LIMITS = dict(http_max_connections=4, http_header_timeout_s=0.5, http_body_timeout_s=0.5, rest_port=0)


@pytest.fixture(scope="module")
def server(model_root):
    running = InProcessServer(test_settings(model_root, **LIMITS)).start()
    yield running
    running.stop()


def test_the_default_host_answers_ipv4_and_ipv6_on_every_door(model_root, tmp_path, photos):
    """Nothing but the defaults (host ``[::]``): gRPC, REST and metrics answer 127.0.0.1 and ::1."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    settings = ServerSettings(
        model_root=model_root, state_dir=tmp_path / "state", port=0, rest_port=0, metrics_port=0
    )
    assert settings.host == "[::]"
    server = InProcessServer(settings).start()
    try:
        for host in ("127.0.0.1", "[::1]"):
            ready = http("GET", f"http://{host}:{server.server.rest.port}/v2/health/ready", timeout=10)
            assert ready.status == 200, host
            with urllib.request.urlopen(
                f"http://{host}:{server.server.metrics.port}/metrics", timeout=10
            ) as page:
                assert b"imageserve_requests_total" in page.read(), host
            with grpc.insecure_channel(f"{host}:{server.server.port}") as channel:
                status = health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(), timeout=10
                )
                assert status.status == health_pb2.HealthCheckResponse.SERVING, host
    finally:
        server.stop()


def test_a_connection_trickling_its_headers_is_closed(server):
    with socket.create_connection(("127.0.0.1", server.server.rest.port), timeout=10) as slow:
        slow.sendall(b"GET /v2/health/ready HTTP/1.1\r\nHost: x\r\n")  # never the blank line
        started = time.monotonic()
        assert slow.recv(1024) == b""  # closed by the server
        assert time.monotonic() - started < 5
    assert server.server.rest.limits.timed_out >= 1
    # A complete request on a fresh connection still answers.
    assert http("GET", f"{server.rest_address}/v2/health/ready", timeout=10).status == 200


def test_connections_beyond_the_limit_are_closed_and_the_port_recovers(server):
    idle = [socket.create_connection(("127.0.0.1", server.server.rest.port), timeout=10) for _ in range(10)]
    try:
        wait_for(lambda: server.server.rest.limits.refused >= 6, 10, what="connections refused")
        assert server.server.rest.limits.open <= LIMITS["http_max_connections"]
    finally:
        for connection in idle:
            connection.close()
    wait_for(lambda: server.server.rest.limits.open == 0, 10, what="the connections to be closed")
    assert http("GET", f"{server.rest_address}/v2/health/ready", timeout=10).status == 200


def test_a_body_slower_than_the_body_timeout_is_408(server):
    with socket.create_connection(("127.0.0.1", server.server.rest.port), timeout=10) as slow:
        slow.sendall(
            f"POST /v2/models/{CLASSIFIER}/infer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            "Content-Length: 1000\r\n\r\n{".encode()
        )
        answer = slow.recv(4096).decode()
    assert answer.startswith("HTTP/1.1 408"), answer
    assert "did not arrive within 0.5 s" in answer


def test_a_compressed_body_is_refused_unread(server):
    body = gzip.compress(json.dumps({"inputs": []}).encode())
    answer = http(
        "POST",
        f"{server.rest_address}/v2/models/{CLASSIFIER}/infer",
        body,
        {"Content-Type": "application/json", "Content-Encoding": "gzip"},
    )
    assert answer.status == 415 and "send the body uncompressed" in answer.json()["error"]
