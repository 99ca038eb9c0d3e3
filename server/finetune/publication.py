"""After a worker has published a version: is it served? A job is SUCCEEDED only if it is.

The manager asks the repository to pick the new version up at once (:func:`load_published`) and
reads the outcome:

- AVAILABLE: the job is SUCCEEDED ("now served").
- not loaded because the model's version policy does not select it (``specific`` without this
  version, or ``latest`` with newer versions): SUCCEEDED, and the message names the policy and how
  to serve the version (:func:`policy_note`).
- the load failed: the job is FAILED with the load error and the version is moved aside
  (:func:`quarantine`) so that it can never shadow a good version.
- anything else (the load did not finish in time, the reload itself failed): the job is FAILED and
  the version stays in place (it may be fine; the repository serves it if its load succeeds).
"""

from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from model_format.layout import REJECTED_PREFIX
from server.discovery import select_versions
from server.errors import NotFound
from server.repository import ModelRepository
from server.served import VersionState
from server.settings import ModelConfig
from storage.object_store import existing_versions_at, withdraw
from storage.roots import is_url

log = logging.getLogger("server.finetune.manager")


@dataclass(frozen=True)
class LoadOutcome:
    """What became of a published version: served, deliberately not served, or not served."""

    served: bool
    not_served_note: str = ""  # served is False and the version is fine: why the policy skips it
    error: str = ""  # not served, and not because of the policy
    broken: bool = False  # the version itself failed to load: move it aside

    @property
    def failed(self) -> bool:
        return bool(self.error)


async def load_published(
    repository: ModelRepository, name: str, version: int, timeout_s: float
) -> LoadOutcome:
    """Reconcile the model root now and report the new version's state.

    NOTE: the reconcile is shielded: a timeout here must not cancel a load half-way (it would leave
    the version LOADING for good); the load goes on and serves the version if it succeeds.
    """
    reconcile = asyncio.ensure_future(repository.reconcile())
    try:
        await asyncio.wait_for(asyncio.shield(reconcile), timeout_s)
    except TimeoutError:
        return LoadOutcome(
            False,
            error=(
                f"it was not loaded within {timeout_s:.0f} s (the load goes on: it is served if it succeeds)"
            ),
        )
    try:
        versions = repository.view(name).versions
    except NotFound:
        versions = []
    served = next((sv for sv in versions if sv.version == version), None)
    if served is not None and served.state is VersionState.AVAILABLE:
        return LoadOutcome(True)
    if served is not None and served.state is VersionState.FAILED:
        return LoadOutcome(False, error=served.error or "it failed to load", broken=True)
    config = repository.settings.model_config(name)
    failed = {sv.version for sv in versions if sv.state is VersionState.FAILED}
    on_disk = await asyncio.to_thread(existing_versions_at, repository.settings.model_root, name)
    loadable = [v for v in on_disk if v not in failed]
    if version in select_versions(config, loadable):
        state = served.state.value if served is not None else "not known to the server"
        return LoadOutcome(False, error=f"it is {state} after the reload")
    available = sorted(sv.version for sv in versions if sv.state is VersionState.AVAILABLE)
    return LoadOutcome(False, not_served_note=policy_note(config, name, version, available))


def policy_note(config: ModelConfig, name: str, version: int, available: list[int]) -> str:
    """Why the version policy does not serve ``version``, and how to serve it."""
    serving = f"serving {', '.join(f'v{v}' for v in available)}" if available else "serving no version"
    if config.version_policy == "specific":
        listed = ", ".join(str(v) for v in config.versions)
        return (
            f"not served: model {name!r} has version_policy 'specific' with versions [{listed}] ({serving}); "
            f"add {version} to versions in [models.{name}] of the server's config file to serve it"
        )
    return (
        f"not served: model {name!r} has version_policy 'latest' with latest = {config.latest} and newer "
        f"versions exist ({serving}); raise latest in [models.{name}] of the server's config file to serve "
        "it too"
    )


def quarantine(model_root: Path | str, name: str, version: int, job_id: str) -> str:
    """Move ``<name>/<version>`` aside to ``<name>/.rejected-<version>-<job_id>``; returns the new name
    relative to the model root ('' if it could not be moved, which is logged). On an object store,
    where nothing moves, its completion marker is deleted instead (the files stay for inspection)."""
    if is_url(model_root):
        return _withdraw(model_root, name, version)
    model_root = Path(model_root)
    source = model_root / name / str(version)
    target = model_root / name / f"{REJECTED_PREFIX}{version}-{job_id}"
    try:
        os.rename(source, target)
    except OSError as exc:
        log.error("could not move the unloadable version %s aside: %s", source, exc)
        return ""
    log.warning("moved the unloadable version %s aside to %s", source, target)
    return f"{name}/{target.name}"


def _withdraw(url: str, name: str, version: int) -> str:
    try:
        withdraw(url, name, version)
    except OSError as exc:
        log.error("could not withdraw the unloadable version %s/%s/%d: %s", url, name, version, exc)
        return ""
    log.warning(
        "withdrew the unloadable version %s/%s/%d (deleted its marker; its files stay)", url, name, version
    )
    return f"{name}/{version} (unpublished: its marker was deleted)"
