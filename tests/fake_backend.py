"""A NumPy model backend: the serving core's tests run on it in milliseconds, as MLServer's run on a
toy ``SumModel``. It implements :class:`server.backend.ModelBackend`;
``tests/server/test_backend_contract.py`` runs the same assertions on it and on a real exported
version, so that it cannot drift.

A fake version is a directory laid out like an exported one, so that the real model root, listing,
fingerprints, version policies and hot reload run on it::

    <root>/<name>/<version>/saved_model.pb      empty: the listing only checks that it exists
                            variables/variables.index   the seed: the network's hash tells fakes apart
                            manifest.json       the real keys (input size, classes, feature width, ...)
                            assets/labels.txt   one label per class
                            fake.json           optional behaviour: load_delay_s, load_error, run_delay_s,
                                                resident_bytes

Answers are a deterministic function of each image's decoded pixels (PIL, resized to the input size):
the same image gets the same row in any batch and any position, different images get different rows,
and an image PIL cannot decode fails alone with ``could not decode: ...``. A test reaches a loaded fake
through the repository (``repository.resolve(ModelRef(name)).model``) to hold its batches (``gate``),
slow them (``run_delay_s``), fail the next one (``fail_next``) or read the batches it ran (``calls``).
"""

from __future__ import annotations

import datetime as dt
import io
import json
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from model_format import signatures as sig
from model_format.labels import format_labels
from model_format.manifest import MANIFEST_FILE, MANIFEST_FORMAT
from server.backend import KINDS, LoadError, VersionMetadata
from server.batching import BatchOutcome

BEHAVIOUR_FILE = "fake.json"
RUNTIME = "fake"
#: The decoded image is averaged down to GRID x GRID x 3 values before the projection (small weights
#: whatever the input size).
GRID = 8
#: Longest a gated batch waits for its test to open the gate.
GATE_TIMEOUT_S = 30.0


def signature_names(classify: bool) -> list[str]:
    names = [sig.FEATURES, sig.FEATURES_PIXELS, sig.DEFAULT]
    return sorted([*names, sig.CLASSIFY, sig.CLASSIFY_PIXELS] if classify else names)


def write_fake_version(
    root: Path,
    name: str,
    version: int,
    *,
    num_classes: int = 10,
    feature_dim: int = 16,
    input_size: int = 32,
    labels: list[str] | None = None,
    seed: int | None = None,
    preprocessing: str = "fake",
    **behaviour: Any,
) -> Path:
    """Write ``<root>/<name>/<version>/`` (atomically: staged, then renamed) and return it.

    ``num_classes=0`` makes a features-only version. ``seed`` (default: the version number) picks the
    weights, so two versions answer differently. ``behaviour`` goes to ``fake.json``.
    """
    seed = version if seed is None else seed
    labels = labels if labels is not None else [f"class_{i}" for i in range(num_classes)]
    if len(labels) != num_classes:
        raise ValueError(f"{len(labels)} labels for {num_classes} classes")
    target = Path(root) / name / str(version)
    staging = Path(root) / name / f".staging-fake-{version}"
    (staging / "assets").mkdir(parents=True)
    (staging / "saved_model.pb").write_bytes(b"")
    # What storage.local.content_key hashes: the weights' "checksums" (two seeds, two networks).
    (staging / "variables").mkdir()
    (staging / "variables" / "variables.index").write_text(
        f"fake weights, seed {seed}, {feature_dim} features"
    )
    names = signature_names(classify=num_classes > 0)
    manifest = {
        "format": MANIFEST_FORMAT,
        "name": name,
        "version": version,
        "source": {"kind": "fake", "seed": seed},
        "weights": {"kind": "fake"},
        "input_size": input_size,
        "preprocessing": preprocessing,
        "num_classes": num_classes,
        "feature_dim": feature_dim,
        "labels_file": "assets/labels.txt" if num_classes else None,
        "signatures": {name_: {} for name_ in names},
        "exporter_version": "test",
        "created_at": dt.datetime(2026, 1, 1, tzinfo=dt.UTC).isoformat(),
    }
    (staging / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2))
    if num_classes:
        (staging / "assets" / "labels.txt").write_text(format_labels(labels))
    (staging / BEHAVIOUR_FILE).write_text(json.dumps(behaviour))
    staging.rename(target)
    return target


