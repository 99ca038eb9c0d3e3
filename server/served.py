"""What the repository serves: one version's lifecycle record, what a request asks for, and the
snapshot of a model that status responses show."""

from __future__ import annotations

import asyncio
import enum
from dataclasses import dataclass, field
from pathlib import Path

from server.backend import ModelBackend, VersionMetadata
from server.batching import Batcher, BatchStats
from storage.model_cache import RemoteVersion


class VersionState(enum.Enum):
    LOADING = "LOADING"
    AVAILABLE = "AVAILABLE"
    UNLOADING = "UNLOADING"
    FAILED = "FAILED"
    UNLOADED = "UNLOADED"  # served, not in memory (memory_budget): a request loads it


@dataclass(frozen=True)
class ModelRef:
    """What a request asks for: a model, and optionally a version or a version label."""

    name: str
    version: int | None = None
    label: str | None = None


@dataclass
class ServedVersion:
    """One version's lifecycle, its loaded model and its batchers (one per function kind)."""

    name: str
    version: int
    path: Path | RemoteVersion  # a bucket's version is a RemoteVersion until copied to the local cache
    fingerprint: tuple
    state: VersionState = VersionState.LOADING
    error: str = ""
    model: ModelBackend | None = None
    batchers: dict[str, Batcher] = field(default_factory=dict)
    inflight: int = 0
    idle: asyncio.Event = field(default_factory=asyncio.Event)
    load_started: bool = False
    #: Memory the version holds (measured at load; kept while UNLOADED, for the next estimate).
    resident_bytes: int = 0
    #: time.monotonic() of the last request that leased it (least recently used goes first).
    last_used: float = 0.0
    #: A load a request asked for (UNLOADED -> AVAILABLE); every waiting request awaits this one.
    reload: asyncio.Task | None = None
    #: The base version a fine-tuned version runs on as a head (server/heads.py); None: loaded whole.
    base: ServedVersion | None = None
    #: Hash of the version's network (storage.local.content_key), once a head asked for it.
    content_key: str | None = None

    @property
    def metadata(self) -> VersionMetadata | None:
        return self.model.metadata if self.model else None

    def stats(self) -> BatchStats:
        total = BatchStats()
        for batcher in self.batchers.values():
            total.requests += batcher.stats.requests
            total.images += batcher.stats.images
            total.batches += batcher.stats.batches
            total.max_batch_size = max(total.max_batch_size, batcher.stats.max_batch_size)
            total.batch_sizes.update(batcher.stats.batch_sizes)
        return total


@dataclass
class ModelView:
    """A snapshot of one model for status responses."""

    name: str
    default_version: int
    versions: list[ServedVersion]
    version_labels: dict[str, int]
