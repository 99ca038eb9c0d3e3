"""After a worker has published a version: is it served? A job is SUCCEEDED only if it is.

The manager asks the repository to pick the new version up at once (:func:`load_published`) and
reads the outcome:

- AVAILABLE: the job is SUCCEEDED ("now served").
- not loaded because the model's version policy does not select it (``specific`` without this
  version, or ``latest`` with newer versions): SUCCEEDED, and the message names the policy and how
  to serve the version (:func:`policy_note`).
- the load failed or did not finish in time: the job is FAILED with the load error and the version
  is moved aside (:func:`quarantine`) so that it can never shadow a good version.
"""

from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from server.errors import NotFound
from server.repository import ModelRepository, VersionState
from server.settings import ModelConfig

log = logging.getLogger("server.finetune.manager")

#: Prefix of a version directory moved aside because the server could not load it. The scanner
#: ignores names that are not version numbers, so it is never served; it is kept for inspection.
REJECTED_PREFIX = ".rejected-"


@dataclass(frozen=True)
class LoadOutcome:
    """What became of a published version: served, deliberately not served, or not loadable."""

    served: bool
    not_served_note: str = ""  # served is False and the version is fine: why the policy skips it
    error: str = ""  # the version could not be loaded (or not in time)

    @property
    def failed(self) -> bool:
        return bool(self.error)


async def load_published(repository: ModelRepository, name: str, version: int, timeout_s: float) -> LoadOutcome:
    """Reconcile the model root now and report the new version's state."""
    try:
        await asyncio.wait_for(repository.reconcile(), timeout_s)
    except asyncio.TimeoutError:
        return LoadOutcome(False, error=f"it did not finish loading within {timeout_s:.0f} s")
    try:
        versions = repository.view(name).versions
    except NotFound:
        versions = []
    served = next((sv for sv in versions if sv.version == version), None)
    if served is not None and served.state is VersionState.AVAILABLE:
        return LoadOutcome(True)
    if served is not None and served.state is VersionState.FAILED:
        return LoadOutcome(False, error=served.error or "it failed to load")
    available = sorted(sv.version for sv in versions if sv.state is VersionState.AVAILABLE)
    return LoadOutcome(False, not_served_note=policy_note(repository.settings.model_config(name), name, version, available))


def policy_note(config: ModelConfig, name: str, version: int, available: list[int]) -> str:
    """Why the version policy does not serve ``version``, and how to serve it."""
    serving = f"serving {', '.join(f'v{v}' for v in available)}" if available else "serving no version"
    if config.version_policy == "specific":
        listed = ", ".join(str(v) for v in config.versions)
        return (
            f"not served: model {name!r} has version_policy 'specific' with versions [{listed}] ({serving}); "
            f"add {version} to versions in [models.{name}] of the server's config file to serve it"
        )
    if config.version_policy == "latest":
        return (
            f"not served: model {name!r} has version_policy 'latest' with latest = {config.latest} and newer "
            f"versions exist ({serving}); raise latest in [models.{name}] of the server's config file to serve it too"
        )
    return f"not served ({serving}); see the model's status"


def quarantine(model_root: Path, name: str, version: int, job_id: str) -> str:
    """Move ``<name>/<version>`` aside to ``<name>/.rejected-<version>-<job_id>``; returns the new name
    relative to the model root ('' if it could not be moved, which is logged)."""
    source = model_root / name / str(version)
    target = model_root / name / f"{REJECTED_PREFIX}{version}-{job_id}"
    try:
        os.rename(source, target)
    except OSError as exc:
        log.error("could not move the unloadable version %s aside: %s", source, exc)
        return ""
    log.warning("moved the unloadable version %s aside to %s", source, target)
    return f"{name}/{target.name}"
