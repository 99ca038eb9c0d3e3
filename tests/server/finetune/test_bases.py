"""Fine-tuning on every kind of base a user has, and what SUCCEEDED promises.

Bases: a Keras model with its classification head (the exporter's default), one without, a TF Hub
classifier + feature-vector pair, and a fine-tuned version used as the base of another job; all at
non-default input sizes. Each new version must carry the dataset's labels and nothing of the base's
(its only asset is ``labels.txt``), and be served when its job says SUCCEEDED. A version the server
cannot load fails its job and is moved aside; one the version policy does not serve says which policy.
"""

from __future__ import annotations

import json
from pathlib import Path

import grpc
import pytest

from graphs import calibration
from model_format.labels import parse_labels
from model_format.manifest import KEYS as MANIFEST_KEYS
from protos.imageserve.v1 import image_service_pb2 as pb
from protos.imageserve.v1 import image_service_pb2_grpc as pb_grpc
from server.settings import ModelConfig
from tests.server.finetune.helpers import classify_accuracy, load_digit_images, upload, wait_done
from tests.servers import InProcessServer, copy_version, test_settings

CLASSES = ("0", "1", "2")
#: Random-weight bases, three quick epochs: these jobs are about what a version holds and whether it
#: is served, not how well it classifies, so they set the gate themselves (min_val_accuracy 0).
#: MobileNetV2's random features are ~1e-11: its heads stay at chance, which the default gate (chance
#: + 0.05: tests/server/finetune/test_published_twin.py) rightly refuses to publish.
FAST = dict(epochs=3, hidden_units=32, min_val_accuracy=0.0)
#: base served under this name -> the export fixture that provides it. The headed one is the kind the
#: exporter makes by default (a base whose head broke fine-tuning reached users once).
BASES = {
    "keras_with_head": "classifier_export",  # MobileNetV2 32x32 with its 1000-class head
    "keras_headless": "features_export",  # VGG16 32x32, include_top=False
}
#: The slow tier's bases: a TF Hub pair (exported at 96x96), and a fine-tuned version as a base.
MORE_BASES = {"hub": "hub_export"}


@pytest.fixture(scope="module")
def small_digits():
    return load_digit_images().subset(per_class=8, classes=CLASSES)


@pytest.fixture(scope="module")
def root(tmp_path_factory, request):
    root = tmp_path_factory.mktemp("bases")
    for name, fixture in BASES.items():
        copy_version(request.getfixturevalue(fixture).path, root, name, 1)
    # A good v1 that a broken v2 must not shadow, and a pinned model whose policy will skip v2.
    copy_version(request.getfixturevalue("classifier_export").path, root, "unloadable", 1)
    copy_version(request.getfixturevalue("classifier_export").path, root, "pinned", 1)
    return root


@pytest.fixture(scope="module")
def server(root, tmp_path_factory):
    pinned = {"pinned": ModelConfig(version_policy="specific", versions=(1,))}
    running = InProcessServer(
        test_settings(root, state_dir=tmp_path_factory.mktemp("bases-state"), models=pinned)
    ).start()
    yield running
    running.stop()


@pytest.fixture(scope="module")
def stub(server):
    with grpc.insecure_channel(server.address) as channel:
        yield pb_grpc.ImageModelServiceStub(channel)


@pytest.fixture(scope="module")
def dataset(stub, small_digits):
    return upload(stub, *small_digits, name="digits-012")


def fine_tune(stub, base: str, output: str, dataset_id: str) -> pb.FineTuneJob:
    request = pb.StartFineTuneRequest(
        base_model=pb.ModelSpec(name=base),
        output_model=output,
        dataset_id=dataset_id,
        hyperparameters=pb.FineTuneHyperparameters(**FAST),
    )
    job, _events = wait_done(stub, stub.StartFineTune(request, timeout=60).job_id)
    return job


def tune_all(stub, dataset, bases) -> dict:
    """One job per base (queued together, run one after another): output name -> finished job."""
    started = {}
    for base in bases:
        request = pb.StartFineTuneRequest(
            base_model=pb.ModelSpec(name=base),
            output_model=f"tuned_{base}",
            dataset_id=dataset.dataset_id,
            hyperparameters=pb.FineTuneHyperparameters(**FAST),
        )
        started[f"tuned_{base}"] = stub.StartFineTune(request, timeout=60).job_id
    return {output: wait_done(stub, job_id)[0] for output, job_id in started.items()}


@pytest.fixture(scope="module")
def tuned(stub, dataset):
    return tune_all(stub, dataset, BASES)


@pytest.fixture(scope="module")
def tuned_more(request, stub, root, dataset, tuned):
    """The slow tier's bases: the hub pair, and the headed base's fine-tuned version as a base."""
    for name, fixture in MORE_BASES.items():
        copy_version(request.getfixturevalue(fixture).path, root, name, 1)
    request.getfixturevalue("server").reconcile()
    jobs = tune_all(stub, dataset, MORE_BASES)
    jobs["tuned_twice"] = fine_tune(stub, "tuned_keras_with_head", "tuned_twice", dataset.dataset_id)
    return jobs


