"""One claimed job, run in a training worker process: its messages become the job's events, its
outcome the job's end. The job is RUNNING (claimed) before :meth:`JobRunner.run` starts.

How a job ends, by what happened to the worker:

- it reported success: SUCCEEDED once the server serves the version (FAILED if it cannot load it);
- it published but was killed before saying so (the manifests tell): SUCCEEDED all the same;
- it was cancelled: CANCELLED; it reported a failure: FAILED with its reason;
- the server is stopping: QUEUED again for another replica when the store is shared, else FAILED
  ("interrupted: the server stopped ..."); it died: FAILED with how;
- another server took the job over (this one lost its lease): that server's outcome stands.

A job whose runner is gone (its server died; :func:`end_orphan`) is SUCCEEDED if it had published
(its manifests say so; publishing is atomic, so a version is there whole or not at all). Otherwise,
on its own server's restart, FAILED: "interrupted: the server stopped ..."; on another replica once
the lease expired, QUEUED again and run by a survivor ("replica X stopped ...; running the job again:
attempt 2 of 3"), up to ``finetune_max_attempts`` runs, then FAILED.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from server.errors import ServingError
from server.finetune.datasets import UPLOAD
from server.finetune.intake import DatasetIntake
from server.finetune.jobs import Job, JobPhase, JobState
from server.finetune.journal import Journal
from server.finetune.messages import Failed, Outcome, Progress, Succeeded
from server.finetune.pipeline import JobSpec
from server.finetune.publication import LoadOutcome, load_published, quarantine
from server.finetune.worker_process import WorkerProcess, describe_exit, published_version, remove_staging_of
from server.repository import ModelRepository
from server.served import ModelRef
from server.settings import ServerSettings
from storage.datasets import remote_url
from storage.roots import absolute, is_url

log = logging.getLogger("server.finetune.manager")

#: How long a finished job waits for the repository to load its new version before SUCCEEDED.
LOAD_WAIT_S = 600.0
SERVER_STOPPED = "interrupted: the server stopped while the job was running"


class JobRunner:
    """Runs one job; :meth:`cancel` and :meth:`stop` end its worker from outside."""

    def __init__(
        self,
        job: Job,
        settings: ServerSettings,
        repository: ModelRepository,
        journal: Journal,
        intake: DatasetIntake,
        replica: str = "",
    ) -> None:
        """``replica``: this server's id among replicas sharing the store (empty when it is alone)."""
        self.job = job
        self.replica = replica
        self.settings = settings
        self.repository = repository
        self.journal = journal
        self.intake = intake
        self.worker: WorkerProcess | None = None
        self.cancelled = False
        self.stopping = False
        self.lease_lost = False

    def cancel(self) -> None:
        if not self.cancelled:
            self.cancelled = True
            if self.worker is not None:
                log.info("job %s: cancelling, terminating worker %d", self.job.job_id, self.worker.pid)
            self._terminate()

    def stop(self) -> None:
        """The server is stopping: the worker ends now (its job FAILS as interrupted)."""
        self.stopping = True
        if self.worker is not None:
            self.worker.close_stdin()
        self._terminate()

    def lose_lease(self) -> None:
        """Another server declared this job orphaned: stop working on it, write nothing more."""
        log.warning("job %s: the lease was lost to another server; stopping the worker", self.job.job_id)
        self.lease_lost = True
        self._terminate()

    def _terminate(self) -> None:
        if self.worker is not None:
            self.worker.terminate()

    def _spec(self) -> dict:
        job, store = self.job, self.journal.store
        data_root = self.settings.data_root
        spec = JobSpec(
            job_id=job.job_id,
            base_model=job.base_model,
            base_version=job.base_version,
            base_path=store.base_path(job.job_id),
            output_model=job.output_model,
            model_root=absolute(self.settings.model_root),
            dataset_index=str(self.intake.index_path(job.dataset.dataset_id).resolve()),
            dataset_kind=store.dataset_kind(job.dataset.dataset_id) or UPLOAD,
            hyperparameters=job.hyperparameters.to_dict(),
            threads=self.settings.finetune_threads,
            max_image_pixels=self.settings.max_image_pixels,
            data_root=str(Path(data_root).resolve()) if data_root is not None else None,
            onnx_cache=str(
                (Path(self.settings.state_dir) / "onnx").resolve()
            ),  # server/runtime.py cache_dir_for
            min_margin_over_chance=self.settings.finetune_min_margin_over_chance,
            publish_twin=self.settings.runtime_for(job.output_model) != "tensorflow",
            **self._base_features(),
        )
        return spec.__dict__

    def _base_features(self) -> dict[str, str]:
        """What computes the base's features in serving: the loaded version's runtime and precision
        (``auto`` chose them at its load), else the settings' for the base model."""
        job = self.job
        try:
            model = self.repository.resolve(ModelRef(job.base_model, job.base_version)).model
        except ServingError:  # not served now (unloaded, another version): the settings decide
            model = None
        if model is not None and model.has("features"):
            runtime, precision = model.runtime_of("features"), model.precision_of("features")
            return {"base_runtime": runtime, "base_precision": precision}
        return {
            "base_runtime": self.settings.runtime_for(job.base_model),
            "base_precision": self.settings.precision_for(job.base_model),
        }

    async def run(self) -> None:
        job, store, journal = self.job, self.journal.store, self.journal
        threads = self.settings.finetune_threads
        if not await self._dataset_here():
            return
        try:
            worker = await WorkerProcess.spawn(self._spec(), threads, self.settings.log_level)
        except OSError as exc:
            journal.finish(job.job_id, JobState.FAILED, f"could not start a training worker: {exc.strerror}")
            return
        self.worker = worker
        store.update_job(job.job_id, worker_pid=worker.pid)
        where = f" on replica {self.replica}" if self.replica else ""
        journal.event(
            job.job_id,
            JobState.RUNNING,
            job.phase,
            f"training worker started (pid {worker.pid}, {threads} threads){where}",
        )
        log.info("job %s: worker pid %d started", job.job_id, worker.pid)
        if self.cancelled or self.stopping or self.lease_lost:
            worker.terminate()
        outcome: Outcome | None = None
        phase = job.phase
        async for message in worker.messages():
            if self.lease_lost:
                continue
            if isinstance(message, Progress):
                if message.phase is not phase:
                    phase = message.phase
                    store.update_job(job.job_id, phase=phase)
                journal.event(
                    job.job_id,
                    JobState.RUNNING,
                    phase,
                    message.message,
                    progress=message.progress,
                    eta_seconds=message.eta_seconds,
                    epoch=message.epoch,
                )
            else:
                outcome = message
        returncode = await worker.wait()
        await self._ended(outcome, returncode)
        log.info(
            "job %s ended %s (worker exit status %s)",
            job.job_id,
            store.get_job(job.job_id).state.value,
            returncode,
        )

    async def _dataset_here(self) -> bool:
        """Copy the job's dataset from the bucket model root if this replica lacks it; False (the job
        FAILED) if it cannot."""
        job, journal = self.job, self.journal
        dataset_id = job.dataset.dataset_id
        try:
            copied = await asyncio.to_thread(self.intake.ensure_local, dataset_id)
        except (OSError, ValueError) as exc:
            source = remote_url(self.settings.model_root, dataset_id)
            reason = f"could not copy the dataset {dataset_id} from {source}: {exc}; upload it again"
            log.error("job %s: %s", job.job_id, reason)
            journal.finish(job.job_id, JobState.FAILED, reason, error=reason)
            return False
        if copied:
            message = f"dataset {dataset_id} copied from the model root's bucket"
            log.info("job %s: %s", job.job_id, message)
            journal.event(job.job_id, JobState.RUNNING, job.phase, message)
        return True

    async def _ended(self, outcome: Outcome | None, returncode: int) -> None:
        job, journal = self.job, self.journal
        model_dir = Path(self.settings.model_root) / job.output_model
        if isinstance(outcome, Succeeded) and not self.lease_lost:
            await self._succeeded(outcome)
            return
        for name in await asyncio.to_thread(remove_staging_of, model_dir, self.worker.pid):
            log.info("job %s: removed the unfinished version %s/%s", job.job_id, job.output_model, name)
        if self.lease_lost:
            return
        version = await asyncio.to_thread(
            published_version, self.settings.model_root, job.output_model, job.job_id
        )
        if version is not None:  # killed between the atomic rename and its report: it did publish
            await self._succeeded(Succeeded(version))
        elif self.cancelled:
            journal.finish(
                job.job_id, JobState.CANCELLED, "cancelled; the worker was stopped and nothing was published"
            )
        elif isinstance(outcome, Failed):
            journal.finish(
                job.job_id, JobState.FAILED, outcome.error, error=outcome.error, metrics=outcome.metrics
            )
        elif self.stopping:  # with a shared store, another replica runs it again from the start
            if not (self.replica and journal.requeue(job.job_id, self.replica, self._requeued())):
                journal.finish(job.job_id, JobState.FAILED, SERVER_STOPPED, error=SERVER_STOPPED)
        else:
            reason = f"interrupted: {describe_exit(returncode)}; nothing was published"
            journal.finish(job.job_id, JobState.FAILED, reason, error=reason)

    def _requeued(self) -> str:
        return f"replica {self.replica} stopped; the job is queued again for another replica"

    async def _succeeded(self, outcome: Succeeded) -> None:
        """The worker published a version: SUCCEEDED once the server serves it (or its version
        policy deliberately does not); FAILED, with the version moved aside, if it cannot load."""
        job, journal = self.job, self.journal
        version, metrics = outcome.output_version, outcome.metrics
        journal.store.update_job(job.job_id, output_version=version, artifacts=outcome.artifacts)
        journal.event(
            job.job_id,
            JobState.RUNNING,
            JobPhase.EXPORTING,
            f"loading {job.output_model} v{version}",
            progress=1.0,
        )
        try:
            loaded = await load_published(self.repository, job.output_model, version, LOAD_WAIT_S)
        except Exception:  # the repository's own failure: say so rather than leave the job RUNNING
            log.exception(
                "reloading the model root after publishing %s v%d failed", job.output_model, version
            )
            loaded = LoadOutcome(
                False, error="the server's reload of the model root failed (see the server log)"
            )
        if loaded.failed:
            where = "it stays in place"
            if loaded.broken:
                moved = await asyncio.to_thread(
                    quarantine, self.settings.model_root, job.output_model, version, job.job_id
                )
                where = (
                    f"it was moved aside to {moved}"
                    if moved
                    else "it could not be moved aside (see the server log)"
                )
                try:
                    await self.repository.reconcile()  # forget the failed entry of the moved version
                except Exception:  # the job's outcome stands; the next poll tries again
                    log.exception(
                        "reloading the model root after moving %s v%d aside failed", job.output_model, version
                    )
            reason = (
                f"the server could not load the new version {job.output_model} v{version}: {loaded.error}; "
                f"it is not served ({where})"
            )
            log.error("job %s: %s", job.job_id, reason)
            journal.finish(job.job_id, JobState.FAILED, reason, error=reason, metrics=metrics)
            return
        note = "now served" if loaded.served else f"published, {loaded.not_served_note}"
        accuracy = f"; validation accuracy {metrics.val_accuracy:.4f}" if metrics else ""
        journal.finish(
            job.job_id,
            JobState.SUCCEEDED,
            f"{job.output_model} v{version} {note}{accuracy}",
            output_version=version,
            metrics=metrics,
        )


