"""Which versions to unload so that the loaded ones fit the server's ``memory_budget``.

Least recently used first, among versions that are AVAILABLE and idle: never one with requests in
flight, never the one being loaded, never a base that a loaded head runs on. Each version's size is
what it held when it loaded (:attr:`server.backend.ModelBackend.resident_bytes`: RSS growth over
its load, and at least the weights it holds); loading one that was never measured is estimated from
its files on disk.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Protocol

#: A version never measured is estimated at this times the size of its files (its weights, plus the
#: runtime's own). Measured here: a VGG16 with its head holds 528-627 MiB for 610 MiB of files (weights
#: and the twin of its features); at 2x, a budget of 2.5 VGG16s loaded one at a time at startup. Once
#: loaded, a version is measured, and the budget corrected (the others unloaded if it is bigger).
SIZE_ON_DISK_FACTOR = 1.25


class Held(Protocol):
    """What the budget needs of a served version."""

    resident_bytes: int
    last_used: float
    inflight: int


def in_use(versions: Iterable[Held]) -> int:
    """Bytes held by the versions in memory."""
    return sum(version.resident_bytes for version in versions)


def victims(
    loaded: Iterable[Held],
    budget: int,
    needed: int,
    keep: Callable[[Held], bool],
) -> list[Held] | None:
    """The least recently used idle versions to unload so that ``needed`` more bytes fit; ``keep``
    names those that must stay. None when even unloading every candidate would not make room."""
    loaded = list(loaded)
    used = in_use(loaded)
    chosen: list[Held] = []
    for version in sorted(loaded, key=lambda v: v.last_used):
        if used + needed <= budget:
            break
        if version.inflight or keep(version):
            continue
        chosen.append(version)
        used -= version.resident_bytes
    return chosen if used + needed <= budget else None


def size_on_disk(path: Path | str) -> int:
    """Bytes of the files under ``path`` (0 if it is not a local directory, e.g. not yet downloaded)."""
    total = 0
    for dirpath, _dirnames, filenames in os.walk(path):
        for filename in filenames:
            try:
                total += os.stat(os.path.join(dirpath, filename)).st_size
            except OSError:
                continue
    return total