def write_fake_head(
    root: Path,
    name: str,
    version: int,
    base: Path,
    *,
    num_classes: int = 3,
    hidden: int = 8,
    seed: int = 0,
    **behaviour: Any,
) -> Path:
    """A fine-tuned version of the fake base at ``base`` (a version directory): its manifest names the
    base and its network's hash, and it holds ``head.npz`` (Normalization -> Dense(relu) ->
    Dense(softmax)), as fine-tuning writes them. Loaded whole (no such base held), it is a plain fake."""
    from graphs import head as graph_head
    from storage.local import content_key

    base_manifest = json.loads((Path(base) / MANIFEST_FILE).read_text())
    width = int(base_manifest["feature_dim"])
    rng = np.random.default_rng(seed)
    arrays = {
        "1.mean": rng.standard_normal(width).astype(np.float32) * 0.1,
        "1.variance": (rng.random(width).astype(np.float32) + 0.5),
        "2.kernel": rng.standard_normal((width, hidden)).astype(np.float32),
        "2.bias": np.zeros(hidden, np.float32),
        "4.kernel": rng.standard_normal((hidden, num_classes)).astype(np.float32),
        "4.bias": np.zeros(num_classes, np.float32),
    }
    layers = [
        {"type": "normalization", "index": 1},
        {"type": "dense", "index": 2, "activation": "relu"},
        {"type": "dense", "index": 4, "activation": "softmax"},
    ]
    import shutil
    import tempfile

    from storage.local import copy_version

    scratch = Path(tempfile.mkdtemp(prefix="fake-head-"))
    target = write_fake_version(
        scratch,
        name,
        version,
        num_classes=num_classes,
        feature_dim=width,
        input_size=int(base_manifest["input_size"]),
        labels=[f"{name}_{i}" for i in range(num_classes)],
        seed=seed,
        **behaviour,
    )
    data = graph_head.to_bytes(arrays)
    (target / graph_head.HEAD_FILE).write_bytes(data)
    manifest = json.loads((target / MANIFEST_FILE).read_text())
    manifest["source"] = {
        "kind": "finetune",
        "seed": seed,
        "base_model": base.parent.name,
        "base_version": int(base.name),
        "base_hash": content_key(base),
        "job_id": f"fake-{name}",
    }
    manifest["head"] = {"file": graph_head.HEAD_FILE, "sha256": graph_head.sha256_of(data), "layers": layers}
    (target / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2))
    published = copy_version(target, root, name, version)  # whole, or not at all: a server may be polling
    shutil.rmtree(scratch, ignore_errors=True)
    return published


def decode(image: bytes, size: int) -> np.ndarray:
    """Encoded bytes -> float32 ``[size, size, 3]`` in [0, 1]; ValueError names what PIL said."""
    try:
        with Image.open(io.BytesIO(image)) as opened:
            return resize(np.asarray(opened.convert("RGB")), size)
    except Exception as exc:  # PIL raises OSError, SyntaxError, ValueError, ... on bad data
        raise ValueError(f"could not decode: {exc}") from None


def resize(pixels: np.ndarray, size: int) -> np.ndarray:
    """uint8 ``[H, W, 3]`` -> float32 ``[size, size, 3]`` in [0, 1] (bilinear, like the signatures)."""
    return np.asarray(Image.fromarray(pixels).resize((size, size), Image.BILINEAR), np.float32) / 255.0


