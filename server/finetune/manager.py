"""Fine-tuning jobs: the queue, claims and leases, cancellation, watchers and recovery.

Lifecycle of a job::

    StartFineTune -> QUEUED -> RUNNING (VALIDATING -> EXTRACTING_FEATURES -> TRAINING -> EXPORTING)
                                   -> SUCCEEDED | FAILED | CANCELLED

- StartFineTune checks everything that needs no compute (base model, output name, hyperparameters,
  dataset counts, data-root containment) and answers with an error, or creates a QUEUED job.
  Datasets come in through :mod:`server.finetune.intake`.
- At most ``finetune_workers`` jobs run at a time on a server, oldest first: a server *claims* a
  QUEUED job (:meth:`~server.finetune.store.JobStore.claim_next`), which makes it RUNNING under this
  server's lease, and runs it in a worker process (:mod:`server.finetune.runner`).
- A job's record and every event are in the store before watchers are woken, so a watch can resume
  from any event id, also after a restart, and on any replica sharing the store.
- Leases: every ``finetune_lease_s / 3`` the server renews the leases of the jobs it runs (a cancel
  requested on another replica is seen there too), and takes over the RUNNING jobs of others whose
  lease has expired: QUEUED again to run here or on another survivor, up to ``finetune_max_attempts``
  runs, then FAILED ("interrupted: replica X stopped ..."). With the embedded store the only server
  is this one.
- A job this server was running when it stopped or died is FAILED ("interrupted") when it next
  starts (with a shared store, a stopping replica puts its jobs back in the queue instead, and a dead
  one's are FAILED by another once the lease expires); QUEUED jobs stay queued and run. The
  embedded store is opened at start if it exists, otherwise on the first fine-tuning call, so a
  server that never fine-tunes writes nothing.

Everything runs on the server's event loop; store calls are short and synchronous.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import AsyncIterator, Iterable
from pathlib import Path

from server.discovery import check_model_name
from server.errors import AlreadyExists, FailedPrecondition, InvalidRequest, NotFound, Unavailable
from server.finetune.datasets import DIRECTORY, UPLOAD, new_id
from server.finetune.intake import DatasetIntake
from server.finetune.jobs import (
    Dataset,
    Job,
    JobEvent,
    JobPhase,
    JobState,
    StartRequest,
    UploadedImage,
    UploadInfo,
)
from server.finetune.journal import Journal
from server.finetune.runner import JobRunner, end_orphan
from server.finetune.store import JobStore, open_store
from server.finetune.store_sqlite import DATABASE_FILE
from server.finetune.worker_process import published_version, remove_stale_staging
from server.repository import ModelRepository
from server.served import ModelRef
from server.settings import ServerSettings

log = logging.getLogger(__name__)

DEFAULT_BASE_MODEL = "vgg16"
DEFAULT_LIST_LIMIT = 100
MAX_LIST_LIMIT = 1000
#: A watcher re-reads the store at least this often, even without a wake-up.
WATCH_POLL_S = 5.0
#: How long CancelFineTuneJob waits for a running worker to end before answering.
CANCEL_WAIT_S = 15.0
#: How long a stopping server waits for its workers to end (then they are killed).
STOP_WAIT_S = 10.0
#: The owner id of jobs in the embedded store: there is one server, whatever its pid.
LOCAL_OWNER = "local"
#: Unfinished uploads older than this are removed at start when the state directory is shared.
STALE_UPLOAD_AGE_S = 3600.0


def replica_id() -> str:
    """This server among replicas sharing a store: the host (the pod's name on Kubernetes) and pid."""
    return f"{socket.gethostname()}:{os.getpid()}"


def _call_soon(loop: asyncio.AbstractEventLoop, callback, *args) -> None:
    """From the store's listener thread: run ``callback`` on the loop, unless the loop has closed."""
    try:
        loop.call_soon_threadsafe(callback, *args)
    except RuntimeError:  # the server stopped; nothing waits for the notice any more
        pass


class FineTuneManager:
    """The plain core behind the six fine-tuning RPCs."""

    def __init__(self, settings: ServerSettings, repository: ModelRepository) -> None:
        self.settings = settings
        self.repository = repository
        self.state_dir = Path(settings.state_dir)
        self.intake = DatasetIntake(settings)
        self.journal = Journal()
        self.owner = replica_id() if settings.finetune_store else LOCAL_OWNER
        self._runners: dict[str, JobRunner] = {}
        self._tasks: dict[str, asyncio.Task] = {}
        self._heartbeat: asyncio.Task | None = None
        self._recovering: asyncio.Task | None = None  # the orphans found when the store is opened
        self._stopping = False

    @property
    def _store(self) -> JobStore | None:
        return self.journal.store

    # --- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        """Remove old staging left by dead publishers; if jobs exist, recover them and run the queue."""
        removed = await asyncio.to_thread(remove_stale_staging, Path(self.settings.model_root))
        for name in removed:
            log.info("removed a staging directory left by a dead process: %s", name)
        if self.settings.finetune_store or (self.state_dir / DATABASE_FILE).exists():
            self._open()
            self._schedule()

    async def stop(self) -> None:
        """End running workers and wake every watcher. Their jobs FAIL as interrupted, or, with a
        shared store, go back to the queue for another replica."""
        self._stopping = True
        for task in (self._heartbeat, self._recovering):
            if task is not None:
                task.cancel()
        for runner in list(self._runners.values()):
            runner.stop()
        tasks = list(self._tasks.values())
        if tasks:
            _done, pending = await asyncio.wait(tasks, timeout=STOP_WAIT_S)
            for runner in list(self._runners.values()):
                if runner.worker is not None:
                    runner.worker.kill()
            if pending:
                await asyncio.wait(pending, timeout=STOP_WAIT_S)
        self.journal.notify()
        if self._store is not None:
            self._store.close()
            self.journal.store = None

    def _open(self) -> JobStore:
        if self._stopping:
            raise Unavailable("the server is shutting down; retry on its next start")
        if self._store is None:
            store = open_store(self.settings.finetune_store, self.state_dir)
            self.journal.store = store
            log.info("fine-tuning job store: %s (this server is %r)", store.describe(), self.owner)
            self.intake.remove_unfinished_uploads(STALE_UPLOAD_AGE_S if store.shared else 0.0)
            # NOTE: a task, not a call: whether an orphan had published is read from its model root,
            # which may be an object store (never read on the event loop).
            self._recovering = asyncio.get_running_loop().create_task(self._recover(including_own=True))
            if not store.shared:
                for job in store.list_jobs([JobState.QUEUED], limit=10**9, oldest_first=True):
                    msg = "the server restarted; the job is queued again"
                    self.journal.event(job.job_id, JobState.QUEUED, job.phase, msg)
            loop = asyncio.get_running_loop()
            store.listen(lambda kind, job_id: _call_soon(loop, self._on_store_notice, kind, job_id))
            self._heartbeat = loop.create_task(self._beat(), name="finetune-heartbeat")
        return self._store

    def _existing_store(self) -> JobStore | None:
        """The store if there is one, without creating it (reads of a server that never fine-tuned)."""
        if self._store is None and not self._stopping and (self.state_dir / DATABASE_FILE).exists():
            return self._open()
        return self._store

    async def _recover(self, including_own: bool) -> None:
        """End or requeue the RUNNING jobs whose runner is gone: this server's own from before a
        restart (at start), and those whose lease expired; each is taken over first, so only one
        server ends it."""
        store, settings = self._store, self.settings
        for job, owner in store.orphaned_jobs(self.owner, including_own):
            if job.job_id in self._runners or not store.take_over(
                job.job_id, self.owner, owner, settings.finetune_lease_s
            ):
                continue
            published = await asyncio.to_thread(
                published_version, settings.model_root, job.output_model, job.job_id
            )
            end_orphan(
                job,
                owner,
                self.owner,
                self.journal,
                settings.model_root,
                settings.finetune_max_attempts,
                published,
            )

    async def _beat(self) -> None:
        """Renew this server's leases, see cancels asked elsewhere, end orphans, claim queued jobs."""
        interval = self.settings.finetune_lease_s / 3
        while not self._stopping:
            await asyncio.sleep(interval)
            try:
                self._renew()
                await self._recover(including_own=False)
                self._schedule()
            except Exception:  # e.g. the database is unreachable for a moment: try again next beat
                log.exception("fine-tuning heartbeat failed; retrying in %.1f s", interval)

    def _renew(self) -> None:
        leases = self._store.renew_leases(self.owner, self.settings.finetune_lease_s)
        for job_id, runner in list(self._runners.items()):
            # Not held and no longer ours: another server found the lease expired and ended the job.
            if (
                job_id not in leases.held
                and not runner.lease_lost
                and self._store.job_owner(job_id) != self.owner
            ):
                runner.lose_lease()
            if job_id in leases.cancel_requested:
                runner.cancel()

    def _on_store_notice(self, kind: str, job_id: str) -> None:
        """Another replica wrote: wake watchers; claim a new job; pass a cancel to our runner."""
        if self._stopping or self._store is None:
            return
        self.journal.notify()
        if kind == "cancel" and job_id in self._runners:
            self._runners[job_id].cancel()
        elif kind in ("queued", "reconnected"):
            self._schedule()

    # --- datasets --------------------------------------------------------------------------------

    async def upload_dataset(self, items: AsyncIterator[UploadedImage | UploadInfo]) -> Dataset:
        """Store an upload as a dataset; nothing is kept if any image or limit is refused."""
        return await self.intake.upload(self._open(), items)

    # --- jobs ------------------------------------------------------------------------------------

    async def start_job(self, request: StartRequest) -> Job:
        """Check the request and queue a job; a repeated request_id returns the first job."""
        store = self._open()
        if request.request_id:
            existing = self._job_for_request(store, request)
            if existing is not None:
                return existing
        hp = request.hyperparameters.validate()
        base_name = request.base_model or DEFAULT_BASE_MODEL
        check_model_name(request.output_model)
        if request.output_model == base_name:
            raise InvalidRequest(
                f"output_model must differ from the base model {base_name!r}: a new {base_name} version "
                "would replace the base other clients use. Name the fine-tuned model, e.g. 'flowers'"
            )
        served = self.repository.resolve(ModelRef(base_name, request.base_version, request.base_label))
        if served.model is None or not served.model.has("features"):
            raise FailedPrecondition(
                f"{served.name} v{served.version} has no feature signature to train on; "
                "use a model exported by python -m exporter"
            )
        if request.dataset_id:
            dataset = await self.intake.uploaded(store, request.dataset_id, hp.min_images_per_class)
            kind = UPLOAD
        elif request.data_dir:
            dataset = await self.intake.from_directory(store, request.data_dir, hp.min_images_per_class)
            kind = DIRECTORY
        else:
            raise InvalidRequest(
                "no dataset: set dataset_id (from UploadDataset) or data_dir (under the server's data root)"
            )
        if request.request_id:  # the same request may have been started while the directory was scanned
            existing = self._job_for_request(store, request)
            if existing is not None:
                return existing
        job = Job(
            job_id=new_id("ft"),
            request_id=request.request_id,
            state=JobState.QUEUED,
            phase=JobPhase.UNSPECIFIED,
            base_model=served.name,
            base_version=served.version,
            output_model=request.output_model,
            hyperparameters=hp,
            dataset=dataset,
            created_at=time.time(),
        )
        store.add_job(job, str(served.path), request.fingerprint())
        ahead = len(store.list_jobs([JobState.QUEUED, JobState.RUNNING], limit=10**9)) - 1
        self.journal.event(
            job.job_id,
            JobState.QUEUED,
            JobPhase.UNSPECIFIED,
            f"queued: {kind} dataset {dataset.name!r} ({dataset.num_images} images, "
            f"{len(dataset.images_per_class)} classes), {ahead} job(s) ahead",
        )
        log.info("job %s queued: %s v%d -> %s", job.job_id, served.name, served.version, request.output_model)
        queued = store.get_job(job.job_id)
        self._schedule()  # may claim it at once (RUNNING); the answer says what was created: QUEUED
        return queued

    def _job_for_request(self, store: JobStore, request: StartRequest) -> Job | None:
        found = store.job_for_request(request.request_id)
        if found is None:
            return None
        job, fingerprint = found
        if fingerprint != request.fingerprint():
            raise AlreadyExists(
                f"request_id {request.request_id!r} was already used for job {job.job_id} with different "
                "parameters; use a new request_id for a different job"
            )
        return job

    def get(self, job_id: str) -> Job:
        if not job_id:
            raise InvalidRequest("job_id is required")
        store = self._existing_store()
        job = store.get_job(job_id) if store is not None else None
        if job is None:
            raise NotFound(f"unknown fine-tuning job {job_id!r}; ListFineTuneJobs lists the jobs")
        return job

    def list(self, states: Iterable[JobState] = (), limit: int = 0) -> list[Job]:
        if limit < 0 or limit > MAX_LIST_LIMIT:
            raise InvalidRequest(
                f"limit must be in [0, {MAX_LIST_LIMIT}] (0 means {DEFAULT_LIST_LIMIT}), got {limit}"
            )
        store = self._existing_store()
        return store.list_jobs(states, limit or DEFAULT_LIST_LIMIT) if store is not None else []

    def counts_by_state(self) -> dict[str, int]:
        """Jobs in the store by state name, every state present (for the metrics gauge; any thread)."""
        store = self._store
        counts = store.count_by_state() if store is not None else {}
        return {
            state.value: counts.get(state.value, 0) for state in JobState if state is not JobState.UNSPECIFIED
        }

    async def cancel(self, job_id: str) -> Job:
        """QUEUED: CANCELLED at once. RUNNING (on any replica): its worker is terminated, then
        CANCELLED. Nothing is published."""
        job = self.get(job_id)
        if job.state is JobState.CANCELLED:
            return job
        if job.state.done:
            published = (
                f" and published {job.output_model} v{job.output_version}" if job.output_version else ""
            )
            raise FailedPrecondition(
                f"job {job_id} already {job.state.value}{published}; "
                "only QUEUED or RUNNING jobs can be cancelled"
            )
        if job.state is JobState.QUEUED:
            cancelled = self._store.update_job(
                job_id, only_if=[JobState.QUEUED], state=JobState.CANCELLED, finished_at=time.time()
            )
            if cancelled is not None:
                msg = "cancelled while queued; nothing was published"
                self.journal.event(job_id, JobState.CANCELLED, cancelled.phase, msg)
                return cancelled
        runner = self._runners.get(job_id)
        if runner is not None:
            runner.cancel()
            await asyncio.wait([self._tasks[job_id]], timeout=CANCEL_WAIT_S)
        else:  # it runs on another replica (or was claimed just now): its heartbeat passes the request on
            self._store.request_cancel(job_id)
            await self._until_ended(job_id, CANCEL_WAIT_S)
        return self.get(job_id)

    async def _until_ended(self, job_id: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not self._stopping:
            changed = self.journal.changed
            if self._store.get_job(job_id).state.done:
                return
            try:
                await asyncio.wait_for(changed.wait(), min(1.0, deadline - time.monotonic()))
            except TimeoutError:
                pass

    async def watch(self, job_id: str, after_event_id: int = 0) -> AsyncIterator[JobEvent]:
        """The job's events after ``after_event_id``, live, until the job has ended."""
        if after_event_id < 0:
            raise InvalidRequest(f"after_event_id must be >= 0, got {after_event_id}")
        self.get(job_id)
        last = after_event_id
        while True:
            changed = self.journal.changed  # taken before reading, so a change after the read wakes us
            store = self._existing_store()
            if store is None:
                return
            ended = store.get_job(job_id).state.done
            events = store.events_after(job_id, last)
            for event in events:
                yield event
                last = event.event_id
            if events:
                continue
            if ended or self._stopping:
                return
            try:
                await asyncio.wait_for(changed.wait(), WATCH_POLL_S)
            except TimeoutError:
                pass

    # --- running ---------------------------------------------------------------------------------

    def _schedule(self) -> None:
        if self._stopping or self._store is None:
            return
        while len(self._runners) < self.settings.finetune_workers:
            job = self._store.claim_next(self.owner, self.settings.finetune_lease_s)
            if job is None:
                return
            replica = self.owner if self._store.shared else ""
            runner = JobRunner(job, self.settings, self.repository, self.journal, self.intake, replica)
            self._runners[job.job_id] = runner
            task = asyncio.get_running_loop().create_task(self._run(runner), name=f"finetune-{job.job_id}")
            self._tasks[job.job_id] = task

    async def _run(self, runner: JobRunner) -> None:
        job_id = runner.job.job_id
        try:
            await runner.run()
        except Exception:  # a bug here must not leave the job RUNNING forever
            log.exception("job %s: the server side of the job failed", job_id)
            if not self._store.get_job(job_id).state.done:
                msg = "internal server error; details are in the server log"
                self.journal.finish(job_id, JobState.FAILED, msg)
        finally:
            self._runners.pop(job_id, None)
            self._tasks.pop(job_id, None)
            self._schedule()
