"""Two ``python -m server`` replicas sharing one PostgreSQL job store, one state directory and one
model root: any replica answers for any job, one replica runs each job, a cancel reaches the runner
wherever it is, a replica stopped mid-job hands its job to the other, and the job of a replica killed
mid-job is taken over by the other once its lease expires and run again."""

from __future__ import annotations

import re
import time
from pathlib import Path

import grpc
import pytest

from protos.imageserve.v1 import image_service_pb2 as pb
from protos.imageserve.v1 import image_service_pb2_grpc as pb_grpc
from tests.server.finetune.helpers import (
    load_digit_images,
    process_gone,
    start,
    upload,
    wait_done,
    wait_event,
    watch,
)
from tests.servers import SubprocessServer, copy_version, wait_for

# Replicas (server processes) sharing PostgreSQL: the fleet is the slow tier's.
pytestmark = pytest.mark.slow

LEASE_S = 3.0
#: A job that runs until it is cancelled or killed (every epoch is an event).
FOREVER = {"epochs": 1000, "early_stopping_patience": 1000}
STARTED = re.compile(r"training worker started \(pid (\d+), \d+ threads\) on replica (\S+)")


@pytest.fixture(scope="module")
def replicas(tmp_path_factory, features_export, postgres):
    root, state = tmp_path_factory.mktemp("shared-models"), tmp_path_factory.mktemp("shared-state")
    copy_version(features_export.path, root, "vgg16", 1)
    url = postgres.fresh_database("replicas")
    args = ["--model-root", str(root), "--state-dir", str(state), "--host", "127.0.0.1", "--port", "0",
            "--metrics-port", "off", "--poll-interval-s", "0.2", "--runtime", "tensorflow",
            "--finetune-threads", "1", "--finetune-lease-s", str(LEASE_S)]  # fmt: skip
    servers = [SubprocessServer(args, env={"IMAGESERVE_FINETUNE_STORE": url}).start() for _ in range(2)]
    try:
        for server in servers:
            server.wait_serving()
        yield servers
    finally:
        for server in servers:
            server.kill()


@pytest.fixture
def stubs(replicas):
    """Stubs of the two replicas as they are now, both running: a test that stops or kills one (each
    binds port 0, so a replacement listens elsewhere) leaves the next test a whole fleet."""
    for index, server in enumerate(replicas):
        if server.process.poll() is not None:
            replicas[index] = SubprocessServer(server.args, env=server.env).start()
        replicas[index].wait_serving()
    channels = [grpc.insecure_channel(server.address) for server in replicas]
    yield [pb_grpc.ImageModelServiceStub(channel) for channel in channels]
    for channel in channels:
        channel.close()


@pytest.fixture(scope="module")
def dataset(replicas):
    """Uploaded through replica A only: replica B reads the same state directory."""
    images, labels = load_digit_images(test_size=100).subset(6, classes=tuple("0123"))
    with grpc.insecure_channel(replicas[0].address) as channel:
        return upload(pb_grpc.ImageModelServiceStub(channel), images, labels, name="shared")


def runner_of(stub, job_id: str, after: int = 0) -> tuple[int, str, int]:
    """The (worker pid, replica id, event id) of the first 'training worker started' event after ``after``."""
    event = wait_event(stub, job_id, lambda e: "training worker started" in e.message, after=after)
    pid, replica = STARTED.search(event.message).groups()
    return int(pid), replica, event.event_id


def first_epoch(stub, job_id: str, after: int = 0) -> pb.FineTuneEvent:
    return wait_event(stub, job_id, lambda e: e.HasField("epoch"), after=after)


def replica_of(servers, replica: str) -> int:
    """The index of the server whose id (host:pid) is ``replica``."""
    return next(i for i, s in enumerate(servers) if replica.endswith(f":{s.process.pid}"))


