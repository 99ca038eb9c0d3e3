"""``python -m client fine-tune / jobs / job / cancel`` as a user runs them, against a real server."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from client import JobState
from tests.client.conftest import PER_CLASS
from tests.conftest import REPO_ROOT

EXIT_SERVER_ERROR, EXIT_USAGE, EXIT_JOB_FAILED = 1, 2, 4


def run_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if k != "IMAGESERVE_ADDRESS"}
    return subprocess.run(
        [sys.executable, "-m", "client", *args],
        cwd=REPO_ROOT,
        env=environ,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="module")
def cli_job(tuning_server, digits_dir):
    """``fine-tune DIR ... --json`` run to the job's end: (process, parsed JSON)."""
    result = run_cli(
        "fine-tune",
        str(digits_dir),
        "--base",
        "vgg16",
        "--output",
        "digits_cli",
        "--epochs",
        "2",
        "--batch-size",
        "16",
        "--json",
        "--address",
        tuning_server.address,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    return result, json.loads(result.stdout)


def test_fine_tune_uploads_a_directory_and_prints_the_final_job(cli_job, tuner, digits):
    result, job = cli_job
    assert job["state"] == "SUCCEEDED" and job["error"] == ""
    assert (job["output_model"], job["output_version"], job["base_model"]) == ("digits_cli", 1, "vgg16")
    assert job["dataset"]["name"] == "digits" and job["dataset"]["num_images"] == 10 * PER_CLASS
    assert job["hyperparameters"]["epochs"] == 2 and job["hyperparameters"]["batch_size"] == 16
    assert job["hyperparameters"]["hidden_units"] == 256  # the server's default, filled in
    metrics = job["metrics"]
    assert 0.0 <= metrics["val_accuracy"] <= 1.0 and metrics["epochs_run"] <= 2
    assert [c["label"] for c in metrics["per_class"]] == [str(d) for d in range(10)]
    assert set(metrics["per_class"][0]) == {"label", "precision", "recall", "support"}
    assert job["artifacts"] == [
        f"digits_cli/1/{name}" for name in ("metrics.json", "training_curve.png", "confusion_matrix.png")
    ]
    # Not a terminal: no progress bar, one line per stage of the job on stderr.
    job_id = job["job_id"]
    assert result.stderr.startswith("uploading ")
    dataset_id = job["dataset"]["dataset_id"]
    assert (
        f"job {job_id} QUEUED: 60 images of 10 classes (dataset {dataset_id}; --dataset {dataset_id} "
        "trains on it again without an upload) -> digits_cli" in result.stderr
    )
    stages = ["QUEUED: queued", "RUNNING: training worker started", "VALIDATING: ", "EXTRACTING_FEATURES: "]
    stages += ["TRAINING: ", "EXPORTING: ", "SUCCEEDED: digits_cli v1 now served"]
    for stage in stages:
        assert f"\n{job_id} {stage}" in result.stderr, (stage, result.stderr)
    # The new version is served.
    classified = tuner.classify(digits.test_images[:3], "digits_cli", top_k=1)
    assert classified.version == 1 and all(p[0].label in [str(d) for d in range(10)] for p in classified)


def test_job_prints_metrics_per_class_table_artifacts_and_version(cli_job, tuning_server):
    _result, job = cli_job
    result = run_cli("job", job["job_id"], "--address", tuning_server.address)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"job {job['job_id']} SUCCEEDED in ")
    assert lines[0].endswith(": published digits_cli v1 (base vgg16 v1)")
    assert lines[1] == "dataset: digits, 60 images, 10 classes (imbalance ratio 1.00)"
    assert lines[2].startswith(f"validation accuracy {job['metrics']['val_accuracy']:.4f}, loss ")
    assert lines[3].split() == ["class", "precision", "recall", "support"]
    assert [line.split()[0] for line in lines[4:14]] == [str(d) for d in range(10)]
    assert lines[14] == "metrics and plots (relative to the server's model root):"
    assert lines[15:18] == [f"  {artifact}" for artifact in job["artifacts"]]
    assert lines[18] == "classify with: python -m client classify IMAGE --model digits_cli --version 1"


def test_an_ended_job_cannot_be_cancelled(cli_job, tuning_server):
    _result, job = cli_job
    result = run_cli("cancel", job["job_id"], "--address", tuning_server.address)
    assert result.returncode == EXIT_SERVER_ERROR
    assert result.stderr.startswith("error: FAILED_PRECONDITION: ") and "already SUCCEEDED" in result.stderr


