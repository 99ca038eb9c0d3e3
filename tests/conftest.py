"""The two tiers, and the fixtures every test folder shares: real photos, fake and real model roots,
servers on free ports.

``pytest`` (``bash scripts/test``) runs the fast tier: every package, the serving core on the NumPy
fake backend (:mod:`tests.fake_backend`), small real networks (32x32) where the network is the
point. ``pytest --all`` (``bash scripts/test --all``, CI) adds the tests marked ``slow``: what only a
real network at full size can show (fidelity, real weights, ONNX twins, the user path at 224, soak,
fleet, the containers' commands), each once.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from tests.images import encode, photo  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parent.parent


def pytest_addoption(parser):
    parser.addoption(
        "--all",
        action="store_true",
        help="also run the slow tier (tests marked slow): real networks at full size, fidelity, twins,"
        " soak, fleet",
    )


def pytest_collection_modifyitems(config, items):
    """Without --all, the slow tier is deselected (not skipped: it is not a failure to look into)."""
    if config.getoption("--all"):
        return
    slow = [item for item in items if item.get_closest_marker("slow")]
    if slow:
        config.hook.pytest_deselected(items=slow)
        items[:] = [item for item in items if not item.get_closest_marker("slow")]


@pytest.fixture(scope="session")
def photos() -> dict[str, bytes]:
    """Real photos encoded as PNG (lossless) and JPEG."""
    encoded = {}
    for name in ("chelsea", "coffee"):
        pixels = photo(name)
        encoded[f"{name}.png"] = encode(pixels, "PNG")
        encoded[f"{name}.jpg"] = encode(pixels, "JPEG", quality=92)
    return encoded


class ExportCache:
    """Exports each (name, options) once per session into one shared model root.

    Without an ONNX twin unless asked (``onnx=True``): a twin takes seconds to convert and check, and
    only the tests about twins need one."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._results: dict[tuple, object] = {}

    def get(self, name: str, **options):
        from exporter.export import ExportSpec, export_model
        from graphs.progress import Progress

        options.setdefault("onnx", False)
        key = (name, tuple(sorted(options.items())))
        if key not in self._results:
            output = options.pop("output_dir", self.root)
            spec = ExportSpec(name=name, output_dir=output, **options)
            self._results[key] = export_model(spec, Progress("test-export", stream=None))
        return self._results[key]


@pytest.fixture(scope="session")
def export_cache(tmp_path_factory) -> ExportCache:
    return ExportCache(tmp_path_factory.mktemp("models"))


# --- small real networks (32x32, random weights): where the network itself is the point ------------

# Seeds differ per model so that tests can tell their outputs apart.
CLASSIFIER_EXPORT = dict(name="mobilenet_v2_keras", weights="random", input_size=32, seed=1)
FEATURES_EXPORT = dict(name="vgg16", weights="random", input_size=32, seed=0, include_top=False)


@pytest.fixture(scope="session")
def classifier_export(export_cache):
    """A small classifier (MobileNetV2 at 32x32, random weights, 1000 ImageNet labels), exported once."""
    options = dict(CLASSIFIER_EXPORT)
    return export_cache.get(options.pop("name"), **options)


@pytest.fixture(scope="session")
def features_export(export_cache):
    """A features-only VGG16 at 32x32 (random weights), exported once."""
    options = dict(FEATURES_EXPORT)
    return export_cache.get(options.pop("name"), **options)


@pytest.fixture(scope="session")
def classifier_v2_export(export_cache):
    """A second version of the classifier (different seed), for hot-reload tests."""
    options = dict(CLASSIFIER_EXPORT, seed=2)
    return export_cache.get(options.pop("name"), **options)


HUB_SIZE = 96


@pytest.fixture(scope="session")
def hub_handles(tmp_path_factory):
    """(paths, keras classifier with logits, keras feature extractor) of a local hub-format model."""
    from tests.hub_models import save_hub_models

    return save_hub_models(tmp_path_factory.mktemp("hub"), HUB_SIZE)


@pytest.fixture(scope="session")
def hub_export(export_cache, hub_handles):
    """The catalog's mobilenet_v2 (a TF Hub classifier + feature-vector pair) from the local handles."""
    paths, _classifier, _extractor = hub_handles
    return export_cache.get(
        "mobilenet_v2",
        hub_handle=str(paths["classification"]),
        hub_feature_handle=str(paths["feature_vector"]),
        input_size=HUB_SIZE,
    )


