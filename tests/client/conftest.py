"""Client fixtures: fake models (a real base for fine-tuning) -> a model root -> running servers -> clients.

Package-scoped: the test modules of tests/client share two servers (loading models takes seconds),
and the fine-tuning tests share a third one (with its own model root and data root) and its jobs."""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
import pytest

from client import Dataset, FineTuneJob, Hyperparameters, JobEvent, JobStatus, ModelClient
from tests.images import decode_rgb, encode
from tests.server.finetune.helpers import Digits, load_digit_images, write_image_dir
from tests.servers import InProcessServer, copy_version, test_settings

CLASSIFIER = "mobilenet_v2_keras"
FEATURES = "vgg16"
#: Limits of the server that makes the client split calls: 3 images or 1 MiB per request.
LIMITED = dict(max_images_per_request=3, max_message_bytes=1024 * 1024)


@pytest.fixture(scope="package")
def model_root(tmp_path_factory):
    """The fake classifier and features-only model (tests/conftest.py): the client is the subject."""
    from tests.conftest import FAKE_FEATURES, write_fake_classifier
    from tests.fake_backend import write_fake_version

    root = tmp_path_factory.mktemp("client-models")
    write_fake_classifier(root)
    write_fake_version(root, FEATURES, 1, **FAKE_FEATURES)
    return root


@pytest.fixture(scope="package")
def server(model_root):
    running = InProcessServer(test_settings(model_root)).start()
    yield running
    running.stop()


@pytest.fixture(scope="package")
def limited_server(model_root):
    """A server that takes at most 3 images or 1 MiB per request."""
    running = InProcessServer(test_settings(model_root, **LIMITED)).start()
    yield running
    running.stop()


@pytest.fixture(scope="package")
def client(server):
    with ModelClient(server.address, timeout=60) as client:
        yield client


@pytest.fixture(scope="package")
def limited_client(limited_server):
    with ModelClient(limited_server.address, timeout=60) as client:
        yield client


@pytest.fixture(scope="package")
def crops(photos):
    """Eight distinct small photos (PNG)."""
    coffee, chelsea = decode_rgb(photos["coffee.png"]), decode_rgb(photos["chelsea.png"])
    pixels = [coffee[40 * i : 40 * i + 150, 50 * i : 50 * i + 150] for i in range(4)]
    pixels += [chelsea[30 * i : 30 * i + 150, 60 * i : 60 * i + 150] for i in range(4)]
    return [encode(np.ascontiguousarray(p)) for p in pixels]


class Recorder(grpc.UnaryUnaryClientInterceptor):
    """Records every request the client sends (and runs ``after`` on each response)."""

    def __init__(self, after=None) -> None:
        self.requests: list[tuple[str, object]] = []
        self.after = after

    def intercept_unary_unary(self, continuation, details, request):
        self.requests.append((details.method.rsplit("/", 1)[-1], request))
        outcome = continuation(details, request)
        if self.after is not None:
            self.after(details.method, outcome)
        return outcome

    def sent(self, method: str) -> list:
        return [request for name, request in self.requests if name == method]


# --- fine-tuning ------------------------------------------------------------------------------------

#: Bound of every wait on a job (a small job takes ~25 s on a busy 2-core machine).
JOB_TIMEOUT_S = 300.0
#: The classes of the fine-tuning tests: digits, labelled by name (the labels the new model answers).
NAMES = dict(zip("0123456789", "zero one two three four five six seven eight nine".split(), strict=True))
#: Images per class: enough for the server's checks (5), few enough for a quick job.
PER_CLASS = 6


@dataclass(frozen=True)
class Trained:
    """A job run to its end by the fixture ``trained``."""

    dataset: Dataset
    job: FineTuneJob
    status: JobStatus
    events: list[JobEvent]


@pytest.fixture(scope="package")
def digits() -> Digits:
    """scikit-learn's digits as 32x32 RGB PNGs, with a held-out test split."""
    return load_digit_images()


@pytest.fixture(scope="package")
def named_digits(digits) -> dict[str, list[bytes]]:
    """``PER_CLASS`` training digits of each class, by class name."""
    images, labels = digits.subset(PER_CLASS)
    by_name: dict[str, list[bytes]] = {}
    for image, label in zip(images, labels, strict=True):
        by_name.setdefault(NAMES[label], []).append(image)
    return by_name


@pytest.fixture(scope="package")
def digits_dir(tmp_path_factory, digits) -> Path:
    """The same digits as a local directory in the Keras layout (``digits/<0-9>/<n>.png``), plus a
    file that is not an image."""
    directory = write_image_dir(tmp_path_factory.mktemp("local-digits") / "digits", *digits.subset(PER_CLASS))
    (directory / "0" / "notes.txt").write_text("not an image\n")
    return directory


@pytest.fixture(scope="package")
def tuning_root(tmp_path_factory, features_export) -> Path:
    """A model root of its own (jobs publish into it): the features-only VGG16 (32x32) as vgg16 v1."""
    root = tmp_path_factory.mktemp("client-finetune-models")
    copy_version(features_export.path, root, FEATURES, 1)
    return root


@pytest.fixture(scope="package")
def tuning_data_root(tmp_path_factory, digits) -> Path:
    root = tmp_path_factory.mktemp("client-finetune-data")
    write_image_dir(root / "digits", *digits.subset(PER_CLASS))
    return root


@pytest.fixture(scope="package")
def tuning_server(tuning_root, tuning_data_root):
    running = InProcessServer(test_settings(tuning_root, data_root=tuning_data_root)).start()
    yield running
    running.stop()


@pytest.fixture(scope="package")
def tuner(tuning_server):
    with ModelClient(tuning_server.address, timeout=60) as client:
        yield client


@pytest.fixture(scope="package")
def dataset(tuner, named_digits) -> Dataset:
    """The named digits, uploaded once."""
    return tuner.upload_dataset(named_digits, name="named digits")


@pytest.fixture(scope="package")
def trained(tuner, dataset) -> Trained:
    """A 3-epoch job on the uploaded named digits publishing ``digits`` v1, waited for."""
    job = tuner.fine_tune(dataset, output_model="digits", hyperparameters=Hyperparameters(epochs=3))
    events: list[JobEvent] = []
    status = job.wait(timeout=JOB_TIMEOUT_S, progress=events.append)
    return Trained(dataset, job, status, events)


@pytest.fixture(scope="package")
def gated(tuner, digits) -> FineTuneJob:
    """A job (started, not waited for) that must FAIL at its accuracy gate: labels shuffled at random."""
    images, labels = digits.subset(PER_CLASS)
    shuffled = labels[:]
    random.Random(0).shuffle(shuffled)
    return tuner.fine_tune(
        list(zip(shuffled, images, strict=True)),
        output_model="gated",
        hyperparameters=Hyperparameters(epochs=2, min_val_accuracy=0.9),
        dataset_name="noise",
    )
