"""A corrupt version is never served: status says FAILED and why (without server paths), and the
previous version keeps answering."""

from __future__ import annotations

import shutil

import grpc
import pytest

from protos.imageserve.v1 import image_service_pb2 as pb
from protos.imageserve.v1 import image_service_pb2_grpc as pb_grpc
from tests.servers import InProcessServer, copy_version, test_settings, wait_for

NAME = "vgg16"


def garbage_saved_model(version_dir):
    (version_dir / "saved_model.pb").write_bytes(b"\x08\x01garbage" * 100)


def missing_variables(version_dir):
    shutil.rmtree(version_dir / "variables")


def truncated_variables(version_dir):
    data = next((version_dir / "variables").glob("variables.data-*"))
    data.write_bytes(data.read_bytes()[: data.stat().st_size // 2])


def half_copied(version_dir):
    for child in version_dir.iterdir():
        if child.name != "saved_model.pb":
            shutil.rmtree(child) if child.is_dir() else child.unlink()


def missing_manifest(version_dir):
    (version_dir / "manifest.json").unlink()


CORRUPTIONS = {
    "garbage saved_model.pb": (garbage_saved_model, "could not load the SavedModel"),
    "missing variables": (missing_variables, "could not load the SavedModel"),
    "truncated variables": (truncated_variables, "could not load the SavedModel"),
    "half-copied directory": (half_copied, "could not load the SavedModel"),
    "no manifest": (missing_manifest, "no manifest.json"),
}


@pytest.fixture(scope="module")
def corrupt_root(tmp_path_factory, features_export):
    root = tmp_path_factory.mktemp("corrupt")
    copy_version(features_export.path, root, NAME, 1)
    return root


@pytest.fixture(scope="module")
def corrupt_server(corrupt_root):
    running = InProcessServer(test_settings(corrupt_root)).start()
    yield running
    running.stop()


@pytest.mark.parametrize("kind", sorted(CORRUPTIONS))
def test_a_corrupt_version_is_failed_and_the_previous_one_keeps_serving(
    corrupt_server, corrupt_root, features_export, photos, kind
):
    corrupt, reason = CORRUPTIONS[kind]
    staging = corrupt_root / NAME / ".incoming"
    shutil.copytree(features_export.path, staging)
    corrupt(staging)
    staging.rename(corrupt_root / NAME / "2")  # appears at once, as a careless copy would
    try:
        with grpc.insecure_channel(corrupt_server.address) as channel:
            stub = pb_grpc.ImageModelServiceStub(channel)

            def version_2():
                status = stub.GetModelStatus(pb.GetModelStatusRequest(name=NAME))
                return next(
                    (
                        v
                        for v in status.versions
                        if v.version == 2 and v.state == pb.ModelVersionStatus.FAILED
                    ),
                    None,
                )

            failed = wait_for(version_2, 60, what=f"v2 ({kind}) FAILED")
            assert reason in failed.error
            assert str(corrupt_root) not in failed.error and "/tmp" not in failed.error
            request = pb.ExtractFeaturesRequest(model=pb.ModelSpec(name=NAME), images=[photos["chelsea.png"]])
            assert stub.ExtractFeatures(request).model.version == 1
            with pytest.raises(grpc.RpcError) as caught:
                stub.ExtractFeatures(
                    pb.ExtractFeaturesRequest(
                        model=pb.ModelSpec(name=NAME, version=2), images=[photos["chelsea.png"]]
                    )
                )
            assert (
                caught.value.code() == grpc.StatusCode.NOT_FOUND
                and "failed to load" in caught.value.details()
            )
    finally:
        shutil.rmtree(corrupt_root / NAME / "2")
        corrupt_server.reconcile()
