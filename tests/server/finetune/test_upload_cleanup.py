"""An upload the client abandons leaves nothing in the state directory, and a restart removes what
an interrupted one left."""

from __future__ import annotations

import grpc

from protos.imageserve.v1 import image_service_pb2 as pb
from protos.imageserve.v1 import image_service_pb2_grpc as pb_grpc
from tests.server.finetune.helpers import load_digit_images
from tests.servers import InProcessServer, test_settings, wait_for


def test_abandoned_uploads_leave_nothing(model_root, tmp_path):
    images, labels = load_digit_images().subset(per_class=3, classes=("0", "1"))
    server = InProcessServer(test_settings(model_root, state_dir=tmp_path / "state")).start()
    datasets = tmp_path / "state" / "datasets"
    try:
        with grpc.insecure_channel(server.address) as channel:
            stub = channel.stream_unary(
                "/imageserve.v1.ImageModelService/UploadDataset",
                request_serializer=pb.UploadDatasetRequest.SerializeToString,
                response_deserializer=pb.Dataset.FromString,
            )
            for _attempt in range(6):

                def requests():
                    for image, label in zip(images, labels):
                        yield pb.UploadDatasetRequest(image=pb.LabeledImage(label=label, image=image))
                    raise RuntimeError("the client gives up mid-upload")  # cancels the call

                future = stub.future(requests(), timeout=30)
                try:
                    future.result()
                except grpc.RpcError as exc:
                    assert exc.code() in (grpc.StatusCode.CANCELLED, grpc.StatusCode.UNKNOWN), exc
        wait_for(lambda: not list(datasets.glob(".upload-*")), 30, what="abandoned uploads cleaned up")
    finally:
        server.stop()
    # A crash mid-upload leaves a directory; the next start removes it.
    (datasets / ".upload-ds-interrupted").mkdir(parents=True)
    (datasets / ".upload-ds-interrupted" / "0.png").write_bytes(images[0])
    server = InProcessServer(test_settings(model_root, state_dir=tmp_path / "state")).start()
    try:
        with grpc.insecure_channel(server.address) as channel:
            pb_grpc.ImageModelServiceStub(channel).ListFineTuneJobs(pb.ListFineTuneJobsRequest(), timeout=30)
        assert not (datasets / ".upload-ds-interrupted").exists()
    finally:
        server.stop()
