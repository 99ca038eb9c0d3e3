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
