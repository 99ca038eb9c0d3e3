"""Fine-tuned versions served as a head on a shared base: one copy of the base's network for all of
its heads, and their requests in the base's batches.

A fine-tuned version's manifest names its base (model, version, and ``source.base_hash``: the hash
of the base's network) and its head (``head.npz``, :mod:`graphs.head`). When the server holds that
base, the version loads as a :class:`HeadBackend`: its features are the base's, its probabilities the
head's NumPy layers on them; no TensorFlow load, no ONNX twin to convert (a new head answers within a
poll of its publication). Its requests go through :class:`HeadBatcher` into the base's ``features``
batcher, so that requests for different heads of one base (and for the base itself) share batches;
each head then runs on its own rows. A version whose base is not held, or holds another network (the
hash differs), is loaded whole, as any other.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from graphs import head as graph_head
from model_format import signatures as sig
from model_format.manifest import MANIFEST_FILE
from server.backend import KINDS, LoadError, ModelBackend, VersionMetadata
from server.batching import BatchOutcome, BatchStats


@dataclass(frozen=True)
class HeadPlan:
    """What a fine-tuned version's manifest says of its base and its head."""

    base_model: str
    base_version: int
    base_hash: str
    layers: list[dict[str, Any]]
    file: str
    sha256: str


def plan_of(path: Path) -> HeadPlan | None:
    """The version's head and base, if it can be served as a head (a manifest without them: None)."""
    try:
        manifest = json.loads((Path(path) / MANIFEST_FILE).read_text())
    except (OSError, ValueError):
        return None
    source, head = manifest.get("source") or {}, manifest.get("head") or {}
    if source.get("kind") != "finetune" or "file" not in head or not source.get("base_hash"):
        return None
    return HeadPlan(
        str(source["base_model"]),
        int(source["base_version"]),
        str(source["base_hash"]),
        list(head["layers"]),
        str(head["file"]),
        str(head["sha256"]),
    )


class HeadBackend:
    """A fine-tuned version as the base's features plus its NumPy head (a :class:`ModelBackend`)."""

    def __init__(
        self,
        name: str,
        version: int,
        path: Path,
        base: ModelBackend,
        plan: HeadPlan,
        metadata: VersionMetadata,
        signature_defs: dict[str, Any],
    ) -> None:
        self.name, self.version, self.path = name, version, path
        self.base = base
        self.plan = plan
        self.metadata = metadata
        self.signature_defs = signature_defs
        data = (Path(path) / plan.file).read_bytes()
        if graph_head.sha256_of(data) != plan.sha256:
            raise LoadError(f"{plan.file} does not match the sha256 its manifest records")
        self.arrays = graph_head.from_bytes(data)
        self.resident_bytes = int(sum(array.nbytes for array in self.arrays.values()))
        self.runtime = base.runtime_of("features")
        self.precision = base.precision_of("features")
        shared = base.precision_detail
        self.precision_detail = f"the base's features: {shared}" if shared else ""
        self.runtime_detail = (
            f"head on {base.name} v{base.version}'s features ({base.runtime_of('features')}), its layers "
            "in NumPy: the base's network is shared by all of its heads"
        )

    @classmethod
    def load(cls, name: str, version: int, path: Path, base: ModelBackend, plan: HeadPlan) -> HeadBackend:
        """Metadata, signatures and the head's arrays; nothing of TensorFlow's (loader thread)."""
        from server.model import read_metadata, read_signature_defs

        manifest = json.loads((Path(path) / MANIFEST_FILE).read_text())
        metadata = read_metadata(path, list(manifest.get("signatures", {})))
        if (
            metadata.feature_dim != base.metadata.feature_dim
            or metadata.input_size != base.metadata.input_size
        ):
            raise LoadError("the head's features do not match its base's (input size or width)")
        signature_defs = read_signature_defs(path, metadata.signature_names)
        return cls(name, version, path, base, plan, metadata, signature_defs)

    # --- ModelBackend -------------------------------------------------------------------------------

    @property
    def signature_names(self) -> tuple[str, ...]:
        return self.metadata.signature_names

    def has(self, kind: str) -> bool:
        return kind in KINDS

    def kind_of(self, signature: str) -> str | None:
        if signature == sig.DEFAULT:
            return "classify"
        if signature not in self.signature_names:
            return None
        return "classify" if signature.startswith(sig.CLASSIFY) else "features"

    def runtime_of(self, kind: str) -> str:
        return self.base.runtime_of("features")

    def precision_of(self, kind: str) -> str:
        return self.base.precision_of("features")

    def apply(self, features: np.ndarray) -> np.ndarray:
        """The head's probabilities for feature rows."""
        return graph_head.apply(self.plan.layers, self.arrays, features)

    def run(self, kind: str, images: list[bytes]) -> BatchOutcome:
        outcome = self.base.run("features", images)
        if kind == "features":
            return outcome
        return BatchOutcome(self.apply(outcome.outputs), outcome.errors)

    def call_signature(self, signature: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        kind = self.kind_of(signature)
        pixels = signature.endswith("_pixels")
        base_signature = sig.FEATURES_PIXELS if pixels else sig.FEATURES
        features = self.base.call_signature(base_signature, inputs)[sig.FEATURES_OUTPUT]
        if kind == "features":
            return {sig.FEATURES_OUTPUT: features}
        return {sig.PROBABILITIES_OUTPUT: self.apply(features)}

    def close(self) -> None:
        """The head's arrays go with it; the base is the repository's to unload."""


class HeadBatcher:
    """A head's requests for ``kind``, queued in its base's ``features`` batcher (where they share
    batches with its other heads' and the base's own), then the head's layers on their rows.

    Has what the repository and the API use of a :class:`server.batching.Batcher`: ``submit``,
    ``stats``, ``queued_items``, ``running_items``, ``close``."""

    def __init__(self, features_batcher: Any, head: HeadBackend, kind: str) -> None:
        self.features_batcher = features_batcher
        self.head = head
        self.kind = kind
        self.stats = BatchStats()
        self._pending = 0

    @property
    def queued_items(self) -> int:
        return self._pending

    @property
    def running_items(self) -> int:
        return 0

    async def submit(self, items: list[Any], deadline: float | None = None) -> np.ndarray:
        self.stats.requests += 1
        self.stats.images += len(items)
        self._pending += len(items)
        try:
            rows = await self.features_batcher.submit(items, deadline)
        finally:
            self._pending -= len(items)
        # NOTE: on the event loop: a few small matrix products (rows x feature width x hidden units).
        return rows if self.kind == "features" else self.head.apply(rows)

    async def close(self, timeout_s: float = 30.0) -> None:
        """The base's batcher is the base's: nothing of this head's to stop."""
