"""Hot reload: a new version takes over with no failed request; a broken one never serves; a deleted
one falls back per the version policy."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import grpc
import pytest

from protos.imageserve.v1 import image_service_pb2 as pb
from protos.imageserve.v1 import image_service_pb2_grpc as pb_grpc
from tests.conftest import write_fake_classifier
from tests.servers import InProcessServer, copy_version, test_settings, wait_for

NAME = "mobilenet_v2_keras"


class ClassifyLoop:
    """Classifies in a loop from a background thread and records (version, error) per request."""

    def __init__(self, address: str, image: bytes) -> None:
        self.channel = grpc.insecure_channel(address)
        self.stub = pb_grpc.ImageModelServiceStub(self.channel)
        self.request = pb.ClassifyRequest(model=pb.ModelSpec(name=NAME), images=[image], top_k=1)
        self.versions: list[int] = []
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.versions.append(self.stub.Classify(self.request, timeout=30).model.version)
            except grpc.RpcError as exc:
                self.errors.append(f"{exc.code().name}: {exc.details()}")

    def __enter__(self) -> ClassifyLoop:
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        self._thread.join(60)
        self.channel.close()

    def latest_version(self) -> int | None:
        return self.versions[-1] if self.versions else None


def status(stub) -> dict[int, tuple[str, str]]:
    response = stub.GetModelStatus(pb.GetModelStatusRequest(name=NAME), timeout=10)
    return {v.version: (pb.ModelVersionStatus.State.Name(v.state), v.error) for v in response.versions}


@pytest.fixture
def reload_root(tmp_path):
    """The fake classifier as version 1."""
    root = tmp_path / "models"
    write_fake_classifier(root, 1)
    return root


@pytest.fixture
def v2(tmp_path) -> Path:
    """A second version of the classifier (other weights), ready to be copied into the root."""
    return write_fake_classifier(tmp_path / "incoming", 2)


def test_versions_swap_under_load_without_a_failed_request(reload_root, v2, tmp_path, photos):
    server = InProcessServer(test_settings(reload_root)).start()
    try:
        with (
            grpc.insecure_channel(server.address) as channel,
            ClassifyLoop(server.address, photos["chelsea.jpg"]) as loop,
        ):
            stub = pb_grpc.ImageModelServiceStub(channel)
            wait_for(lambda: loop.latest_version() == 1, 30, what="version 1 answering")

            # A new version appears: it is loaded and warmed up, then takes over; v1 is unloaded.
            copy_version(v2, reload_root, NAME, 2)
            wait_for(lambda: loop.latest_version() == 2, 60, what="version 2 answering")
            wait_for(lambda: set(status(stub)) == {2}, 30, what="version 1 unloaded")
            assert stub.GetModelStatus(pb.GetModelStatusRequest(name=NAME)).default_version == 2

            # A broken version 3 is FAILED with a reason; version 2 keeps answering.
            broken = write_fake_classifier(
                tmp_path / "broken", 3, load_error="could not load: variables missing"
            )
            copy_version(broken, reload_root, NAME, 3)
            failed = wait_for(
                lambda: status(stub).get(3, ("", ""))[0] == "FAILED" and status(stub), 60, what="v3 FAILED"
            )
            assert "could not load" in failed[3][1]
            assert failed[2][0] == "AVAILABLE"
            answered_before = len(loop.versions)
            wait_for(lambda: len(loop.versions) > answered_before + 5, 30, what="more answers")
            assert loop.latest_version() == 2

            # Deleting version 2 falls back to version 1 (latest policy among what loads).
            shutil.rmtree(reload_root / NAME / "2")
            wait_for(lambda: loop.latest_version() == 1, 60, what="fallback to version 1")
            wait_for(lambda: status(stub).get(2) is None, 30, what="version 2 gone from status")
        assert loop.errors == []
        assert loop.versions[0] == 1 and 2 in loop.versions and loop.versions[-1] == 1
        # Order of answers: all of v1, then v2, then v1 again (no flapping during a swap).
        transitions = [v for i, v in enumerate(loop.versions) if i == 0 or v != loop.versions[i - 1]]
        assert transitions == [1, 2, 1]
    finally:
        server.stop()


def test_a_fixed_broken_version_is_retried(reload_root, v2, photos):
    server = InProcessServer(test_settings(reload_root)).start()
    try:
        with grpc.insecure_channel(server.address) as channel:
            stub = pb_grpc.ImageModelServiceStub(channel)
            half_copied = reload_root / NAME / "2"
            half_copied.mkdir()
            shutil.copy(v2 / "saved_model.pb", half_copied / "saved_model.pb")
            wait_for(lambda: status(stub).get(2, ("", ""))[0] == "FAILED", 60, what="half-copied v2 FAILED")
            request = pb.ClassifyRequest(model=pb.ModelSpec(name=NAME), images=[photos["coffee.png"]])
            assert stub.Classify(request).model.version == 1
            # The copy completes: the files changed, so the version is tried again and serves.
            shutil.rmtree(half_copied)
            shutil.copytree(v2, half_copied)
            wait_for(lambda: stub.Classify(request).model.version == 2, 60, what="repaired v2 answering")
    finally:
        server.stop()
