"""The training worker process, seen from the server: spawn it, read its messages, end it, clean up.

See :mod:`server.finetune.worker` for the protocol. A worker killed mid-publish may leave its
``.staging-<version>-<pid>-*`` directory in the output model's directory (never a version: the
publish is an atomic rename). :func:`remove_staging_of` removes it when the worker has ended (or, for
a job interrupted by a server crash, when the server starts again: the store keeps the worker's
pid). :func:`remove_stale_staging` removes the rest at start-up, only when the writing process is
gone *and* the directory is older than :data:`STALE_STAGING_AGE_S`: a process id means nothing to
another host or container sharing the model root, and an export in progress there must survive.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import server
from model_format.layout import STAGING_PREFIX
from server.finetune.messages import WorkerMessage, decode
from server.finetune.worker import PARENT_PID_ENV
from storage.object_store import existing_versions_at, read_manifest_at

log = logging.getLogger(__name__)

MAX_MESSAGE_BYTES = 16 * 1024 * 1024
EXIT_WAIT_S = 30.0
#: Age after which a staging directory of a process that does not exist here is removed at start-up.
STALE_STAGING_AGE_S = 3600.0
_SOURCE_ROOT = str(Path(server.__file__).resolve().parent.parent)


class WorkerProcess:
    """One running ``python -m server.finetune.worker``. Use :meth:`spawn`."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.pid = process.pid

    @classmethod
    async def spawn(cls, spec: dict[str, Any], threads: int, log_level: str = "INFO") -> WorkerProcess:
        path = os.environ.get("PYTHONPATH")
        env = {
            **os.environ,
            "PYTHONPATH": _SOURCE_ROOT + (os.pathsep + path if path else ""),
            "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "3"),
            "OMP_NUM_THREADS": str(threads),
            "TF_NUM_INTRAOP_THREADS": str(threads),
            "TF_NUM_INTEROP_THREADS": str(max(1, min(2, threads))),
            "IMAGESERVE_LOG_LEVEL": log_level,
            PARENT_PID_ENV: str(os.getpid()),
        }
        # NOTE: spawned from the event-loop thread, which lives as long as the server: the worker's
        # PR_SET_PDEATHSIG fires when the *thread* that forked it ends, not only the process.
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "server.finetune.worker",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=None,
            env=env,
            limit=MAX_MESSAGE_BYTES,
        )
        assert process.stdin is not None
        process.stdin.write(json.dumps(spec).encode() + b"\n")
        await process.stdin.drain()
        return cls(process)

    async def messages(self) -> AsyncIterator[WorkerMessage]:
        """Protocol messages until the worker closes its stdout (it exited)."""
        assert self.process.stdout is not None
        while True:
            try:
                line = await self.process.stdout.readline()
            except ValueError:  # a line longer than MAX_MESSAGE_BYTES: not ours
                log.warning("worker %d: dropped an over-long output line", self.pid)
                continue
            if not line:
                return
            try:
                message = decode(line)
            except ValueError as exc:
                log.warning(
                    "worker %d: ignored a line that is not a protocol message (%s): %.200r",
                    self.pid,
                    exc,
                    line,
                )
                continue
            yield message

    def terminate(self) -> None:
        self._signal(signal.SIGTERM)

    def kill(self) -> None:
        self._signal(signal.SIGKILL)

    def _signal(self, signum: int) -> None:
        if self.process.returncode is None:
            try:
                self.process.send_signal(signum)
            except ProcessLookupError:
                pass

    def close_stdin(self) -> None:
        """The worker exits when its stdin closes (it takes that as 'the server is gone')."""
        if self.process.stdin is not None and not self.process.stdin.is_closing():
            self.process.stdin.close()

    async def wait(self, timeout: float = EXIT_WAIT_S) -> int:
        """The exit status (negative: killed by that signal); SIGKILL after ``timeout`` seconds."""
        try:
            return await asyncio.wait_for(self.process.wait(), timeout)
        except TimeoutError:
            log.warning("worker %d did not exit within %.0f s; killing it", self.pid, timeout)
            self.kill()
            return await asyncio.wait_for(self.process.wait(), timeout)


def describe_exit(returncode: int) -> str:
    if returncode < 0:
        return f"training worker was killed (signal {-returncode})"
    return f"training worker exited with status {returncode} without a result; details are in the server log"


def _staging_pid(name: str) -> int | None:
    """The pid in ``.staging-<version>-<pid>-<random>``, as :func:`graphs.publish.save_and_publish` names
    it."""
    if not name.startswith(STAGING_PREFIX):
        return None
    parts = name[len(STAGING_PREFIX) :].split("-")
    return int(parts[1]) if len(parts) >= 3 and parts[1].isdigit() else None


def remove_staging_of(model_dir: Path, pid: int) -> list[str]:
    """Remove the staging directories a (now ended) process left in ``model_dir``; returns their names."""
    removed = []
    if model_dir.is_dir():
        for child in model_dir.iterdir():
            if _staging_pid(child.name) == pid:
                shutil.rmtree(child, ignore_errors=True)
                removed.append(child.name)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def remove_stale_staging(model_root: Path, min_age_s: float = STALE_STAGING_AGE_S) -> list[str]:
    """Remove staging directories under ``model_root/*/`` older than ``min_age_s`` whose writer is gone."""
    removed = []
    if not model_root.is_dir():
        return removed
    for model_dir in model_root.iterdir():
        if not model_dir.is_dir() or model_dir.name.startswith("."):
            continue
        for child in model_dir.iterdir():
            pid = _staging_pid(child.name)
            if pid is not None and not _alive(pid) and _age_s(child) >= min_age_s:
                shutil.rmtree(child, ignore_errors=True)
                removed.append(f"{model_dir.name}/{child.name}")
    return removed


def _age_s(path: Path) -> float:
    try:
        return time.time() - path.stat().st_mtime
    except FileNotFoundError:
        return 0.0


def published_version(model_root: Path | str, name: str, job_id: str) -> int | None:
    """The version of ``name`` that job ``job_id`` published, if any (from the manifests), under a
    local or object-store root. Blocking (an object store is read): call it off the event loop."""
    for version in reversed(existing_versions_at(model_root, name)):
        try:
            source = read_manifest_at(model_root, name, version).get("source", {})
        except (OSError, ValueError):
            continue
        if source.get("kind") == "finetune" and source.get("job_id") == job_id:
            return version
    return None