def test_jobs_are_shared_run_once_and_cancelled_from_any_replica(replicas, stubs, dataset):
    a, b = stubs
    # Both started on A; each replica runs one job at a time, so B claims the second (NOTIFY wakes it).
    first = start(a, "shared-one", dataset_id=dataset.dataset_id, **FOREVER)
    second = start(a, "shared-two", dataset_id=dataset.dataset_id, **FOREVER)
    runners = {job.job_id: runner_of(b, job.job_id)[:2] for job in (first, second)}
    assert {replica_of(replicas, replica) for _pid, replica in runners.values()} == {0, 1}

    # B watches and gets the job A runs (and the other way round), live, with its epochs.
    for stub, job in ((b, first), (a, second)):
        epoch = first_epoch(stub, job.job_id)
        assert epoch.state == pb.RUNNING and epoch.phase == pb.TRAINING
        got = stub.GetFineTuneJob(pb.GetFineTuneJobRequest(job_id=job.job_id), timeout=30)
        assert got.state == pb.RUNNING and got.dataset.dataset_id == dataset.dataset_id
    for stub in stubs:
        listed = stub.ListFineTuneJobs(pb.ListFineTuneJobsRequest(), timeout=30).jobs
        assert [j.job_id for j in listed] == [second.job_id, first.job_id]

    # Each job is cancelled through the replica that does not run it.
    for job in (first, second):
        pid, replica = runners[job.job_id]
        other = stubs[1 - replica_of(replicas, replica)]
        cancelled = other.CancelFineTuneJob(pb.CancelFineTuneJobRequest(job_id=job.job_id), timeout=60)
        assert cancelled.state == pb.CANCELLED, pb.JobState.Name(cancelled.state)
        wait_for(lambda pid=pid: process_gone(pid), 30, what="the cancelled job's worker to end")
        history = list(watch(stubs[replica_of(replicas, replica)], job.job_id, timeout=30))
        assert history[-1].message == "cancelled; the worker was stopped and nothing was published"
        assert sum("training worker started" in e.message for e in history) == 1, "run exactly once"
        assert [e.event_id for e in history] == list(range(1, len(history) + 1))
    for server in replicas:
        assert "Traceback" not in server.log_text(), server.log_text()[-3000:]


def test_a_stopped_replica_hands_its_job_over_and_a_killed_ones_job_runs_again(replicas, stubs, dataset):
    job = start(stubs[0], "handed-over", dataset_id=dataset.dataset_id, **FOREVER)
    _pid, first_runner, _ = runner_of(stubs[0], job.job_id)
    stopping = replica_of(replicas, first_runner)
    survivor = stubs[1 - stopping]
    first_epoch(survivor, job.job_id)

    # SIGTERM (a rolling update): the job goes back to the queue and the other replica runs it.
    assert replicas[stopping].terminate() == 0
    requeued = f"replica {first_runner} stopped; the job is queued again for another replica"
    queued = wait_event(survivor, job.job_id, lambda e: e.state == pb.QUEUED and e.message == requeued, 60)
    pid, second_runner, started = runner_of(survivor, job.job_id, after=queued.event_id)
    assert replica_of(replicas, second_runner) == 1 - stopping
    first_epoch(survivor, job.job_id, after=started)

    # A new replica takes the stopped one's place; then the runner is SIGKILLed mid-job: once its
    # lease expires, the newcomer takes the job over and runs it again (nothing was published).
    replicas[stopping] = SubprocessServer(replicas[stopping].args, env=replicas[stopping].env).start()
    replicas[stopping].wait_serving()
    with grpc.insecure_channel(replicas[stopping].address) as channel:
        newcomer = pb_grpc.ImageModelServiceStub(channel)
        replicas[1 - stopping].kill()  # SIGKILL: no chance to hand the job over
        killed_at = time.monotonic()
        again = wait_event(
            newcomer, job.job_id, lambda e: "running the job again: attempt 2 of 3" in e.message, LEASE_S + 60
        )
        took = time.monotonic() - killed_at
        assert (
            again.state == pb.QUEUED
            and f"replica {second_runner} stopped (its lease expired)" in again.message
        )
        assert took < LEASE_S + 10, f"the newcomer took {took:.1f} s to notice"
        wait_for(lambda: process_gone(pid), 30, what="the worker to die with its replica")
        _pid, third_runner, started = runner_of(newcomer, job.job_id, after=again.event_id)
        assert replica_of(replicas, third_runner) == stopping
        first_epoch(newcomer, job.job_id, after=started)
        cancelled = newcomer.CancelFineTuneJob(pb.CancelFineTuneJobRequest(job_id=job.job_id), timeout=60)
        assert cancelled.state == pb.CANCELLED


def test_a_job_survives_the_death_of_its_replica_and_publishes_once(replicas, stubs, dataset):
    """SIGKILL the replica running a job: the survivor runs it again to the end; one version."""
    # What it learns is not the point (the gate has its own tests): min_val_accuracy 0 publishes it.
    job = start(stubs[0], "survivor", dataset_id=dataset.dataset_id, epochs=40, early_stopping_patience=1000,
                min_val_accuracy=0.0)  # fmt: skip
    pid, runner, started = runner_of(stubs[0], job.job_id)
    dying = replica_of(replicas, runner)
    survivor = stubs[1 - dying]
    first_epoch(survivor, job.job_id, after=started)
    replicas[dying].kill()
    wait_for(lambda: process_gone(pid), 30, what="the worker to die with its replica")
    final, events = wait_done(survivor, job.job_id)
    assert final.state == pb.SUCCEEDED, final.error
    assert final.output_version == 1
    assert sum("running the job again: attempt 2 of 3" in e.message for e in events) == 1
    root = Path(replicas[1 - dying].args[replicas[1 - dying].args.index("--model-root") + 1])
    assert sorted(p.name for p in (root / "survivor").iterdir() if not p.name.startswith(".")) == ["1"]
