"""The job store survives the server: a server killed mid-job takes its worker along, and on restart
the running job is FAILED (interrupted), nothing is published and queued jobs run."""

from __future__ import annotations

import os
import time

import grpc

from protos.imageserve.v1 import image_service_pb2 as pb
from protos.imageserve.v1 import image_service_pb2_grpc as pb_grpc
from tests.server.finetune.helpers import (
    process_gone,
    start,
    upload,
    versions_on_disk,
    wait_event,
    watch,
    worker_pid,
)
from tests.servers import InProcessServer, SubprocessServer, copy_version, test_settings, wait_for

INTERRUPTED = "interrupted: the server stopped while the job was running"


def test_server_killed_with_a_job_running(tmp_path, features_export, digits):
    root, state = tmp_path / "models", tmp_path / "state"
    copy_version(features_export.path, root, "vgg16", 1)
    args = ["--model-root", str(root), "--state-dir", str(state), "--host", "127.0.0.1", "--port", "0",
            "--metrics-port", "off", "--poll-interval-s", "0.2"]  # fmt: skip
    first = SubprocessServer(args).start()
    try:
        first.wait_serving()
        with grpc.insecure_channel(first.address) as channel:
            stub = pb_grpc.ImageModelServiceStub(channel)
            dataset = upload(stub, *digits.subset(6), name="small")
            running = start(
                stub, "restarted", dataset_id=dataset.dataset_id, epochs=1000, early_stopping_patience=1000
            )
            queued = start(stub, "requeued", dataset_id=dataset.dataset_id, epochs=1)
            pid = worker_pid(stub, running.job_id)
            wait_event(stub, running.job_id, lambda e: e.HasField("epoch"))
    finally:
        first.kill()  # SIGKILL: no chance to clean up
    wait_for(lambda: process_gone(pid), 30, what="the worker to die with its server")
    # What a publish killed mid-write leaves: the job's own worker's, an old one of a dead exporter, and
    # a recent one whose writer is not a process here (another host's export in progress, maybe).
    leftover = root / "restarted" / f".staging-1-{pid}-x1y2z3"
    old = root / "other" / f".staging-3-{first.process.pid}-old"
    recent = root / "other" / f".staging-4-{first.process.pid}-new"
    for directory in (leftover, old, recent):
        directory.mkdir(parents=True)
    os.utime(old, (time.time() - 7200, time.time() - 7200))

    second = SubprocessServer(args).start()
    try:
        second.wait_serving()
        with grpc.insecure_channel(second.address) as channel:
            stub = pb_grpc.ImageModelServiceStub(channel)
            job = stub.GetFineTuneJob(pb.GetFineTuneJobRequest(job_id=running.job_id), timeout=30)
            assert job.state == pb.FAILED and job.error == INTERRUPTED
            assert job.phase == pb.TRAINING and job.HasField("finished_at")
            history = list(watch(stub, running.job_id, timeout=30))
            assert history[-1].state == pb.FAILED and history[-1].message == INTERRUPTED
            assert any(e.HasField("epoch") for e in history), "events from before the restart are kept"
            assert not leftover.exists(), "the interrupted job's unfinished version was not removed"
            assert not old.exists() and recent.exists()
            assert versions_on_disk(root / "restarted") == []

            # The queued job runs on the new server.
            wait_event(stub, queued.job_id, lambda e: "queued again" in e.message, timeout=30)
            wait_event(stub, queued.job_id, lambda e: e.state == pb.RUNNING)
            assert (
                stub.CancelFineTuneJob(pb.CancelFineTuneJobRequest(job_id=queued.job_id), timeout=60).state
                == pb.CANCELLED
            )
            listed = stub.ListFineTuneJobs(pb.ListFineTuneJobsRequest(), timeout=30).jobs
            assert [j.job_id for j in listed] == [queued.job_id, running.job_id]
        assert second.terminate() == 0
    finally:
        second.kill()


def test_graceful_stop_with_a_job_running(tmp_path, features_export, digits):
    root, state = tmp_path / "models", tmp_path / "state"
    copy_version(features_export.path, root, "vgg16", 1)
    first = InProcessServer(test_settings(root, state_dir=state)).start()
    try:
        with grpc.insecure_channel(first.address) as channel:
            stub = pb_grpc.ImageModelServiceStub(channel)
            dataset = upload(stub, *digits.subset(6), name="small")
            job = start(
                stub, "stopped", dataset_id=dataset.dataset_id, epochs=1000, early_stopping_patience=1000
            )
            pid = worker_pid(stub, job.job_id)
            wait_event(stub, job.job_id, lambda e: e.HasField("epoch"))
    finally:
        first.stop()
    assert process_gone(pid), "the worker outlived a stopped server"

    second = InProcessServer(test_settings(root, state_dir=state)).start()
    try:
        with grpc.insecure_channel(second.address) as channel:
            stub = pb_grpc.ImageModelServiceStub(channel)
            job = stub.GetFineTuneJob(pb.GetFineTuneJobRequest(job_id=job.job_id), timeout=30)
            assert job.state == pb.FAILED and job.error == INTERRUPTED
            assert list(watch(stub, job.job_id, timeout=30))[-1].message == INTERRUPTED
            assert versions_on_disk(root / "stopped") == []
    finally:
        second.stop()
