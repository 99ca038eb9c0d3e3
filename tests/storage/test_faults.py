"""The object store failing under a running server: a stalled store never stalls a request, and a
bucket that vanishes unloads nothing (a root that cannot be listed is a failed poll, not an empty one)."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from protos.imageserve.v1 import image_service_pb2 as pb
from protos.imageserve.v1 import image_service_pb2_grpc as pb_grpc
from tests.conftest import CLASSIFIER, write_fake_classifier
from tests.servers import InProcessServer, test_settings, wait_for
from tests.storage.conftest import bucket_path, publish_version, s3

STALL_S = 12.0


@pytest.fixture
def bucket_server(bucket_url, tmp_path):
    """A server (in-process) on a bucket holding the fake classifier v1, polled every 0.2 s."""
    publish_version(write_fake_classifier(tmp_path / "local"), bucket_url, CLASSIFIER, 1)
    server = InProcessServer(test_settings(bucket_url, state_dir=tmp_path / "state")).start()
    yield server, bucket_url
    server.stop()


def classify(stub, photos, timeout: float = 30) -> pb.ClassifyResponse:
    request = pb.ClassifyRequest(model=pb.ModelSpec(name=CLASSIFIER), images=[photos["coffee.png"]], top_k=1)
    return stub.Classify(request, timeout=timeout)


def test_a_stalled_object_store_never_stalls_a_request(bucket_server, moto, photos):
    """The store paused (SIGSTOP) for 12 s: listings hang in the scan thread, requests go on."""
    server, _url = bucket_server
    with grpc.insecure_channel(server.address) as channel:
        stub, health = pb_grpc.ImageModelServiceStub(channel), health_pb2_grpc.HealthStub(channel)
        assert classify(stub, photos).model.version == 1
        latencies: list[float] = []
        os.kill(moto.process.pid, signal.SIGSTOP)
        try:
            stalled_until = time.monotonic() + STALL_S
            while time.monotonic() < stalled_until:
                started = time.monotonic()
                assert classify(stub, photos, timeout=10).model.version == 1
                health.Check(health_pb2.HealthCheckRequest(service="liveness"), timeout=10)
                latencies.append(time.monotonic() - started)
                time.sleep(0.1)
        finally:
            os.kill(moto.process.pid, signal.SIGCONT)
    assert len(latencies) > 20 and max(latencies) < 2.0, f"slowest answer {max(latencies):.2f} s"


async def _release(lock) -> None:
    lock.release()


@contextlib.contextmanager
def no_poll(server):
    """No poll of the model root runs inside (the repository's reconcile lock is held)."""
    lock = server.server.repository._reconciling
    server.call(lock.acquire())
    try:
        yield
    finally:
        server.call(_release(lock))


def test_a_vanished_bucket_keeps_the_loaded_versions_served(bucket_server, photos, tmp_path, caplog):
    server, url = bucket_server
    caplog.set_level(logging.WARNING, logger="server.repository")
    bucket = bucket_path(url).split("/")[0]
    with grpc.insecure_channel(server.address) as channel:
        stub = pb_grpc.ImageModelServiceStub(channel)
        assert classify(stub, photos).model.version == 1
        # A restarted in-memory store, a wrong endpoint, ...: the bucket gone at once. NOTE: S3 deletes a
        # bucket only once emptied, and a poll between the two would see an empty root, which unloads
        # its versions (as a deleted directory does); so no poll runs meanwhile (CI saw one).
        with no_poll(server):
            s3().rm(bucket, recursive=True)
        wait_for(lambda: "cannot be listed" in caplog.text, 30, what="a failed listing")
        time.sleep(1.0)  # several more polls
        assert classify(stub, photos).model.version == 1
        status = stub.GetModelStatus(pb.GetModelStatusRequest(name=CLASSIFIER), timeout=10)
        assert [(v.version, v.state) for v in status.versions] == [(1, pb.ModelVersionStatus.AVAILABLE)]
        assert caplog.text.count("cannot be listed") == 1  # once per outage, not per poll
        # The bucket comes back with a new version: it is served.
        with no_poll(server):  # back at once, with the version (an empty bucket is an empty root)
            s3().mkdir(bucket)
            publish_version(write_fake_classifier(tmp_path / "v2", 2), url, CLASSIFIER, 2)
        wait_for(lambda: classify(stub, photos).model.version == 2, 60, what="version 2 answering")