class FakeBackend:
    """A fake version in memory (see the module's docstring)."""

    def __init__(self, name: str, version: int, path: Path) -> None:
        self.name, self.version, self.path = name, version, path
        try:
            manifest = json.loads((path / MANIFEST_FILE).read_text())
            behaviour = json.loads((path / BEHAVIOUR_FILE).read_text())
        except (OSError, ValueError) as exc:
            raise LoadError(f"not a fake version: {exc}") from None
        if behaviour.get("load_delay_s"):
            time.sleep(behaviour["load_delay_s"])
        if behaviour.get("load_error"):
            raise LoadError(behaviour["load_error"])
        num_classes = int(manifest["num_classes"] or 0)
        labels = ()
        if num_classes:
            labels = tuple((path / manifest["labels_file"]).read_text().splitlines())
        names = tuple(signature_names(classify=num_classes > 0))
        self.metadata = VersionMetadata(
            input_size=int(manifest["input_size"]),
            num_classes=num_classes,
            feature_dim=int(manifest["feature_dim"]),
            signature_names=names,
            labels=labels,
            preprocessing=manifest["preprocessing"],
            source=f"fake seed {manifest['source']['seed']}",
            created_at=dt.datetime.fromisoformat(manifest["created_at"]),
        )
        rng = np.random.default_rng(int(manifest["source"]["seed"]))
        width = self.metadata.feature_dim
        self._project = rng.standard_normal((GRID * GRID * 3, width)).astype(np.float32)
        self._classes = rng.standard_normal((width, max(num_classes, 1))).astype(np.float32)
        self.runtime, self.runtime_detail = RUNTIME, "the tests' NumPy fake"
        self.precision, self.precision_detail = "fp32", ""
        # What the version "holds": its weights, or what fake.json says (the memory budget's tests).
        self.resident_bytes = int(
            behaviour.get("resident_bytes", self._project.nbytes + self._classes.nbytes)
        )
        self.run_delay_s = float(behaviour.get("run_delay_s", 0.0))
        self.gate: threading.Event | None = None
        self.fail_next: Exception | None = None
        self.calls: list[tuple[str, int]] = []
        self.closed = False
        self._lock = threading.Lock()
        self._signature_defs: dict[str, Any] | None = None

    # --- ModelBackend -------------------------------------------------------------------------------

    @property
    def signature_names(self) -> tuple[str, ...]:
        return self.metadata.signature_names

    def has(self, kind: str) -> bool:
        return kind == "features" or (kind == "classify" and self.metadata.num_classes > 0)

    def kind_of(self, signature: str) -> str | None:
        if signature == sig.DEFAULT:
            return "classify" if self.has("classify") else "features"
        if signature not in self.signature_names:
            return None
        return "classify" if signature.startswith(sig.CLASSIFY) else "features"

    def runtime_of(self, kind: str) -> str:
        return RUNTIME

    def precision_of(self, kind: str) -> str:
        return self.precision

    def run(self, kind: str, images: list[bytes]) -> BatchOutcome:
        self._enter(kind, len(images))
        rows = np.zeros((len(images), self._width(kind)), np.float32)
        errors: dict[int, str] = {}
        for index, image in enumerate(images):
            try:
                rows[index] = self.answer(kind, decode(image, self.metadata.input_size))
            except ValueError as exc:
                errors[index] = str(exc)
        return BatchOutcome(rows, errors)

    def call_signature(self, signature: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        kind = self.kind_of(signature)
        output = KINDS[kind][1]
        if signature.endswith("_pixels"):
            pixels = np.asarray(inputs[sig.PIXELS_INPUT])
            self._enter(kind, len(pixels))
            rows = [self.answer(kind, resize(p, self.metadata.input_size)) for p in pixels]
            return {output: np.stack(rows).astype(np.float32)}
        outcome = self.run(kind, [bytes(item) for item in inputs[sig.IMAGES_INPUT]])
        if outcome.errors:
            raise ValueError(next(iter(outcome.errors.values())))
        return {output: outcome.outputs}

    @property
    def signature_defs(self) -> dict[str, Any]:
        """SignatureDef protos as TensorFlow writes them (built on first use: they need TF's protos)."""
        if self._signature_defs is None:
            self._signature_defs = _signature_defs(self.signature_names, self.metadata)
        return self._signature_defs

    def close(self) -> None:
        self.closed = True

    # --- the fake's own ---------------------------------------------------------------------------

    def answer(self, kind: str, pixels: np.ndarray) -> np.ndarray:
        """The row for one decoded image: features, or class probabilities computed from them."""
        size = pixels.shape[0]
        cell = size // GRID
        pooled = pixels[: cell * GRID, : cell * GRID].reshape(GRID, cell, GRID, cell, 3).mean(axis=(1, 3))
        flat = pooled.reshape(-1)
        flat = (flat - flat.mean()) / (flat.std() + 1e-3)  # contrast, not brightness, tells images apart
        features = np.tanh(flat @ self._project / np.sqrt(flat.size, dtype=np.float32))
        if kind == "features":
            return features
        logits = features @ self._classes * 4.0
        exp = np.exp(logits - logits.max())
        return exp / exp.sum()

    def expected(self, kind: str, image: bytes) -> np.ndarray:
        """What the server must answer for ``image`` (computed here, in the test's thread)."""
        return self.answer(kind, decode(image, self.metadata.input_size))

    def _enter(self, kind: str, size: int) -> None:
        if self.closed:
            raise RuntimeError(f"{self.name} v{self.version} was closed and called again")
        with self._lock:
            self.calls.append((kind, size))
            failure, self.fail_next = self.fail_next, None
        if self.gate is not None and not self.gate.wait(GATE_TIMEOUT_S):
            raise RuntimeError("the test's gate never opened")
        if self.run_delay_s:
            time.sleep(self.run_delay_s)
        if failure is not None:
            raise failure

    def _width(self, kind: str) -> int:
        return self.metadata.num_classes if kind == "classify" else self.metadata.feature_dim


def fake_loader(name: str, version: int, path: Path, options: Any = None) -> FakeBackend:
    """A :data:`server.backend.BackendLoader` for fake versions."""
    return FakeBackend(name, version, path)


def test_loader(name: str, version: int, path: Path, options: Any) -> Any:
    """The loader of every server the tests start in-process: a fake version (its ``fake.json``) loads
    fake, anything else the real way (TensorFlow), so one model root may hold both."""
    if (Path(path) / BEHAVIOUR_FILE).is_file():
        return FakeBackend(name, version, path)
    from server.model import load_saved_model

    return load_saved_model(name, version, path, options)


test_loader.__test__ = False  # a loader, not a test (its name starts with test_)


def _signature_defs(names: tuple[str, ...], metadata: VersionMetadata) -> dict[str, Any]:
    from tensorflow.core.protobuf import meta_graph_pb2

    definitions = {}
    for name in names:
        definition = meta_graph_pb2.SignatureDef(method_name="tensorflow/serving/predict")
        kind = "classify" if name == sig.DEFAULT and metadata.num_classes else name.removesuffix("_pixels")
        if name == sig.DEFAULT and not metadata.num_classes:
            kind = "features"
        pixels = name.endswith("_pixels")
        tensor_in = definition.inputs[sig.PIXELS_INPUT if pixels else sig.IMAGES_INPUT]
        tensor_in.name = f"{name}_{'pixels' if pixels else 'images'}:0"
        tensor_in.dtype = 4 if pixels else 7  # DT_UINT8, DT_STRING
        for dim in [-1, -1, -1, 3] if pixels else [-1]:
            tensor_in.tensor_shape.dim.add(size=dim)
        output = sig.PROBABILITIES_OUTPUT if kind.startswith(sig.CLASSIFY) else sig.FEATURES_OUTPUT
        tensor_out = definition.outputs[output]
        tensor_out.name = f"StatefulPartitionedCall_{name}:0"
        tensor_out.dtype = 1  # DT_FLOAT
        width = metadata.num_classes if output == sig.PROBABILITIES_OUTPUT else metadata.feature_dim
        for dim in (-1, width):
            tensor_out.tensor_shape.dim.add(size=dim)
        definitions[name] = definition
    return definitions