def test_jobs_lists_and_filters(cli_job, tuning_server):
    _result, job = cli_job
    listed = run_cli("jobs", "--state", "SUCCEEDED", "--json", "--address", tuning_server.address)
    assert listed.returncode == 0, listed.stderr
    jobs = json.loads(listed.stdout)
    assert job["job_id"] in [j["job_id"] for j in jobs] and {j["state"] for j in jobs} == {"SUCCEEDED"}

    table = run_cli("jobs", "--limit", "1", "--address", tuning_server.address)
    assert table.returncode == 0, table.stderr
    header, *rows = table.stdout.splitlines()
    assert header.split() == [
        "job",
        "state",
        "phase",
        "output",
        "base",
        "images",
        "val_acc",
        "created",
        "error",
    ]
    assert len(rows) == 1


def test_no_wait_then_cancel(tuning_server, digits_dir):
    started = run_cli(
        "fine-tune", str(digits_dir), "--output", "cli_cancelled", "--epochs", "1000", "--patience", "1000",
        "--no-wait", "--json", "--address", tuning_server.address,
    )  # fmt: skip
    assert started.returncode == 0, started.stderr
    job = json.loads(started.stdout)
    assert job["state"] in ("QUEUED", "RUNNING") and job["hyperparameters"]["early_stopping_patience"] == 1000

    cancelled = run_cli("cancel", job["job_id"], "--address", tuning_server.address)
    assert cancelled.returncode == 0, cancelled.stderr
    assert cancelled.stdout.strip() == f"job {job['job_id']} CANCELLED: nothing was published"
    again = run_cli("cancel", job["job_id"], "--json", "--address", tuning_server.address)
    assert again.returncode == 0, again.stderr  # cancelling twice is harmless
    assert json.loads(again.stdout)["state"] == "CANCELLED"

    waited = run_cli("job", job["job_id"], "--wait", "--address", tuning_server.address)
    assert waited.returncode == EXIT_JOB_FAILED
    assert f"error: fine-tuning job {job['job_id']} CANCELLED" in waited.stderr


def test_a_failed_job_exits_4_with_the_reason(gated, tuning_server):
    result = run_cli("job", gated.job_id, "--wait", "--json", "--address", tuning_server.address, timeout=300)
    assert result.returncode == EXIT_JOB_FAILED, result.stderr
    job = json.loads(result.stdout)
    assert job["state"] == JobState.FAILED.name and "below min_val_accuracy 0.9" in job["error"]
    assert job["metrics"]["val_accuracy"] < 0.9 and job["artifacts"] == []
    assert f"error: fine-tuning job {gated.job_id} FAILED: validation accuracy" in result.stderr


@pytest.mark.parametrize(
    ("args", "code", "fragment"),
    [
        (
            ["fine-tune", "/nonexistent/dir", "--output", "x"],
            EXIT_USAGE,
            "/nonexistent/dir is not a directory",
        ),
        (["fine-tune", "--output", "x"], EXIT_USAGE, "give a local directory DIR to upload, --data-dir PATH"),
        (
            ["fine-tune", "--data-dir", "nowhere", "--output", "x"],
            EXIT_SERVER_ERROR,
            "NOT_FOUND: data_dir 'nowhere'",
        ),
        (["job", "ft-none"], EXIT_SERVER_ERROR, "NOT_FOUND: unknown fine-tuning job 'ft-none'"),
    ],
)
def test_errors_and_exit_codes(tuning_server, args, code, fragment):
    result = run_cli(*args, "--address", tuning_server.address)
    assert result.returncode == code, result.stderr
    assert fragment in result.stderr and "Traceback" not in result.stderr


def test_a_dataset_already_uploaded_is_trained_on_again_without_an_upload(cli_job, tuning_server):
    """A retry after a failed job: --dataset ID, the id the first fine-tune printed."""
    _result, first = cli_job
    dataset_id = first["dataset"]["dataset_id"]
    result = run_cli(
        "fine-tune", "--dataset", dataset_id, "--output", "digits_again", "--epochs", "1000",
        "--patience", "1000", "--no-wait", "--json", "--address", tuning_server.address,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "uploading" not in result.stderr
    job = json.loads(result.stdout)
    assert job["dataset"]["dataset_id"] == dataset_id and job["dataset"]["num_images"] == 60
    cancelled = run_cli("cancel", job["job_id"], "--address", tuning_server.address)
    assert cancelled.returncode == 0, cancelled.stderr
