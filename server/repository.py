"""Which model versions exist under the model root, which are served, and hot reload.

Layout: ``<model_root>/<name>/<version>/`` where ``version`` is a positive integer and the directory
holds a SavedModel (``saved_model.pb``). Anything else (staging directories, stray files, names that
are not valid model names) is ignored with one log line.

Every ``poll_interval_s`` the repository compares what is on disk with what is loaded:

1. The *desired* versions of each model follow its version policy (``latest`` N, ``all`` or
   ``specific``), among versions that are on disk and did not fail to load as they are now.
2. Missing desired versions are loaded and warmed up (one at a time, in a loader thread) before they
   take traffic. A version that fails is FAILED with its reason and is retried only when its files
   change; the desired set is then recomputed, so the previous version keeps serving.
3. Only then are versions that are no longer desired unloaded: they stop taking new requests
   (UNLOADING) and are released once their in-flight requests have finished.

Requests ``lease`` a version for their duration, which is what lets an unload wait for them.

With a ``memory_budget``, loading a version that would not fit first unloads the least recently
used idle versions; they stay served, UNLOADED, and a request for one loads it again within the
request's deadline (:mod:`server.residency`). The records it keeps are in :mod:`server.served`.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Executor, ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path

from server import heads
from server.backend import KINDS, BackendLoader, LoadError, ModelBackend
from server.batching import Batcher
from server.discovery import check_model_name, select_versions
from server.errors import FailedPrecondition, NotFound, Unavailable
from server.heads import HeadBackend, HeadBatcher
from server.memory import release_memory
from server.residency import Residency
from server.runtime import RuntimeOptions, cache_dir_for, default_onnx_threads
from server.served import ModelRef, ModelView, ServedVersion, VersionState
from server.settings import ServerSettings, SettingsError, reload_model_configs
from storage.errors import RootUnavailable, StorageError, UnsupportedRoot
from storage.local import content_key
from storage.model_roots import open_model_root

log = logging.getLogger(__name__)

UNLOAD_WAIT_S = 60.0


class ModelRepository(Residency):
    """Discovers, loads, serves and unloads model versions under ``settings.model_root``."""

    def __init__(
        self,
        settings: ServerSettings,
        model_executor: Executor,
        on_change: Callable[[], None] | None = None,
        on_batch: Callable[[str, int, str, int, float, float, str, str], None] | None = None,
        on_lifecycle: Callable[[str, str, int, float], None] | None = None,
        loader: BackendLoader | None = None,
    ) -> None:
        """``loader`` loads one version (default: :func:`server.model.load_saved_model`, TensorFlow)."""
        if loader is None:
            from server.model import load_saved_model

            loader = load_saved_model
        self._load_backend = loader
        self.settings = settings
        self.root = settings.model_root
        self._model_executor = model_executor
        self._loader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="model-loader")
        # NOTE: listing the root (an object store: network calls that can stall for minutes) runs in a
        # thread of its own: never on the event loop, never behind a load.
        self._scanner = ThreadPoolExecutor(max_workers=1, thread_name_prefix="model-root-scan")
        self._root_unavailable: str | None = None  # why the root could not be listed at the last scan
        self._models: dict[str, dict[int, ServedVersion]] = {}
        try:  # a directory in place, or an object store through a local cache
            self._discovery = open_model_root(settings.model_root, settings.state_dir)
        except UnsupportedRoot as exc:
            raise SettingsError(str(exc)) from None
        self._known_names: set[str] = set()
        self._memory_to_release = 0
        self._on_change = on_change or (lambda: None)
        self._on_batch = on_batch
        self._on_lifecycle = on_lifecycle
        self._config_mtime: int | None = None
        self._poll_task: asyncio.Task | None = None
        self._reconciling = asyncio.Lock()
        self._waiting_for_loads = 0
        self.initial_load_done = asyncio.Event()

    # --- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        """Load what is on disk now, then keep polling in the background."""
        await self.reconcile()
        self.initial_load_done.set()
        self._on_change()
        self._poll_task = asyncio.get_running_loop().create_task(self._poll_forever(), name="model-root-poll")

    async def _poll_forever(self) -> None:
        while True:
            await asyncio.sleep(self.settings.poll_interval_s)
            try:
                await self.reconcile()
            except Exception:  # a bad poll must not end hot reload; the next one retries
                log.exception("model root poll failed")

    def _reload_config_if_changed(self) -> None:
        if self.settings.config is None:
            return
        try:
            mtime = self.settings.config.stat().st_mtime_ns
        except OSError:
            return
        if mtime != self._config_mtime:
            if self._config_mtime is not None:
                try:
                    self.settings = reload_model_configs(self.settings)
                    log.info("reloaded model configs from %s", self.settings.config)
                except ValueError as exc:
                    log.error("config file change ignored: %s", exc)
            self._config_mtime = mtime

    async def reconcile(self) -> None:
        """One pass of: scan, load what is desired and missing, then unload what is not desired.

        A root that cannot be listed (an object store down or stalled, a bucket gone) is a failed
        poll: what is loaded keeps serving, and the next poll tries again."""
        async with self._reconciling:
            self._reload_config_if_changed()
            scanned = await self.scan()
            if scanned is None:
                return
            plan = self.register_pending(*scanned)
            changed = False
            for name, (on_disk, fingerprints) in sorted(plan.items()):
                changed |= await self._reconcile_model(name, on_disk, fingerprints)
            if changed:
                self._on_change()
            if self._memory_to_release:
                # Here, once the frames that held the unloaded versions are gone; and again at the next
                # poll, for what requests finishing meanwhile (their threads' last calls) still held.
                self._memory_to_release -= 1
                await asyncio.get_running_loop().run_in_executor(self._loader, release_memory)

    async def scan(self) -> tuple[dict, dict] | None:
        """The published versions by model and their fingerprints, listed in the scan thread; None
        when the root cannot be listed now (logged once per outage, not per poll)."""
        try:
            on_disk, fingerprints = await asyncio.get_running_loop().run_in_executor(
                self._scanner, self._scan_blocking
            )
        except RootUnavailable as exc:
            if self._root_unavailable is None:
                loaded = sum(len(versions) for versions in self._models.values())
                log.warning(
                    "%s; the %d versions loaded keep serving, and the root is listed again every %.1f s",
                    exc,
                    loaded,
                    self.settings.poll_interval_s,
                )
            self._root_unavailable = str(exc)
            return None
        if self._root_unavailable is not None:
            log.info("model root %s can be listed again", self.root)
            self._root_unavailable = None
        return on_disk, fingerprints

    def _scan_blocking(self) -> tuple[dict, dict]:
        on_disk = self._discovery.scan()
        fingerprints = {
            name: {v: self._discovery.fingerprint(p) for v, p in versions.items()}
            for name, versions in on_disk.items()
        }
        return on_disk, fingerprints

    def register_pending(
        self, on_disk: dict[str, dict[int, Path]], all_fingerprints: dict[str, dict[int, tuple]]
    ) -> dict[str, tuple[dict[int, Path], dict[int, tuple]]]:
        """Show every version about to be loaded as LOADING at once (so that a request for a model
        further down the load order hears "loading, retry" rather than "unknown model").

        Returns each model's versions on disk and their fingerprints, for :meth:`_reconcile_model`.
        """
        plan = {}
        for name in set(on_disk) | set(self._models):
            versions_on_disk = on_disk.get(name, {})
            fingerprints = all_fingerprints.get(name, {})
            versions = self._models.setdefault(name, {})
            for version in self._desired(name, versions_on_disk, fingerprints):
                if version not in versions or versions[version].state is VersionState.FAILED:
                    versions[version] = ServedVersion(
                        name, version, versions_on_disk[version], fingerprints[version]
                    )
            plan[name] = (versions_on_disk, fingerprints)
        return plan

    def _desired(self, name: str, on_disk: dict[int, Path], fingerprints: dict[int, tuple]) -> set[int]:
        versions = self._models.get(name, {})
        loadable = [
            v
            for v in on_disk
            if not (
                v in versions
                and versions[v].state is VersionState.FAILED
                and versions[v].fingerprint == fingerprints[v]
            )
        ]
        return select_versions(self.settings.model_config(name), loadable)

    async def _reconcile_model(
        self, name: str, on_disk: dict[int, Path], fingerprints: dict[int, tuple]
    ) -> bool:
        versions = self._models.setdefault(name, {})
        changed = False
        # Forget FAILED entries whose directory is gone.
        for version in [
            v for v, sv in versions.items() if sv.state is VersionState.FAILED and v not in on_disk
        ]:
            del versions[version]
            changed = True
        while True:
            desired = self._desired(name, on_disk, fingerprints)
            to_load = sorted(
                v
                for v in desired
                if v not in versions
                or versions[v].state is VersionState.FAILED
                or (versions[v].state is VersionState.LOADING and not versions[v].load_started)
            )
            if not to_load:
                break
            for version in reversed(to_load):  # newest first: it is the one that will answer
                await self._load(name, version, on_disk[version], fingerprints[version])
                changed = True
        for version, served in list(versions.items()):
            if served.state is VersionState.AVAILABLE and version not in desired:
                await self._unload(served)
                changed = True
            elif served.state is VersionState.LOADING and not served.load_started and version not in desired:
                del versions[version]  # planned, then no longer wanted (e.g. a newer one failed meanwhile)
            elif served.state is VersionState.UNLOADED and version not in desired and served.reload is None:
                del versions[version]  # unloaded for memory, then deleted or no longer selected
                changed = True
        if not versions:
            del self._models[name]
        return changed

    async def _load(self, name: str, version: int, path: Path, fingerprint: tuple) -> None:
        served = self._models[name].get(version)
        if served is None or served.state is not VersionState.LOADING or served.load_started:
            served = ServedVersion(name, version, path, fingerprint)
            self._models[name][version] = served
        await self._fit(self._estimate(served), keep=served)
        served.load_started = True
        self._on_change()
        started = time.monotonic()
        log.info("loading %s v%d from %s", name, version, path)
        try:
            model = await self._load_model(served)
        except LoadError as exc:
            served.state, served.error = VersionState.FAILED, str(exc)
            log.error(
                "failed to load %s v%d after %.1f s: %s", name, version, time.monotonic() - started, exc
            )
            self._lifecycle("load_failed", name, version, time.monotonic() - started)
            return
        except Exception as exc:  # anything else is still this version's failure, not the server's
            served.state, served.error = (
                VersionState.FAILED,
                f"unexpected error while loading: {type(exc).__name__}",
            )
            log.exception("failed to load %s v%d", name, version)
            self._lifecycle("load_failed", name, version, time.monotonic() - started)
            return
        served.model = model
        served.resident_bytes = max(model.resident_bytes, 0)
        if served.base is not None:  # a head: its requests join the base's features batches
            features = served.base.batchers["features"]
            served.batchers = {kind: HeadBatcher(features, model, kind) for kind in KINDS}
        else:
            served.batchers = {kind: self._make_batcher(served, kind) for kind in KINDS if model.has(kind)}
        served.idle.set()
        served.error = ""
        served.state = VersionState.AVAILABLE
        served.last_used = time.monotonic()
        self._lifecycle("load", name, version, time.monotonic() - started)
        log.info(
            "%s v%d is AVAILABLE (%.1f s, %.0f MiB)",
            name,
            version,
            time.monotonic() - started,
            served.resident_bytes / 2**20,
        )
        await self._fit(0, keep=served)  # measured now: unload others if it took more than estimated

    async def _load_model(self, served: ServedVersion) -> ModelBackend:
        """The version's local copy (itself for a local root), then its load: as a head on a base
        this server holds when its manifest allows (server/heads.py), else whole. Loader thread."""
        loop = asyncio.get_running_loop()
        served.path = await loop.run_in_executor(self._loader, self._materialize, served)
        plan = await loop.run_in_executor(self._loader, heads.plan_of, served.path)
        base = await self._base_for(plan) if plan is not None else None
        served.base = base
        if base is not None:
            load = functools.partial(
                HeadBackend.load, served.name, served.version, served.path, base.model, plan
            )
            return await loop.run_in_executor(self._loader, load)
        options = self._runtime_options(served.name)
        load = functools.partial(self._load_backend, served.name, served.version, served.path, options)
        return await loop.run_in_executor(self._loader, load)

    def _materialize(self, served: ServedVersion) -> Path:
        try:
            return self._discovery.materialize(served.name, served.version, served.path)
        except StorageError as exc:
            raise LoadError(str(exc)) from None

    async def _base_for(self, plan: heads.HeadPlan) -> ServedVersion | None:
        """The served version a head runs on: its manifest's base, held here with the same network
        (loaded first if it was UNLOADED); None to load the head's version whole."""
        base = self._models.get(plan.base_model, {}).get(plan.base_version)
        if base is None:
            return None
        if base.state is VersionState.LOADING and not base.load_started:
            # Planned in this reconcile, after the head (the load order is by name): load it first, so
            # that a server starting with a base and its heads holds the base once.
            # NOTE: the caller holds the reconcile lock.
            await self._load(base.name, base.version, base.path, base.fingerprint)
        if base.state not in (VersionState.AVAILABLE, VersionState.UNLOADED):
            return None
        if base.content_key is None:
            base.content_key = await asyncio.get_running_loop().run_in_executor(
                self._loader, content_key, Path(base.path)
            )
        if base.content_key != plan.base_hash:
            log.info(
                "%s v%d is not the network its heads were trained on: they load whole",
                base.name,
                base.version,
            )
            return None
        if base.state is VersionState.UNLOADED:  # NOTE: the caller holds the reconcile lock
            base.state, base.load_started = VersionState.LOADING, False
            await self._load(base.name, base.version, base.path, base.fingerprint)
        return base if base.state is VersionState.AVAILABLE and "features" in base.batchers else None

    def _runtime_options(self, name: str) -> RuntimeOptions:
        settings = self.settings
        config = settings.model_config(name)
        return RuntimeOptions(
            runtime=settings.runtime_for(name),
            precision=settings.precision_for(name),
            cache_dir=cache_dir_for(settings.state_dir),
            onnx_threads=settings.onnx_threads or default_onnx_threads(settings.model_threads),
            timing_batch=config.max_batch_size or settings.max_batch_size,
        )

    def _make_batcher(self, served: ServedVersion, kind: str) -> Batcher:
        config = self.settings.model_config(served.name)
        model = served.model
        on_batch = None
        if self._on_batch is not None:
            report = self._on_batch

            def report_batch(size: int, queued_s: float, model_s: float) -> None:
                report(
                    served.name,
                    served.version,
                    kind,
                    size,
                    queued_s,
                    model_s,
                    model.runtime_of(kind),
                    model.precision_of(kind),
                )

            on_batch = report_batch

        batcher = Batcher(
            lambda images: model.run(kind, images),
            self._model_executor,
            name=f"{served.name} v{served.version} {kind}",
            max_batch_size=config.max_batch_size or self.settings.max_batch_size,
            timeout_s=(
                config.batch_timeout_ms
                if config.batch_timeout_ms is not None
                else self.settings.batch_timeout_ms
            )
            / 1000.0,
            max_queued_items=self.settings.max_queued_images,
            concurrency=self.settings.model_threads,
            batching=self.settings.batching,
            on_batch=on_batch,
        )
        batcher.start()
        return batcher

    async def _unload(self, served: ServedVersion) -> None:
        for head in self._heads_of(served):
            await self._evict(
                head,
                f"its base {served.name} v{served.version} was unloaded; a request loads it again "
                "(whole, if the base is no longer served)",
            )
        started = time.monotonic()
        served.state = VersionState.UNLOADING
        self._on_change()
        log.info("unloading %s v%d (%d requests in flight)", served.name, served.version, served.inflight)
        try:
            await asyncio.wait_for(served.idle.wait(), UNLOAD_WAIT_S)
        except TimeoutError:
            log.warning(
                "%s v%d: in-flight requests still running after %.0f s; unloading anyway",
                served.name,
                served.version,
                UNLOAD_WAIT_S,
            )
        for batcher in served.batchers.values():
            await batcher.close()
        served.batchers = {}
        model, served.model = served.model, None
        if model is not None:
            model.close()
        self._models.get(served.name, {}).pop(served.version, None)
        self._memory_to_release = 2  # release passes still to run (see reconcile)
        self._lifecycle("unload", served.name, served.version, time.monotonic() - started)
        log.info("unloaded %s v%d in %.1f s", served.name, served.version, time.monotonic() - started)

    def _lifecycle(self, event: str, name: str, version: int, seconds: float) -> None:
        if self._on_lifecycle is not None:
            self._on_lifecycle(event, name, version, seconds)

    async def close(self) -> None:
        if self._poll_task is not None:
            self._poll_task.cancel()
            try:
                await self._poll_task
            except asyncio.CancelledError:
                pass
        async with self._reconciling:
            for versions in list(self._models.values()):
                for served in list(versions.values()):
                    if served.state is VersionState.AVAILABLE:
                        await self._unload(served)
        self._loader.shutdown(wait=False, cancel_futures=True)
        self._scanner.shutdown(wait=False, cancel_futures=True)

    # --- routing ---------------------------------------------------------------------------------

    @property
    def model_executor(self) -> Executor:
        """The threads model calls run on (batchers use it; so do direct signature calls)."""
        return self._model_executor

    def model_names(self) -> list[str]:
        return sorted(self._models)

    def default_version(self, name: str) -> int:
        """The newest version that answers (UNLOADED ones answer too: a request loads them)."""
        answering = (VersionState.AVAILABLE, VersionState.UNLOADED)
        available = [v for v, sv in self._models.get(name, {}).items() if sv.state in answering]
        return max(available) if available else 0

    def available_counts(self) -> dict[str, int]:
        """Number of AVAILABLE versions per model (a model whose versions all went away counts 0)."""
        counts = {name: 0 for name in self._known_names}
        for name, versions in self._models.items():
            counts[name] = sum(sv.state is VersionState.AVAILABLE for sv in versions.values())
        self._known_names.update(counts)
        return counts

    def load(self) -> list[tuple[str, int, int, int, int]]:
        """(model, version, queued images, images in model calls, requests in flight) per loaded version.

        NOTE: called from the metrics HTTP thread at scrape time; it only reads (copies of the dicts,
        plain ints), so a scrape never waits for the event loop and sees a consistent-enough snapshot.
        """
        rows = []
        for name, versions in list(self._models.items()):
            for version, served in list(versions.items()):
                batchers = list(served.batchers.values())
                if not batchers and not served.inflight:
                    continue  # loading or failed: nothing queued
                queued = sum(b.queued_items for b in batchers)
                running = sum(b.running_items for b in batchers)
                rows.append((name, version, queued, running, served.inflight))
        return rows

    def memory(self) -> list[tuple[str, int, int]]:
        """(model, version, bytes) of each version in memory (read from the metrics thread, as load())."""
        return [
            (name, version, served.resident_bytes)
            for name, versions in list(self._models.items())
            for version, served in list(versions.items())
            if served.state is VersionState.AVAILABLE
        ]

    def any_available(self) -> bool:
        return any(self.default_version(name) for name in self._models)

    def resolve(self, ref: ModelRef) -> ServedVersion:
        """The AVAILABLE version a request asks for, or an error naming what exists."""
        check_model_name(ref.name)
        versions = self._models.get(ref.name)
        if not versions:
            known = ", ".join(self.model_names()) or "none (the model root is empty)"
            raise NotFound(f"unknown model {ref.name!r}; available models: {known}")
        version = ref.version
        if ref.label is not None:
            labels = self.settings.model_config(ref.name).version_labels
            if ref.label not in labels:
                known = ", ".join(sorted(labels)) or "none configured"
                raise NotFound(f"unknown version label {ref.label!r} for model {ref.name!r}; labels: {known}")
            version = labels[ref.label]
        if version is None:
            version = self.default_version(ref.name)
            if not version:
                if any(sv.state is VersionState.LOADING for sv in versions.values()):
                    raise Unavailable(f"model {ref.name!r} is loading; retry shortly")
                reasons = "; ".join(f"v{v}: {sv.error}" for v, sv in sorted(versions.items()) if sv.error)
                raise Unavailable(f"model {ref.name!r} has no available version ({reasons or 'none loaded'})")
        served = versions.get(version)
        available = sorted(
            v for v, sv in versions.items() if sv.state in (VersionState.AVAILABLE, VersionState.UNLOADED)
        )
        listing = ", ".join(map(str, available)) or "none"
        if served is None:
            via = f" (label {ref.label!r})" if ref.label is not None else ""
            raise NotFound(
                f"model {ref.name!r} has no version {version}{via} being served; available versions: "
                f"{listing}"
            )
        if served.state is VersionState.LOADING:
            raise Unavailable(f"version {version} of model {ref.name!r} is loading; retry shortly")
        if served.state is VersionState.FAILED:
            raise NotFound(
                f"version {version} of model {ref.name!r} failed to load: {served.error}; available "
                f"versions: {listing}"
            )
        if served.state is VersionState.UNLOADING:
            raise NotFound(
                f"version {version} of model {ref.name!r} is being unloaded; available versions: {listing}"
            )
        return served

    @asynccontextmanager
    async def lease(
        self, ref: ModelRef, kind: str, deadline: float | None = None
    ) -> AsyncIterator[ServedVersion]:
        """Hold a version for the duration of a request; its unload waits until the lease ends. An
        UNLOADED version is loaded first, within ``deadline`` (a time.monotonic() value)."""
        served = self.resolve(ref)
        served.last_used = time.monotonic()
        if served.state is VersionState.UNLOADED:
            if not served.model.has(kind):
                raise FailedPrecondition(
                    f"model {served.name!r} v{served.version} has no {KINDS[kind][0]!r} signature"
                )
            await self._ensure_loaded(served, deadline)
        if kind not in served.batchers:
            raise FailedPrecondition(
                f"model {served.name!r} v{served.version} has no {KINDS[kind][0]!r} signature"
                + (
                    " (exported without its classification head); use ExtractFeatures"
                    if kind == "classify"
                    else ""
                )
            )
        served.inflight += 1
        served.idle.clear()
        try:
            yield served
        finally:
            served.inflight -= 1
            if served.inflight == 0:
                served.idle.set()

    def view(self, name: str) -> ModelView:
        check_model_name(name)
        versions = self._models.get(name)
        if versions is None:
            known = ", ".join(self.model_names()) or "none"
            raise NotFound(f"unknown model {name!r}; available models: {known}")
        labels = dict(self.settings.model_config(name).version_labels)
        return ModelView(
            name=name,
            default_version=self.default_version(name),
            versions=sorted(versions.values(), key=lambda sv: -sv.version),
            version_labels=labels,
        )

    def views(self) -> list[ModelView]:
        return [self.view(name) for name in self.model_names()]
