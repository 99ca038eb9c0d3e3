"""Fine-tuned versions as heads on a shared base (server/heads.py), on the fake backend: one copy of
the base for all of its heads, a version whose base is not held (or is another network) loaded whole,
requests for different heads in the base's batches with their own errors and versions, heads never
losing their base to the memory budget, and a head published while its base is unloaded."""

from __future__ import annotations

import threading
import time

import grpc
import numpy as np
import pytest

from graphs import head as graph_head
from protos.imageserve.v1 import image_service_pb2 as pb
from protos.imageserve.v1 import image_service_pb2_grpc as pb_grpc
from tests.answers import assert_same_probabilities
from tests.conftest import fake_model
from tests.fake_backend import write_fake_head, write_fake_version
from tests.servers import InProcessServer, test_settings, wait_for

MiB = 2**20


@pytest.fixture
def root(tmp_path):
    root = tmp_path / "models"
    base = write_fake_version(root, "base", 1, num_classes=0, feature_dim=16, resident_bytes=100 * MiB)
    for n in range(3):
        write_fake_head(root, f"head{n}", 1, base, num_classes=3 + n, seed=n)
    return root


def status(stub, name) -> pb.ModelVersionStatus:
    return stub.GetModelStatus(pb.GetModelStatusRequest(name=name), timeout=10).versions[0]


def classify(stub, name, images, timeout=30) -> pb.ClassifyResponse:
    request = pb.ClassifyRequest(model=pb.ModelSpec(name=name), images=images, top_k=10)
    return stub.Classify(request, timeout=timeout)


def probabilities(result, width) -> np.ndarray:
    row = np.zeros(width, np.float32)
    for prediction in result.predictions:
        row[prediction.class_id] = prediction.score
    return row


def test_heads_share_one_base_and_answer_as_their_layers_on_its_features(root, photos):
    server = InProcessServer(test_settings(root)).start()
    try:
        with grpc.insecure_channel(server.address) as channel:
            stub = pb_grpc.ImageModelServiceStub(channel)
            base = fake_model(server, "base")
            for n in range(3):
                version = status(stub, f"head{n}")
                assert version.runtime_detail.startswith("head on base v1's features"), version.runtime_detail
                assert version.resident_bytes < MiB  # the head's arrays only
                head = server.call(_served(server, f"head{n}")).model
                answer = classify(stub, f"head{n}", [photos["coffee.png"]])
                expected = head.apply(base.expected("features", photos["coffee.png"])[None])[0]
                assert_same_probabilities(probabilities(answer.results[0], 3 + n), expected)
                assert (answer.model.name, answer.model.version) == (f"head{n}", 1)
                assert answer.results[0].predictions[0].label.startswith(f"head{n}_")
            memory = dict(
                ((name, version), size) for name, version, size in server.server.repository.memory()
            )
            assert memory[("base", 1)] == 100 * MiB and sum(memory.values()) < 101 * MiB
    finally:
        server.stop()


def test_a_server_starting_with_heads_listed_before_their_base_loads_the_base_first(tmp_path, photos, caplog):
    # Versions load one at a time by model name: "head*" comes before "zbase".
    root = tmp_path / "models"
    base = write_fake_version(root, "zbase", 1, num_classes=0, feature_dim=16, resident_bytes=100 * MiB)
    write_fake_head(root, "head0", 1, base, num_classes=3)
    caplog.set_level("INFO", logger="server.repository")
    server = InProcessServer(test_settings(root)).start()
    try:
        with grpc.insecure_channel(server.address) as channel:
            stub = pb_grpc.ImageModelServiceStub(channel)
            version = status(stub, "head0")
            assert version.runtime_detail.startswith("head on zbase v1's features"), version.runtime_detail
            assert status(stub, "zbase").state == pb.ModelVersionStatus.AVAILABLE
            assert classify(stub, "head0", [photos["coffee.png"]]).model.name == "head0"
        loads = [r.getMessage() for r in caplog.records if r.getMessage().startswith("loading ")]
        # head0 comes first, and loads zbase before its own load: each once.
        assert [m.split(" from ")[0] for m in loads] == ["loading head0 v1", "loading zbase v1"]
    finally:
        server.stop()


