"""Fine-tuning jobs: the queue, the workers, cancellation, watchers and recovery after a restart.

Lifecycle of a job::

    StartFineTune -> QUEUED -> RUNNING (VALIDATING -> EXTRACTING_FEATURES -> TRAINING -> EXPORTING)
                                   -> SUCCEEDED | FAILED | CANCELLED

- StartFineTune checks everything that needs no compute (base model, output name, hyperparameters,
  dataset counts, data-root containment) and answers with an error, or creates a QUEUED job.
- At most ``finetune_workers`` jobs run at a time, oldest first, each in its own worker process
  (:mod:`server.finetune.workers`); the worker's messages become the job's events.
- The job's record and every event are in the SQLite store (:mod:`server.finetune.store`) before
  watchers are woken, so a watch can resume from any event id, also after a restart.
- A job that was RUNNING when the server stopped or died is FAILED ("interrupted") when the server
  next starts; QUEUED jobs stay queued and run. The store is opened at start if it exists, otherwise
  on the first fine-tuning call, so a server that never fine-tunes writes nothing.

Everything runs on the server's event loop; SQLite calls are short and synchronous.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import AsyncIterator, Iterable

from exporter.roots import absolute
from server.errors import AlreadyExists, FailedPrecondition, InvalidRequest, NotFound, Unavailable
from server.finetune.datasets import (
    DIRECTORY,
    UPLOAD,
    UploadWriter,
    check_counts,
    index_path,
    new_id,
    save_directory_index,
    scan_data_dir,
    summarize,
)
from server.finetune.jobs import (
    DatasetSummary,
    EpochMetrics,
    FineTuneMetrics,
    Job,
    JobEvent,
    JobPhase,
    JobState,
    StartRequest,
    UploadedImage,
    UploadInfo,
)
from server.finetune.pipeline import JobSpec
from server.finetune.publication import LoadOutcome, load_published, quarantine
from server.finetune.store import DATABASE_FILE, JobStore
from server.finetune.workers import (
    WorkerProcess,
    describe_exit,
    published_version,
    remove_staging_of,
    remove_stale_staging,
)
from server.discovery import check_model_name
from server.repository import ModelRef, ModelRepository
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
#: How long a finished job waits for the repository to load its new version before SUCCEEDED.
LOAD_WAIT_S = 600.0
SERVER_STOPPED = "interrupted: the server stopped while the job was running"


class FineTuneManager:
    """The plain core behind the six fine-tuning RPCs."""

    def __init__(self, settings: ServerSettings, repository: ModelRepository) -> None:
        self.settings = settings
        self.repository = repository
        self.state_dir = Path(settings.state_dir)
        self.datasets_dir = self.state_dir / "datasets"
        self._store: JobStore | None = None
        self._runners: dict[str, asyncio.Task] = {}
        self._workers: dict[str, WorkerProcess] = {}
        self._cancel_requested: set[str] = set()
        self._changed = asyncio.Event()
        self._stopping = False

    # --- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        """Remove old staging left by dead publishers; if jobs exist, recover them and run the queue."""
        removed = await asyncio.to_thread(remove_stale_staging, Path(self.settings.model_root))
        for name in removed:
            log.info("removed a staging directory left by a dead process: %s", name)
        if (self.state_dir / DATABASE_FILE).exists():
            self._open()
            self._schedule()

    async def stop(self) -> None:
        """End running workers (their jobs FAIL as interrupted) and wake every watcher."""
        self._stopping = True
        for worker in list(self._workers.values()):
            worker.close_stdin()
            worker.terminate()
        runners = list(self._runners.values())
        if runners:
            _done, pending = await asyncio.wait(runners, timeout=STOP_WAIT_S)
            for worker in list(self._workers.values()):
                worker.kill()
            if pending:
                await asyncio.wait(pending, timeout=STOP_WAIT_S)
        self._notify()
        if self._store is not None:
            self._store.close()
            self._store = None

    def _open(self) -> JobStore:
        if self._stopping:
            raise Unavailable("the server is shutting down; retry on its next start")
        if self._store is None:
            self._store = JobStore(self.state_dir / DATABASE_FILE)
            self._recover(self._store)
        return self._store

    def _existing_store(self) -> JobStore | None:
        """The store if there is one, without creating it (reads of a server that never fine-tuned)."""
        if self._store is None and not self._stopping and (self.state_dir / DATABASE_FILE).exists():
            return self._open()
        return self._store

    def _recover(self, store: JobStore) -> None:
        for unfinished in self.datasets_dir.glob(".upload-*"):  # uploads do not survive a restart
            shutil.rmtree(unfinished, ignore_errors=True)
            log.info("removed the unfinished upload %s", unfinished.name)
        for job in store.list_jobs([JobState.RUNNING], limit=10**9, oldest_first=True):
            model_dir = Path(self.settings.model_root) / job.output_model
            pid = store.worker_pid(job.job_id)
            for name in remove_staging_of(model_dir, pid) if pid else []:
                log.info("job %s: removed the unfinished version %s/%s", job.job_id, job.output_model, name)
            version = published_version(model_dir, job.job_id)
            if version is not None:  # it published just before the server died
                self._finish(
                    job.job_id,
                    JobState.SUCCEEDED,
                    f"published {job.output_model} v{version}",
                    output_version=version,
                )
            else:
                self._finish(job.job_id, JobState.FAILED, SERVER_STOPPED, error=SERVER_STOPPED)
            log.info(
                "job %s was RUNNING when the server stopped: now %s",
                job.job_id,
                store.get_job(job.job_id).state.value,
            )
        for job in store.list_jobs([JobState.QUEUED], limit=10**9, oldest_first=True):
            self._event(
                job.job_id, JobState.QUEUED, job.phase, "the server restarted; the job is queued again"
            )

    # --- datasets --------------------------------------------------------------------------------

    async def upload_dataset(self, items: AsyncIterator[UploadedImage | UploadInfo]) -> DatasetSummary:
        """Store an upload as a dataset; nothing is kept if any image or limit is refused."""
        store = self._open()
        writer = UploadWriter(
            self.datasets_dir,
            self.settings.max_upload_bytes,
            self.settings.max_upload_images,
            self.settings.max_image_pixels,
        )
        # NOTE: one thread per upload runs its file work in order, so that when the call is cancelled
        # (the client went away) the clean-up runs after the write in progress, not beside it.
        files = ThreadPoolExecutor(max_workers=1, thread_name_prefix="upload")
        loop = asyncio.get_running_loop()
        try:
            async for item in items:
                if isinstance(item, UploadInfo):
                    writer.set_name(item.name)
                else:
                    await loop.run_in_executor(files, writer.add, item)
            summary = await loop.run_in_executor(files, writer.finish)
        except BaseException:
            await asyncio.shield(loop.run_in_executor(files, writer.abort))
            raise
        finally:
            files.shutdown(wait=False)
        store.add_dataset(summary, UPLOAD, source="")
        log.info(
            "dataset %s uploaded: %d images, %d classes",
            summary.dataset_id,
            summary.num_images,
            len(summary.images_per_class),
        )
        return summary

    async def _directory_dataset(self, store: JobStore, data_dir: str, min_per_class: int) -> DatasetSummary:
        entries, skipped = await asyncio.to_thread(
            scan_data_dir, self.settings.data_root, data_dir, self.settings.max_upload_images
        )
        summary = summarize(new_id("ds"), data_dir, entries)
        check_counts(summary.images_per_class, min_per_class)
        await asyncio.to_thread(
            save_directory_index, self.datasets_dir, summary.dataset_id, data_dir, entries, skipped
        )
        store.add_dataset(summary, DIRECTORY, source=data_dir)
        return summary

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
            dataset = store.get_dataset(request.dataset_id)
            if dataset is None or not index_path(self.datasets_dir, request.dataset_id).is_file():
                raise NotFound(f"unknown dataset {request.dataset_id!r}; upload one with UploadDataset first")
            check_counts(dataset.images_per_class, hp.min_images_per_class)
            kind = UPLOAD
        elif request.data_dir:
            dataset = await self._directory_dataset(store, request.data_dir, hp.min_images_per_class)
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
        self._event(
            job.job_id,
            JobState.QUEUED,
            JobPhase.UNSPECIFIED,
            f"queued: {kind} dataset {dataset.name!r} ({dataset.num_images} images, "
            f"{len(dataset.images_per_class)} classes), {ahead} job(s) ahead",
        )
        log.info("job %s queued: %s v%d -> %s", job.job_id, served.name, served.version, request.output_model)
        self._schedule()
        return store.get_job(job.job_id)

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
        return {state.value: counts.get(state.value, 0) for state in JobState}

    async def cancel(self, job_id: str) -> Job:
        """QUEUED: CANCELLED at once. RUNNING: the worker is terminated, then CANCELLED. Nothing is published."""
        job = self.get(job_id)
        if job.state is JobState.CANCELLED:
            return job
        if job.state.terminal:
            published = (
                f" and published {job.output_model} v{job.output_version}" if job.output_version else ""
            )
            raise FailedPrecondition(
                f"job {job_id} already {job.state.value}{published}; "
                "only QUEUED or RUNNING jobs can be cancelled"
            )
        runner = self._runners.get(job_id)
        if runner is None:
            return self._finish(job_id, JobState.CANCELLED, "cancelled while queued; nothing was published")
        self._cancel_requested.add(job_id)
        worker = self._workers.get(job_id)
        if worker is not None:
            log.info("job %s: cancelling, terminating worker %d", job_id, worker.pid)
            worker.terminate()
        await asyncio.wait([runner], timeout=CANCEL_WAIT_S)
        return self.get(job_id)

    async def watch(self, job_id: str, after_event_id: int = 0) -> AsyncIterator[JobEvent]:
        """The job's events after ``after_event_id``, live, until the job has ended."""
        if after_event_id < 0:
            raise InvalidRequest(f"after_event_id must be >= 0, got {after_event_id}")
        self.get(job_id)
        last = after_event_id
        while True:
            changed = self._changed  # taken before reading, so a change after the read wakes us
            store = self._existing_store()
            if store is None:
                return
            ended = store.get_job(job_id).state.terminal
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
            except asyncio.TimeoutError:
                pass

    # --- running ---------------------------------------------------------------------------------

    def _schedule(self) -> None:
        if self._stopping or self._store is None:
            return
        free = self.settings.finetune_workers - len(self._runners)
        if free <= 0:
            return
        for job in self._store.list_jobs(
            [JobState.QUEUED], limit=free + len(self._runners), oldest_first=True
        ):
            if free <= 0:
                break
            if job.job_id in self._runners:
                continue
            task = asyncio.get_running_loop().create_task(self._run(job), name=f"finetune-{job.job_id}")
            self._runners[job.job_id] = task
            free -= 1

    async def _run(self, job: Job) -> None:
        try:
            await self._run_worker(job)
        except Exception:  # a bug here must not leave the job RUNNING forever
            log.exception("job %s: the server side of the job failed", job.job_id)
            if not self._store.get_job(job.job_id).state.terminal:
                self._finish(
                    job.job_id, JobState.FAILED, "internal server error; details are in the server log"
                )
        finally:
            self._runners.pop(job.job_id, None)
            self._workers.pop(job.job_id, None)
            self._cancel_requested.discard(job.job_id)
            self._schedule()

    def _spec(self, job: Job) -> dict:
        data_root = self.settings.data_root
        spec = JobSpec(
            job_id=job.job_id,
            base_model=job.base_model,
            base_version=job.base_version,
            base_path=self._store.base_path(job.job_id),
            output_model=job.output_model,
            model_root=absolute(self.settings.model_root),
            dataset_index=str(index_path(self.datasets_dir, job.dataset.dataset_id).resolve()),
            dataset_kind=self._store.dataset_kind(job.dataset.dataset_id) or UPLOAD,
            hyperparameters=job.hyperparameters.to_dict(),
            threads=self.settings.finetune_threads,
            max_image_pixels=self.settings.max_image_pixels,
            data_root=str(Path(data_root).resolve()) if data_root is not None else None,
            onnx_cache=str((Path(self.settings.state_dir) / "onnx").resolve()),  # server/runtime.py cache_dir_for
        )
        return spec.__dict__

    async def _run_worker(self, job: Job) -> None:
        store = self._store
        threads = self.settings.finetune_threads
        try:
            worker = await WorkerProcess.spawn(self._spec(job), threads, self.settings.log_level)
        except OSError as exc:
            self._finish(job.job_id, JobState.FAILED, f"could not start a training worker: {exc.strerror}")
            return
        self._workers[job.job_id] = worker
        store.update_job(job.job_id, state=JobState.RUNNING, started_at=time.time(), worker_pid=worker.pid)
        self._event(
            job.job_id,
            JobState.RUNNING,
            job.phase,
            f"training worker started (pid {worker.pid}, {threads} threads)",
        )
        log.info("job %s: worker pid %d started", job.job_id, worker.pid)
        if job.job_id in self._cancel_requested or self._stopping:
            worker.terminate()
        outcome = None
        phase = job.phase
        async for message in worker.messages():
            kind = message.get("kind")
            if kind == "event":
                if message["phase"] != phase.value:
                    phase = JobPhase(message["phase"])
                    store.update_job(job.job_id, phase=phase)
                epoch = message.get("epoch")
                self._event(
                    job.job_id,
                    JobState.RUNNING,
                    phase,
                    message.get("message", ""),
                    progress=float(message.get("progress", 0.0)),
                    eta_seconds=float(message.get("eta_seconds", 0.0)),
                    epoch=EpochMetrics(**epoch) if epoch else None,
                )
            elif kind in ("succeeded", "failed"):
                outcome = message
        returncode = await worker.wait()
        model_dir = Path(self.settings.model_root) / job.output_model
        if outcome is not None and outcome["kind"] == "succeeded":
            await self._succeeded(job, outcome)
            return
        for name in await asyncio.to_thread(remove_staging_of, model_dir, worker.pid):
            log.info("job %s: removed the unfinished version %s/%s", job.job_id, job.output_model, name)
        metrics = (
            FineTuneMetrics.from_dict(outcome["metrics"]) if outcome and outcome.get("metrics") else None
        )
        version = published_version(model_dir, job.job_id)
        if version is not None:  # killed between the atomic rename and its report: it did publish
            await self._succeeded(job, {"output_version": version, "metrics": None, "artifacts": []})
        elif job.job_id in self._cancel_requested:
            self._finish(
                job.job_id, JobState.CANCELLED, "cancelled; the worker was stopped and nothing was published"
            )
        elif outcome is not None:
            self._finish(
                job.job_id, JobState.FAILED, outcome["error"], error=outcome["error"], metrics=metrics
            )
        elif self._stopping:
            self._finish(job.job_id, JobState.FAILED, SERVER_STOPPED, error=SERVER_STOPPED)
        else:
            reason = f"interrupted: {describe_exit(returncode)}; nothing was published"
            self._finish(job.job_id, JobState.FAILED, reason, error=reason)
        log.info(
            "job %s ended %s (worker exit status %s)",
            job.job_id,
            self._store.get_job(job.job_id).state.value,
            returncode,
        )

    async def _succeeded(self, job: Job, outcome: dict) -> None:
        """The worker published a version: SUCCEEDED once the server serves it (or its version
        policy deliberately does not); FAILED, with the version moved aside, if it cannot load."""
        version = int(outcome["output_version"])
        metrics = FineTuneMetrics.from_dict(outcome["metrics"]) if outcome.get("metrics") else None
        self._store.update_job(job.job_id, output_version=version, artifacts=outcome.get("artifacts") or [])
        self._event(
            job.job_id,
            JobState.RUNNING,
            JobPhase.EXPORTING,
            f"loading {job.output_model} v{version}",
            progress=1.0,
        )
        try:
            loaded = await load_published(self.repository, job.output_model, version, LOAD_WAIT_S)
        except Exception:  # the repository's own failure: say so rather than leave the job RUNNING
            log.exception("reloading the model root after publishing %s v%d failed", job.output_model, version)
            loaded = LoadOutcome(False, error="the server's reload of the model root failed (see the server log)")
        if loaded.failed:
            where = "it stays in place"
            if loaded.broken:
                moved = await asyncio.to_thread(
                    quarantine, self.settings.model_root, job.output_model, version, job.job_id
                )
                where = f"it was moved aside to {moved}" if moved else "it could not be moved aside (see the server log)"
                try:
                    await self.repository.reconcile()  # forget the failed entry of the moved version
                except Exception:  # the job's outcome stands; the next poll tries again
                    log.exception("reloading the model root after moving %s v%d aside failed", job.output_model, version)
            reason = (
                f"the server could not load the new version {job.output_model} v{version}: {loaded.error}; "
                f"it is not served ({where})"
            )
            log.error("job %s: %s", job.job_id, reason)
            self._finish(job.job_id, JobState.FAILED, reason, error=reason, metrics=metrics)
            return
        note = "now served" if loaded.served else f"published, {loaded.not_served_note}"
        accuracy = f"; validation accuracy {metrics.val_accuracy:.4f}" if metrics else ""
        self._finish(
            job.job_id,
            JobState.SUCCEEDED,
            f"{job.output_model} v{version} {note}{accuracy}",
            output_version=version,
            metrics=metrics,
        )

    # --- records and wake-ups --------------------------------------------------------------------

    def _finish(self, job_id: str, state: JobState, message: str, **changes) -> Job:
        if changes.get("metrics") is None:
            changes.pop("metrics", None)
        if state is JobState.FAILED:
            changes.setdefault("error", message)  # a FAILED job always says why
        job = self._store.update_job(job_id, state=state, finished_at=time.time(), **changes)
        self._event(job_id, state, job.phase, message, progress=1.0 if state is JobState.SUCCEEDED else 0.0)
        return job

    def _event(self, job_id: str, state: JobState, phase: JobPhase, message: str, **fields) -> JobEvent:
        event = self._store.append_event(job_id, state, phase, message, **fields)
        self._notify()
        return event

    def _notify(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()
