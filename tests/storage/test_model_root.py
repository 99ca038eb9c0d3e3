"""A model root in an S3 bucket: export -> bucket -> a running server serves it; the marker is the switch
(a half-uploaded version is ignored, a deleted one stops being served); the local cache survives restarts."""

from __future__ import annotations

import json
import logging

import grpc
import pytest

from model_format.layout import PUBLISHED_MARKER
from protos.imageserve.v1 import image_service_pb2 as pb
from protos.imageserve.v1 import image_service_pb2_grpc as pb_grpc
from storage.model_cache import RemoteModelRoot
from storage.model_roots import CACHE_DIR
from tests.servers import wait_for
from tests.storage.conftest import bucket_path, publish_version, s3, serve

NAME = "mobilenet_v2_keras"


@pytest.fixture(scope="module")
def root_url(exported_to_bucket) -> str:
    """A bucket the exporter published version 1 of the small classifier to (tests/storage/conftest.py)."""
    url = exported_to_bucket.path.removesuffix(f"/{NAME}/1")
    assert exported_to_bucket.path == f"{url}/{NAME}/1"
    return url


@pytest.fixture(scope="module")
def state_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("storage-state")


@pytest.fixture(scope="module")
def server(root_url, state_dir):
    running = serve(root_url, state_dir)
    yield running
    running.terminate()


@pytest.fixture(scope="module")
def stub(server):
    with grpc.insecure_channel(server.address) as channel:
        yield pb_grpc.ImageModelServiceStub(channel)


def classify(stub, photos) -> pb.ClassifyResponse:
    request = pb.ClassifyRequest(model=pb.ModelSpec(name=NAME), images=[photos["chelsea.jpg"]], top_k=3)
    return stub.Classify(request, timeout=30)


def served_version(stub, photos) -> int:
    return classify(stub, photos).model.version


def wait_version(stub, photos, server, version: int, what: str) -> None:
    try:
        wait_for(lambda: served_version(stub, photos) == version, 120, 0.2, what)
    except TimeoutError as exc:
        raise AssertionError(f"{exc}; server log:\n{server.log_text()[-4000:]}") from None


def test_exporter_publishes_files_then_the_marker_listing_them(root_url):
    fs = s3()
    version_dir = f"{bucket_path(root_url)}/{NAME}/1"
    marker = json.loads(fs.cat_file(f"{version_dir}/{PUBLISHED_MARKER}"))
    uploaded = {key.removeprefix(version_dir + "/") for key in fs.find(version_dir)} - {PUBLISHED_MARKER}
    assert set(marker["files"]) == uploaded
    assert {"saved_model.pb", "manifest.json", "assets/labels.txt"} <= uploaded
    assert all(fs.size(f"{version_dir}/{path}") == size for path, size in marker["files"].items())


def test_a_running_server_serves_the_published_version(stub, photos, server, state_dir):
    answer = classify(stub, photos)
    assert answer.model.version == 1 and len(answer.results[0].predictions) == 3
    cached = list((state_dir / CACHE_DIR / NAME).iterdir())
    assert [path.name.split("-")[0] for path in cached] == ["1"], cached  # no temporary copy left behind
    assert (cached[0] / "saved_model.pb").is_file()
    assert "downloaded" in server.log_text()


def test_a_half_uploaded_version_is_ignored_until_its_marker(stub, photos, server, root_url, small_v2):
    fs = s3()
    version_dir = f"{bucket_path(root_url)}/{NAME}/2"
    for path in sorted(p for p in small_v2.path.rglob("*") if p.is_file()):
        fs.put_file(str(path), f"{version_dir}/{path.relative_to(small_v2.path).as_posix()}")
    wait_for(
        lambda: f"ignoring {NAME}/2: no {PUBLISHED_MARKER} marker" in server.log_text(), 30, what="a scan"
    )
    assert served_version(stub, photos) == 1
    fs.rm(version_dir, recursive=True)
    publish_version(small_v2.path, root_url, NAME, 2)  # the same files, and now the marker
    wait_version(stub, photos, server, 2, "version 2 once its marker is written")


def test_a_deleted_version_stops_being_served(stub, photos, server, root_url):
    wait_version(stub, photos, server, 2, "version 2")
    s3().rm(f"{bucket_path(root_url)}/{NAME}/2", recursive=True)
    wait_version(stub, photos, server, 1, "version 1 once version 2 is deleted")

    def versions() -> list[int]:
        return [
            v.version for v in stub.GetModelStatus(pb.GetModelStatusRequest(name=NAME), timeout=30).versions
        ]

    wait_for(lambda: versions() == [1], 60, 0.2, "version 2 to be unloaded")


def test_the_cache_is_reused_after_a_restart(server, root_url, state_dir, photos):
    assert server.terminate() == 0
    cached = state_dir / CACHE_DIR / NAME
    (copy,) = [path for path in cached.iterdir() if path.name.startswith("1-")]
    mtimes = {path: path.stat().st_mtime_ns for path in copy.rglob("*")}
    restarted = serve(root_url, state_dir)
    try:
        with grpc.insecure_channel(restarted.address) as channel:
            assert served_version(pb_grpc.ImageModelServiceStub(channel), photos) == 1
        assert f"{NAME} v1: using the cached copy" in restarted.log_text()
        assert "downloaded" not in restarted.log_text()
        assert {path: path.stat().st_mtime_ns for path in copy.rglob("*")} == mtimes
    finally:
        assert restarted.terminate() == 0


def test_a_damaged_or_unfinished_copy_is_never_loaded(root_url, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="storage")
    store = RemoteModelRoot(root_url, tmp_path / CACHE_DIR)
    version = store.scan()[NAME][1]
    (tmp_path / CACHE_DIR / NAME).mkdir(parents=True)
    (tmp_path / CACHE_DIR / NAME / ".download-1-dead").mkdir()  # a download that died half-way
    copy = store.materialize(NAME, 1, version)
    assert copy.parent == tmp_path / CACHE_DIR / NAME and not copy.name.startswith(".")
    size = (copy / "saved_model.pb").stat().st_size
    with open(copy / "saved_model.pb", "r+b") as damaged:
        damaged.truncate(10)
    caplog.clear()
    assert store.materialize(NAME, 1, version) == copy
    assert f"{NAME} v1: downloaded" in caplog.text and (copy / "saved_model.pb").stat().st_size == size
    caplog.clear()
    assert store.materialize(NAME, 1, version) == copy
    assert f"{NAME} v1: using the cached copy" in caplog.text
