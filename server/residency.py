"""Which loaded versions stay in memory under ``memory_budget``, and loading them again.

Loading a version that would not fit first unloads the least recently used idle versions
(:func:`server.memory_budget.victims`; never one with requests in flight, never a base a loaded head
runs on). An unloaded version stays served, UNLOADED, and the first request for it loads it again
within the request's deadline: one load for every waiter, at most ``MAX_WAITING_FOR_LOADS`` waiting.

:class:`Residency` is the part of :class:`server.repository.ModelRepository` that does this; it uses
the repository's versions (``_models``), its reconcile lock and its ``_load``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from pathlib import Path

from server import memory_budget
from server.backend import Unloaded
from server.errors import QueueFull, Unavailable
from server.memory import release_memory
from server.served import ServedVersion, VersionState
from server.settings import ServerSettings

log = logging.getLogger("server.repository")

#: Longest a request without a deadline waits for its UNLOADED version to load.
RELOAD_WAIT_S = 120.0
#: Requests waiting for UNLOADED versions to load, at most (more get RESOURCE_EXHAUSTED, to retry).
MAX_WAITING_FOR_LOADS = 256


class Residency:
    """The memory-budget half of the repository (a mixin: see the module's docstring)."""

    # What it uses of the repository (server/repository.py sets them):
    settings: ServerSettings
    _models: dict[str, dict[int, ServedVersion]]
    _reconciling: asyncio.Lock
    _loader: Executor
    _waiting_for_loads: int
    _memory_to_release: int
    _load: Callable[[str, int, Path, tuple], Awaitable[None]]
    _lifecycle: Callable[[str, str, int, float], None]
    _on_change: Callable[[], None]

    def _in_memory(self) -> list[ServedVersion]:
        states = (VersionState.AVAILABLE, VersionState.UNLOADING, VersionState.LOADING)
        return [sv for versions in self._models.values() for sv in versions.values() if sv.state in states]

    def _estimate(self, served: ServedVersion) -> int:
        """Bytes a version will hold: what it held when last loaded, else twice its files."""
        if served.resident_bytes:
            return served.resident_bytes
        if isinstance(served.path, Path):
            return int(memory_budget.size_on_disk(served.path) * memory_budget.SIZE_ON_DISK_FACTOR)
        return sum(size for _path, size, _etag in served.path.files) * 2  # a bucket's version

    async def _fit(self, needed: int, keep: ServedVersion) -> bool:
        """Unload least recently used idle versions until ``keep`` (being loaded: ``needed`` more
        bytes; loaded: what it measured) fits the budget; False if it cannot (the rest is busy)."""
        budget = self.settings.memory_budget
        if budget is None:
            return True
        in_memory = self._in_memory()
        evictable = [sv for sv in in_memory if sv is not keep and sv.state is VersionState.AVAILABLE]
        fixed = sum(sv.resident_bytes for sv in in_memory if sv is not keep and sv not in evictable)
        fixed += keep.resident_bytes if keep.state is VersionState.AVAILABLE else 0
        chosen = memory_budget.victims(evictable, budget - fixed, needed, keep=self._needed_by_others)
        if chosen is None and needed > budget and not fixed:
            # Larger than the whole budget: served alone, once every other version is idle.
            chosen = (
                evictable
                if all(not sv.inflight and not self._needed_by_others(sv) for sv in evictable)
                else None
            )
        if chosen is None:
            return False
        for victim in chosen:
            await self._evict(victim)
        if chosen:
            # NOTE: before the load that needs the room: an unloaded SavedModel is a web of reference
            # cycles that only the cycle collector frees, and glibc keeps what is freed until trimmed
            # (measured: five VGG16s round-robin under a two-version budget held all five without it).
            await asyncio.get_running_loop().run_in_executor(self._loader, release_memory)
        return True

    def _needed_by_others(self, served: ServedVersion) -> bool:
        """Whether a loaded version relies on ``served`` (a base that a resident head runs on)."""
        return bool(self._heads_of(served))

    def _heads_of(self, base: ServedVersion) -> list[ServedVersion]:
        return [
            sv
            for versions in self._models.values()
            for sv in versions.values()
            if sv.base is base and sv.state in (VersionState.AVAILABLE, VersionState.LOADING)
        ]

    async def _evict(self, served: ServedVersion, reason: str = "") -> None:
        """Unload an idle version to make room (or, with ``reason``, because its base is going); it
        stays served, UNLOADED, until a request loads it."""
        started = time.monotonic()
        budget = self.settings.memory_budget or 0
        for batcher in served.batchers.values():
            await batcher.close()
        served.batchers = {}
        model, served.model = served.model, None
        if model is not None:
            served.model = Unloaded(model)
            model.close()
        served.state = VersionState.UNLOADED
        served.load_started = False
        served.base = None
        served.error = reason or (
            f"unloaded to stay within memory_budget ({budget / 2**20:.0f} MiB; least recently used, "
            f"{served.resident_bytes / 2**20:.0f} MiB); a request loads it again"
        )
        self._memory_to_release = 2
        event = "unload" if reason else "evict"  # evictions_total counts the budget's only
        self._lifecycle(event, served.name, served.version, time.monotonic() - started)
        log.info("%s v%d UNLOADED: %s", served.name, served.version, served.error)
        self._on_change()

    async def _ensure_loaded(self, served: ServedVersion, deadline: float | None) -> None:
        """Load an UNLOADED version for a request, within its deadline (one load for all waiters)."""
        if self._waiting_for_loads >= MAX_WAITING_FOR_LOADS:
            raise QueueFull(
                f"{self._waiting_for_loads} requests are waiting for unloaded versions to load; "
                "retry with backoff"
            )
        if served.reload is None or served.reload.done():
            served.reload = asyncio.get_running_loop().create_task(self._reload(served))
        wait = RELOAD_WAIT_S if deadline is None else max(0.0, deadline - time.monotonic())
        self._waiting_for_loads += 1
        try:
            await asyncio.wait_for(asyncio.shield(served.reload), wait)
        except TimeoutError:
            raise Unavailable(
                f"{served.name} v{served.version} is loading (it was unloaded to fit memory_budget) and was "
                f"not ready within the request's deadline; retry in a few seconds"
            ) from None
        finally:
            self._waiting_for_loads -= 1
        if served.state is not VersionState.AVAILABLE:
            raise Unavailable(f"{served.name} v{served.version}: {served.error}; retry in a few seconds")

    async def _reload(self, served: ServedVersion) -> None:
        async with self._reconciling:
            if served.state is not VersionState.UNLOADED:
                return
            if not await self._fit(self._estimate(served), keep=served):
                used = memory_budget.in_use(self._in_memory())
                served.error = (
                    f"does not fit memory_budget now ({used / 2**20:.0f} of "
                    f"{(self.settings.memory_budget or 0) / 2**20:.0f} MiB held by versions with requests "
                    "in flight)"
                )
                return
            served.state, served.load_started = VersionState.LOADING, False
            await self._load(served.name, served.version, served.path, served.fingerprint)