def assert_version_is_its_own(root: Path, name: str, version: int) -> dict:
    path = root / name / str(version)
    assert sorted(p.name for p in (path / "assets").iterdir()) == ["labels.txt"]
    assert parse_labels((path / "assets" / "labels.txt").read_text(encoding="utf-8")) == list(CLASSES)
    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["labels_file"] == "assets/labels.txt"
    assert manifest["num_classes"] == len(CLASSES)
    assert manifest["signatures"]["classify"]["outputs"]["probabilities"]["shape"] == [None, len(CLASSES)]
    assert set(manifest) <= MANIFEST_KEYS, set(manifest) - MANIFEST_KEYS  # the keys model_format documents
    # Its own images for reduced precisions: training images (int8's calibration), held-out ones labelled.
    assert 0 < len(calibration.read(path, manifest)) <= calibration.MAX_IMAGES
    held_out, class_ids = calibration.read_validation(path, manifest)
    assert 0 < len(held_out) == len(class_ids) and set(class_ids) <= set(range(len(CLASSES)))
    return manifest


@pytest.mark.parametrize(
    "output",
    [
        "tuned_keras_with_head",
        "tuned_keras_headless",
        pytest.param("tuned_hub", marks=pytest.mark.slow),
        pytest.param("tuned_twice", marks=pytest.mark.slow),
    ],
)
def test_every_base_kind_gives_a_served_version_with_the_datasets_labels(
    request, stub, root, tuned, small_digits, output
):
    job = tuned[output] if output in tuned else request.getfixturevalue("tuned_more")[output]
    assert job.state == pb.SUCCEEDED, job.error
    assert job.output_version == 1
    assert_version_is_its_own(root, output, 1)
    images, labels = small_digits
    accuracy, versions = classify_accuracy(stub, output, images, labels)
    assert versions == {1}
    assert 0.0 <= accuracy <= 1.0  # the labels answered are the dataset's (classify_accuracy compares them)
    top = stub.Classify(pb.ClassifyRequest(model=pb.ModelSpec(name=output), images=images[:1], top_k=3))
    assert {p.label for p in top.results[0].predictions} == set(CLASSES)


def test_a_base_with_its_head_leaves_the_head_out(root, tuned):
    """The base's 1000-class head is neither in the labels nor in the weights of the new version."""
    assert tuned["tuned_keras_with_head"].state == pb.SUCCEEDED
    base = root / "keras_with_head" / "1" / "variables"
    tuned_variables = root / "tuned_keras_with_head" / "1" / "variables"
    size = lambda d: sum(p.stat().st_size for p in d.iterdir())  # noqa: E731
    # MobileNetV2's head is 1280 x 1000 weights of its 3.5 M; the new head is 1280 x 32 + 32 x 3.
    assert size(tuned_variables) < size(base) - 1280 * 1000 * 4 * 0.9


def test_succeeded_says_now_served(stub, tuned):
    job = tuned["tuned_keras_headless"]
    events = list(stub.WatchFineTuneJob(pb.WatchFineTuneJobRequest(job_id=job.job_id), timeout=30))
    assert events[-1].state == pb.SUCCEEDED
    assert events[-1].message.startswith("tuned_keras_headless v1 now served")


def test_a_version_the_server_cannot_load_fails_the_job_and_is_moved_aside(
    stub, root, dataset, monkeypatch, small_digits
):
    from server.model import LoadedModel, LoadError

    load = LoadedModel.load.__func__

    def refuse_unloadable(cls, name, version, path, *args, **kwargs):
        if name == "unloadable" and version == 2:
            raise LoadError("simulated: the runtime refused this version")
        return load(cls, name, version, path, *args, **kwargs)

    monkeypatch.setattr(LoadedModel, "load", classmethod(refuse_unloadable))
    # A fine-tuned version loads as a head on a base the server holds: refuse that way in too.
    from server.heads import HeadBackend

    head_load = HeadBackend.load.__func__

    def refuse_head(cls, name, version, *args, **kwargs):
        if name == "unloadable" and version == 2:
            raise LoadError("simulated: the runtime refused this version")
        return head_load(cls, name, version, *args, **kwargs)

    monkeypatch.setattr(HeadBackend, "load", classmethod(refuse_head))
    job = fine_tune(stub, "keras_headless", "unloadable", dataset.dataset_id)
    assert job.state == pb.FAILED
    assert (
        "could not load the new version unloadable v2: simulated: the runtime refused this version"
        in job.error
    )
    assert f"moved aside to unloadable/.rejected-2-{job.job_id}" in job.error
    assert str(root) not in job.error
    assert sorted(p.name for p in (root / "unloadable").iterdir()) == [f".rejected-2-{job.job_id}", "1"]
    # The good v1 still answers, and no FAILED v2 is listed.
    images, labels = small_digits
    _accuracy, versions = classify_accuracy(stub, "unloadable", images[:2], labels[:2])
    assert versions == {1}
    status = stub.GetModelStatus(pb.GetModelStatusRequest(name="unloadable"), timeout=30)
    assert [v.version for v in status.versions] == [1]


def test_a_version_the_policy_does_not_serve_says_which_policy(stub, root, dataset):
    job = fine_tune(stub, "keras_headless", "pinned", dataset.dataset_id)
    assert job.state == pb.SUCCEEDED, job.error
    assert job.output_version == 2
    assert_version_is_its_own(root, "pinned", 2)
    events = list(stub.WatchFineTuneJob(pb.WatchFineTuneJobRequest(job_id=job.job_id), timeout=30))
    message = events[-1].message
    assert message.startswith(
        "pinned v2 published, not served: model 'pinned' has version_policy 'specific'"
    ), message
    assert "add 2 to versions in [models.pinned]" in message
