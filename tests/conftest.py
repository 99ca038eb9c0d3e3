"""Fixtures shared by every test folder: quiet TensorFlow, real photos, models exported once per session."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from tests.images import encode, photo  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parent.parent


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
    """Exports each (name, options) once per session into one shared model root."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._results: dict[tuple, object] = {}

    def get(self, name: str, **options):
        from exporter.export import ExportSpec, export_model
        from graphs.progress import Progress

        key = (name, tuple(sorted(options.items())))
        if key not in self._results:
            output = options.pop("output_dir", self.root)
            spec = ExportSpec(name=name, output_dir=output, **options)
            self._results[key] = export_model(spec, Progress("test-export", stream=None))
        return self._results[key]


@pytest.fixture(scope="session")
def export_cache(tmp_path_factory) -> ExportCache:
    return ExportCache(tmp_path_factory.mktemp("models"))


# Seeds differ per model so that tests can tell their outputs apart.
CLASSIFIER_EXPORT = dict(name="mobilenet_v2_keras", weights="random", input_size=96, seed=1)
FEATURES_EXPORT = dict(name="vgg16", weights="random", input_size=32, seed=0, include_top=False)


@pytest.fixture(scope="session")
def classifier_export(export_cache):
    """A small classifier (MobileNetV2 at 96x96, random weights, 1000 ImageNet labels), exported once."""
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


#: The names the small exported models are served under in test model roots.
CLASSIFIER = "mobilenet_v2_keras"
FEATURES = "vgg16"


@pytest.fixture(scope="module")
def model_root(tmp_path_factory, classifier_export, features_export):
    """A model root serving the classifier and the features-only model, each as version 1."""
    from tests.servers import copy_version

    root = tmp_path_factory.mktemp("model-root")
    copy_version(classifier_export.path, root, CLASSIFIER, 1)
    copy_version(features_export.path, root, FEATURES, 1)
    return root


@pytest.fixture(scope="module")
def server(model_root):
    """A real server on a free port, over ``model_root``, with the models loaded."""
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


@pytest.fixture(scope="session")
def postgres():
    """A real PostgreSQL server (initdb + pg_ctl on a loopback port) for the session: tests/jobstore,
    tests/storage."""
    from tests.postgres import PostgresServer, available

    if not available():
        pytest.skip(
            "no initdb/pg_ctl on the PATH or in /usr/lib/postgresql/*/bin (Debian: apt install postgresql)"
        )
    server = PostgresServer().start()
    yield server
    server.stop()
