"""What the serving core needs from a loaded model version: the :class:`ModelBackend` interface.

The repository loads a version with a :data:`BackendLoader` (in a loader thread), the batcher runs
its batches (``run``, from model threads), the API reads its metadata, signatures and runtime. Two
implementations:

- :class:`server.model.LoadedModel`: a SavedModel in TensorFlow, its network on TensorFlow or on ONNX
  Runtime (the default, :func:`server.model.load_saved_model`);
- the NumPy fake of the tests (``tests/fake_backend.py``): deterministic answers, injectable delays
  and failures, so the core is tested in milliseconds. One contract test runs the same assertions on
  both, so the fake cannot drift.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from model_format import signatures as sig

if TYPE_CHECKING:
    from server.batching import BatchOutcome
    from server.runtime import RuntimeOptions

#: Function kinds a request can ask for -> (bytes signature, output key).
KINDS = {
    "classify": (sig.CLASSIFY, sig.PROBABILITIES_OUTPUT),
    "features": (sig.FEATURES, sig.FEATURES_OUTPUT),
}


class LoadError(Exception):
    """The version cannot be served; the message says why (shown as the FAILED reason)."""


@dataclass(frozen=True)
class VersionMetadata:
    input_size: int
    num_classes: int
    feature_dim: int
    signature_names: tuple[str, ...]
    labels: tuple[str, ...]
    preprocessing: str
    source: str
    created_at: dt.datetime | None


class ModelBackend(Protocol):
    """A loaded version. ``run`` and ``call_signature`` are called from model threads (concurrently);
    everything else from the event loop."""

    name: str
    version: int
    metadata: VersionMetadata
    #: The runtime of the default signature's network ("tensorflow", "onnxruntime", ...) and why.
    runtime: str
    runtime_detail: str
    #: What the default signature's network computes in ("fp32", "bf16", "int8"), the figures of the
    #: check or gate it passed and why a precision asked is not used ("" when there is nothing to say).
    precision: str
    precision_detail: str
    #: TF Serving's GetModelMetadata: SignatureDef protos by signature name.
    signature_defs: Mapping[str, Any]
    #: Memory the version holds, in bytes, measured at load (0 when unknown).
    resident_bytes: int

    @property
    def signature_names(self) -> tuple[str, ...]: ...

    def has(self, kind: str) -> bool:
        """Whether the version has the ``kind`` ("classify" or "features") function."""

    def kind_of(self, signature: str) -> str | None:
        """The kind a signature belongs to; None for a signature the version does not have."""

    def runtime_of(self, kind: str) -> str:
        """The runtime that runs ``kind`` (the ``runtime`` label of its batches' metrics)."""

    def precision_of(self, kind: str) -> str:
        """The precision ``kind`` is computed in (the ``precision`` label of its batches' metrics)."""

    def run(self, kind: str, images: list[bytes]) -> BatchOutcome:
        """Rows for a batch of encoded images; an image that cannot be decoded fails only its index."""

    def call_signature(self, signature: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run a signature by name on NumPy inputs (TF Serving's Predict with pixels); ValueError for
        inputs the signature refuses."""

    def close(self) -> None:
        """Release what the version holds; it is never called again afterwards."""


#: ``loader(name, version, directory, options) -> backend``; raises :class:`LoadError` with a reason.
BackendLoader = Callable[[str, int, Path, "RuntimeOptions"], ModelBackend]


class Unloaded:
    """What the server keeps of a version it unloaded to stay within its memory budget: its metadata,
    signatures and runtime, without the network (so that status, metadata and request checks answer
    without loading it). ``run`` is never called: a request loads the version first."""

    def __init__(self, model: ModelBackend) -> None:
        self.name, self.version = model.name, model.version
        self.metadata = model.metadata
        self.runtime, self.runtime_detail = model.runtime, model.runtime_detail
        self.precision, self.precision_detail = model.precision, model.precision_detail
        self.signature_defs = model.signature_defs
        self.resident_bytes = model.resident_bytes
        self._kinds = {kind: model.has(kind) for kind in KINDS}
        self._signatures = {name: model.kind_of(name) for name in model.signature_names}
        kinds = [kind for kind, present in self._kinds.items() if present]
        self._runtimes = {kind: model.runtime_of(kind) for kind in kinds}
        self._precisions = {kind: model.precision_of(kind) for kind in kinds}

    @property
    def signature_names(self) -> tuple[str, ...]:
        return self.metadata.signature_names

    def has(self, kind: str) -> bool:
        return self._kinds.get(kind, False)

    def kind_of(self, signature: str) -> str | None:
        if signature == sig.DEFAULT:
            return "classify" if self.has("classify") else "features"
        return self._signatures.get(signature)

    def runtime_of(self, kind: str) -> str:
        return self._runtimes.get(kind, self.runtime)

    def precision_of(self, kind: str) -> str:
        return self._precisions.get(kind, self.precision)

    def run(self, kind: str, images: list[bytes]) -> BatchOutcome:
        raise RuntimeError(
            f"{self.name} v{self.version} is unloaded; the repository loads it before a request"
        )

    def call_signature(self, signature: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        raise RuntimeError(
            f"{self.name} v{self.version} is unloaded; the repository loads it before a request"
        )

    def close(self) -> None:
        """Nothing to release."""