@pytest.fixture(scope="session")
def lite0_export(export_cache):
    """EfficientNet-Lite0 with its real ImageNet weights at 224x224 (the user's default), exported once."""
    return export_cache.get("efficientnet_lite0")


#: The names test model roots serve their classifier and their features-only model under.
CLASSIFIER = "mobilenet_v2_keras"
FEATURES = "vgg16"


@pytest.fixture(scope="session")
def real_model_root(tmp_path_factory, classifier_export, features_export):
    """The small real classifier and features-only VGG16, each as version 1 (read-only: copy to change)."""
    from storage.local import copy_version

    root = tmp_path_factory.mktemp("real-model-root")
    copy_version(classifier_export.path, root, CLASSIFIER, 1)
    copy_version(features_export.path, root, FEATURES, 1)
    return root


@pytest.fixture(scope="session")
def real_server(real_model_root):
    """A server on ``real_model_root`` (TensorFlow), shared by the session's tests that only read."""
    from tests.servers import InProcessServer, test_settings

    running = InProcessServer(test_settings(real_model_root)).start()
    yield running
    running.stop()


@pytest.fixture(scope="session")
def real_stub(real_server):
    import grpc

    from protos.imageserve.v1 import image_service_pb2_grpc as pb_grpc

    with grpc.insecure_channel(real_server.address) as channel:
        yield pb_grpc.ImageModelServiceStub(channel)


# --- the fake backend (tests/fake_backend.py): the serving core's tests ---------------------------

#: The fake versions a test model root serves: shaped like the real ones (the classifier's 1000
#: ImageNet labels and 1280 features, VGG16's 512 features), seeded apart.
FAKE_CLASSIFIER = dict(num_classes=1000, feature_dim=1280, input_size=96, seed=1, preprocessing="tf")
FAKE_FEATURES = dict(num_classes=0, feature_dim=512, input_size=32, seed=0, preprocessing="caffe")


def write_fake_classifier(root: Path, version: int = 1, **options) -> Path:
    """The fake classifier as ``CLASSIFIER`` v``version`` under ``root`` (``options`` override)."""
    from exporter.labels import load_label_set
    from tests.fake_backend import write_fake_version

    name = options.pop("name", CLASSIFIER)
    values = {**FAKE_CLASSIFIER, "labels": load_label_set("imagenet1000"), **options}
    if values["num_classes"] != 1000 and "labels" not in options:
        values.pop("labels")
    return write_fake_version(root, name, version, **values)


@pytest.fixture(scope="module")
def model_root(tmp_path_factory):
    """A model root serving the fake classifier and the fake features-only model, each as version 1."""
    from tests.fake_backend import write_fake_version

    root = tmp_path_factory.mktemp("model-root")
    write_fake_classifier(root)
    write_fake_version(root, FEATURES, 1, **FAKE_FEATURES)
    return root


@pytest.fixture(scope="module")
def server(model_root):
    """A server on a free port over ``model_root`` (fake versions load fake, real ones TensorFlow)."""
    from tests.servers import InProcessServer, test_settings

    running = InProcessServer(test_settings(model_root)).start()
    yield running
    running.stop()


@pytest.fixture(scope="module")
def channel(server):
    import grpc

    with grpc.insecure_channel(server.address) as channel:
        yield channel


@pytest.fixture(scope="module")
def stub(channel):
    from protos.imageserve.v1 import image_service_pb2_grpc as pb_grpc

    return pb_grpc.ImageModelServiceStub(channel)


def fake_model(server, name: str, version: int | None = None):
    """The loaded fake backend serving ``name`` (to hold, slow or fail its batches, or compute the
    answers it must give)."""
    from server.served import ModelRef

    return server.call(_resolve(server, ModelRef(name, version)))


async def _resolve(server, ref):
    return server.server.repository.resolve(ref).model


@pytest.fixture(scope="session")
def postgres():
    """A real PostgreSQL server (initdb + pg_ctl, on a Unix socket) for the session: the job store's
    tests (tests/server/finetune) and tests/storage."""
    from tests.postgres import PostgresServer, available

    if not available():
        pytest.skip(
            "no initdb/pg_ctl on the PATH or in /usr/lib/postgresql/*/bin (Debian: apt install postgresql)"
        )
    server = PostgresServer().start()
    yield server
    server.stop()