async def _served(server, name):
    from server.served import ModelRef

    return server.server.repository.resolve(ModelRef(name))


def test_a_head_whose_base_is_another_network_is_loaded_whole(tmp_path, photos):
    root = tmp_path / "models"
    trained_on = write_fake_version(tmp_path / "elsewhere", "base", 1, num_classes=0, feature_dim=16, seed=7)
    write_fake_version(root, "base", 1, num_classes=0, feature_dim=16, seed=8)  # same name, other network
    write_fake_head(root, "tuned", 1, trained_on, num_classes=3)
    server = InProcessServer(test_settings(root)).start()
    try:
        with grpc.insecure_channel(server.address) as channel:
            stub = pb_grpc.ImageModelServiceStub(channel)
            version = status(stub, "tuned")
            assert version.state == pb.ModelVersionStatus.AVAILABLE and version.runtime == "fake"
            assert "head on" not in version.runtime_detail  # whole: its own network
            assert classify(stub, "tuned", [photos["coffee.png"]]).model.name == "tuned"
    finally:
        server.stop()


def test_requests_for_different_heads_share_the_bases_batches_and_keep_their_errors(root, photos):
    # One model thread: while the first batch is held, the others queue (and join one batch).
    server = InProcessServer(test_settings(root, max_batch_size=16, model_threads=1)).start()
    try:
        with grpc.insecure_channel(server.address) as channel:
            stub = pb_grpc.ImageModelServiceStub(channel)
            base = fake_model(server, "base")
            base.gate = threading.Event()  # hold the base: the heads' requests queue up together
            first = threading.Thread(target=lambda: classify(stub, "head0", [photos["coffee.png"]]))
            first.start()
            wait_for(lambda: base.calls, 10, what="the first batch to start")
            answers: dict[str, object] = {}

            def call(name, images):
                try:
                    if name == "base":  # the base's own request: its features, in the same batch
                        request = pb.ExtractFeaturesRequest(model=pb.ModelSpec(name=name), images=images)
                        answers[name] = stub.ExtractFeatures(request, timeout=30)
                    else:
                        answers[name] = classify(stub, name, images)
                except grpc.RpcError as exc:
                    answers[name] = exc

            requests = {
                "head1": [photos["chelsea.png"], photos["coffee.jpg"]],
                # Its second image passes the header check and fails in the decoder, in the shared batch.
                "head2": [photos["coffee.png"], photos["chelsea.png"][: len(photos["chelsea.png"]) // 2]],
                "base": [photos["chelsea.jpg"]],
            }
            callers = [threading.Thread(target=call, args=item) for item in requests.items()]
            for caller in callers:
                caller.start()
            queued = server.server.repository
            wait_for(lambda: sum(row[2] for row in queued.load() if row[0] == "base") >= 5, 10, what="queued")
            base.gate.set()
            for caller in [first, *callers]:
                caller.join(30)
        # The three heads' and the base's requests ran in one batch of the base (after the first).
        assert base.calls[1:] == [("features", 5)], base.calls
        assert answers["head1"].model.name == "head1" and len(answers["head1"].results) == 2
        assert isinstance(answers["head2"], grpc.RpcError)
        assert answers["head2"].details().startswith("image 1: could not decode")
        assert answers["base"].model.name == "base" and answers["base"].dimension == 16
    finally:
        server.stop()


def test_the_budget_never_unloads_a_base_its_loaded_heads_run_on(root, photos):
    server = InProcessServer(test_settings(root, memory_budget=150 * MiB)).start()
    try:
        with grpc.insecure_channel(server.address) as channel:
            stub = pb_grpc.ImageModelServiceStub(channel)
            for n in range(3):
                assert classify(stub, f"head{n}", [photos["coffee.png"]]).model.name == f"head{n}"
            assert status(stub, "base").state == pb.ModelVersionStatus.AVAILABLE
    finally:
        server.stop()


def test_a_head_published_while_its_base_is_unloaded_loads_the_base_and_runs_on_it(tmp_path, photos):
    root = tmp_path / "models"
    base = write_fake_version(root, "base", 1, num_classes=0, feature_dim=16, resident_bytes=100 * MiB)
    write_fake_version(root, "other", 1, num_classes=4, resident_bytes=100 * MiB)
    server = InProcessServer(test_settings(root, memory_budget=150 * MiB)).start()
    try:
        with grpc.insecure_channel(server.address) as channel:
            stub = pb_grpc.ImageModelServiceStub(channel)
            assert classify(stub, "other", [photos["coffee.png"]]).model.name == "other"
            assert status(stub, "base").state == pb.ModelVersionStatus.UNLOADED
            write_fake_head(root, "late", 1, base, num_classes=2)

            def available() -> bool:
                try:
                    return status(stub, "late").state == pb.ModelVersionStatus.AVAILABLE
                except grpc.RpcError:  # not listed yet
                    return False

            wait_for(available, 10, what="the head to load")
            assert status(stub, "late").runtime_detail.startswith("head on base v1")
            assert status(stub, "base").state == pb.ModelVersionStatus.AVAILABLE
            assert classify(stub, "late", [photos["coffee.png"]]).model.name == "late"
    finally:
        server.stop()


def test_heads_of_a_replaced_base_say_why_and_load_whole_on_their_next_request(root, photos):
    server = InProcessServer(test_settings(root, poll_interval_s=0.2)).start()
    try:
        with grpc.insecure_channel(server.address) as channel:
            stub = pb_grpc.ImageModelServiceStub(channel)
            assert status(stub, "head0").runtime_detail.startswith("head on base v1")
            write_fake_version(root, "base", 2, num_classes=0, feature_dim=16, seed=9)  # latest: v1 goes

            def replaced() -> bool:
                versions = stub.GetModelStatus(pb.GetModelStatusRequest(name="base"), timeout=10).versions
                return [v.version for v in versions] == [2]

            wait_for(replaced, 10, what="base v2 to replace v1")
            head = status(stub, "head0")
            assert head.state == pb.ModelVersionStatus.UNLOADED
            assert head.error.startswith("its base base v1 was unloaded"), head.error
            answer = classify(stub, "head0", [photos["coffee.png"]])  # its base is gone: loaded whole
            assert (answer.model.name, answer.model.version) == ("head0", 1)
            assert "head on" not in status(stub, "head0").runtime_detail
    finally:
        server.stop()


def test_a_new_head_answers_within_two_seconds_of_its_publication(root, photos):
    server = InProcessServer(test_settings(root, poll_interval_s=0.5)).start()
    try:
        base_dir = root / "base" / "1"
        with grpc.insecure_channel(server.address) as channel:
            stub = pb_grpc.ImageModelServiceStub(channel)
            write_fake_head(root, "fresh", 1, base_dir, num_classes=2)
            published = time.monotonic()

            def answers() -> bool:
                try:
                    return classify(stub, "fresh", [photos["coffee.png"]], timeout=5).model.version == 1
                except grpc.RpcError:
                    return False

            wait_for(answers, 10, 0.02, what="the new head's first answer")
            assert time.monotonic() - published < 2.0
    finally:
        server.stop()


def test_the_numpy_head_is_the_keras_head():
    """graphs.head.apply computes what the trainer's Keras layers compute (Normalization's epsilon)."""
    keras = pytest.importorskip("keras")
    from server.finetune.hyperparameters import Hyperparameters
    from server.finetune.trainer import build_head

    features = np.random.default_rng(1).standard_normal((40, 12)).astype(np.float32) * 3 + 1
    head = build_head(features, 4, Hyperparameters(hidden_units=9, seed=3))
    assert keras is not None
    layers, arrays = graph_head.extract(head)
    assert [layer["type"] for layer in layers] == ["normalization", "dense", "dense"]
    assert_same_probabilities(graph_head.apply(layers, arrays, features), head(features, training=False))
