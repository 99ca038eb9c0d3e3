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
        from exporter.progress import Progress

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
CLASSIFIER = dict(name="mobilenet_v2_keras", weights="random", input_size=96, seed=1)
FEATURES_ONLY = dict(name="vgg16", weights="random", input_size=32, seed=0, include_top=False)


@pytest.fixture(scope="session")
def classifier_export(export_cache):
    """A small classifier (MobileNetV2 at 96x96, random weights, 1000 ImageNet labels), exported once."""
    options = dict(CLASSIFIER)
    return export_cache.get(options.pop("name"), **options)


@pytest.fixture(scope="session")
def features_export(export_cache):
    """A features-only VGG16 at 32x32 (random weights), exported once."""
    options = dict(FEATURES_ONLY)
    return export_cache.get(options.pop("name"), **options)


@pytest.fixture(scope="session")
def classifier_v2_export(export_cache):
    """A second version of the classifier (different seed), for hot-reload tests."""
    options = dict(CLASSIFIER, seed=2)
    return export_cache.get(options.pop("name"), **options)