#: The words of the event that puts a job back in the queue after its replica died (counted as runs).
RUN_AGAIN = "running the job again"


def end_orphan(
    job: Job,
    owner: str | None,
    me: str,
    journal: Journal,
    model_root: Path | str,
    max_attempts: int,
    published: int | None,
) -> None:
    """End or requeue a RUNNING job whose runner is gone, after ``me`` took it over from ``owner``;
    ``published``: the version it published, if any (:func:`published_version`, read off the loop)."""
    store = journal.store
    own = owner in (None, me)
    pid = store.worker_pid(job.job_id)
    if pid and own and not is_url(model_root):  # a pid means something on this host only
        for name in remove_staging_of(Path(model_root) / job.output_model, pid):
            log.info("job %s: removed the unfinished version %s/%s", job.job_id, job.output_model, name)
    version = published
    if version is not None:  # it published just before its server died: never publish twice
        msg = f"published {job.output_model} v{version}"
        journal.finish(job.job_id, JobState.SUCCEEDED, msg, output_version=version)
    elif own:
        journal.finish(job.job_id, JobState.FAILED, SERVER_STOPPED)
    else:
        runs = 1 + sum(RUN_AGAIN in event.message for event in store.events_after(job.job_id, 0, limit=10**6))
        if runs < max_attempts:
            store.requeue(
                job.job_id,
                me,
                f"replica {owner} stopped (its lease expired) with nothing published; {RUN_AGAIN}: "
                f"attempt {runs + 1} of {max_attempts}",
            )
        else:
            reason = (
                f"interrupted: replica {owner} stopped (its lease expired), on attempt {runs} of "
                f"{max_attempts}; nothing was published"
            )
            journal.finish(job.job_id, JobState.FAILED, reason)
    log.info(
        "job %s was RUNNING when its server (%s) stopped: now %s",
        job.job_id,
        owner or "unknown",
        store.get_job(job.job_id).state.value,
    )
