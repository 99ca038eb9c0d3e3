"""The fine-tuning commands of ``python -m client``: ``fine-tune``, ``jobs``, ``job``, ``cancel``.

``fine-tune DIR --output NAME`` uploads a local directory (one sub-directory per class), starts a job
on the ``--base`` model, follows it until it ends (a tqdm bar when stderr is a terminal, one line per
phase otherwise) and prints the final metrics, the per-class precision/recall, the new model version
and where the plots are. ``--data-dir PATH`` trains on a directory under the server's data root
instead (nothing is uploaded); ``--no-wait`` prints the started job and returns.
"""

from __future__ import annotations

import argparse
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

from api_types.results import (
    HYPERPARAMETER_DEFAULTS,
    Dataset,
    Hyperparameters,
    JobEvent,
    JobPhase,
    JobState,
    JobStatus,
)
from client.cli_output import plain, print_json, table
from client.finetune import DEFAULT_BASE_MODEL, DEFAULT_LIST_LIMIT
from client.sync import ModelClient

__all__ = ["EXIT_JOB_FAILED", "COMMANDS", "add_commands"]

#: Exit code of ``fine-tune`` and ``job --wait`` when the job ended FAILED or CANCELLED.
EXIT_JOB_FAILED = 4

Command = Callable[[ModelClient, argparse.Namespace, TextIO], int | None]

#: Hyperparameter flags: (flag, Hyperparameters field, type, help); the help ends with the server's
#: default, from HYPERPARAMETER_DEFAULTS.
_HYPERPARAMETER_FLAGS: list[tuple[str, str, type, str]] = [
    ("--epochs", "epochs", int, "most epochs; early stopping may end sooner"),
    ("--batch-size", "batch_size", int, "batch size"),
    ("--learning-rate", "learning_rate", float, "Adam learning rate"),
    ("--hidden-units", "hidden_units", int, "units of the hidden layer of the head"),
    ("--dropout", "dropout", float, "dropout rate after the hidden layer"),
    ("--validation-fraction", "validation_fraction", float, "held out per class"),
    ("--seed", "seed", int, "seed of the split, initialisation and shuffling"),
    ("--patience", "early_stopping_patience", int, "epochs without val-loss improvement"),
    (
        "--min-val-accuracy",
        "min_val_accuracy",
        float,
        "accuracy gate: below it the job FAILS and publishes nothing",
    ),
    ("--min-images-per-class", "min_images_per_class", int, "fewest images per class accepted"),
]
_FINE_TUNE_DESCRIPTION = (
    "Upload DIR (one sub-directory of images per class, the Keras image_dataset_from_directory layout), "
    "start a job that fine-tunes --base on it and publishes a new version of --output, follow it until it "
    "ends, and print the final metrics, the per-class precision/recall, the new version and where the plots "
    "are. --data-dir trains on a directory under the server's data root instead (nothing is uploaded). "
    "--timeout bounds the upload and the start (default 30 s; give large directories more); the wait for "
    "the job has no bound (Ctrl-C stops waiting, the job goes on)."
)
_STATE_NAMES = [state.name for state in JobState if state is not JobState.UNSPECIFIED]


def add_commands(
    commands: argparse._SubParsersAction,
    common_options: Callable[[argparse.ArgumentParser], None],
    epilog: str,
) -> None:
    """Add the fine-tuning commands to the CLI's sub-parsers."""
    formatter = argparse.RawDescriptionHelpFormatter
    tune = commands.add_parser(
        "fine-tune",
        help="upload a directory of class folders and fine-tune a model on it",
        description=textwrap.fill(_FINE_TUNE_DESCRIPTION, 100),
        epilog=epilog,
        formatter_class=formatter,
    )
    tune.add_argument(
        "directory",
        nargs="?",
        type=Path,
        metavar="DIR",
        help="local directory with one sub-directory of images per class (uploaded)",
    )
    tune.add_argument(
        "--data-dir", metavar="PATH", help="instead of DIR: a directory under the server's data root"
    )
    tune.add_argument(
        "--dataset",
        metavar="ID",
        help="instead of DIR: a dataset already uploaded (its id, as an earlier fine-tune printed it)",
    )
    tune.add_argument(
        "--output", required=True, metavar="MODEL", help="model to publish a new version of, e.g. flowers"
    )
    tune.add_argument(
        "--base",
        default=DEFAULT_BASE_MODEL,
        metavar="MODEL",
        help=f"frozen base model (default {DEFAULT_BASE_MODEL})",
    )
    tune.add_argument(
        "--base-version", type=int, metavar="N", help="a version of the base (default: its default version)"
    )
    tune.add_argument("--name", help="name of the uploaded dataset (default: the directory's name)")
    tune.add_argument(
        "--request-id", metavar="KEY", help="idempotency key: the same key returns the same job"
    )
    hyper = tune.add_argument_group("hyperparameters (unset: the server's defaults)")
    for flag, field, kind, text in _HYPERPARAMETER_FLAGS:
        default, accepted = HYPERPARAMETER_DEFAULTS[field]
        text = f"{text} (server default {default}; {accepted})"
        hyper.add_argument(flag, dest=field, type=kind, metavar="N" if kind is int else "X", help=text)
    weighting = HYPERPARAMETER_DEFAULTS["class_weighting"][0]
    hyper.add_argument(
        "--balanced", action="store_true", help=f"balanced class weights (default: {weighting})"
    )
    hyper.add_argument(
        "--augment", action="store_true", help="random flips/rotations; turns the feature cache off (slower)"
    )
    tune.add_argument("--no-wait", action="store_true", help="print the started job and return")
    tune.add_argument("--json", action="store_true", help="print the job as JSON")
    common_options(tune)

    jobs = commands.add_parser("jobs", help="fine-tuning jobs, newest first")
    jobs.add_argument(
        "--state", action="append", choices=_STATE_NAMES, help="only jobs in this state (repeatable)"
    )
    jobs.add_argument(
        "--limit",
        type=int,
        default=DEFAULT_LIST_LIMIT,
        metavar="N",
        help=f"at most this many (default {DEFAULT_LIST_LIMIT})",
    )
    jobs.add_argument("--json", action="store_true", help="print JSON instead of a table")
    common_options(jobs)

    job = commands.add_parser(
        "job", help="one fine-tuning job: state, metrics, artifacts", epilog=epilog, formatter_class=formatter
    )
    job.add_argument("job_id", metavar="JOB_ID")
    job.add_argument("--wait", action="store_true", help="follow the job until it ends (exit 4 if it fails)")
    job.add_argument("--json", action="store_true", help="print JSON instead of text")
    common_options(job)

    cancel = commands.add_parser("cancel", help="cancel a queued or running fine-tuning job")
    cancel.add_argument("job_id", metavar="JOB_ID")
    cancel.add_argument("--json", action="store_true", help="print the job as JSON")
    common_options(cancel)


def _hyperparameters(args: argparse.Namespace) -> Hyperparameters:
    values = {field: getattr(args, field) for _flag, field, _kind, _text in _HYPERPARAMETER_FLAGS}
    return Hyperparameters(
        **values,
        class_weighting="balanced" if args.balanced else None,
        augment=True if args.augment else None,
    )


# --- output ----------------------------------------------------------------------------------------


def _seconds(status: JobStatus) -> str:
    if status.started_at is None or status.finished_at is None:
        return ""
    return f" in {(status.finished_at - status.started_at).total_seconds():.0f} s"


def report(status: JobStatus, out: TextIO) -> None:
    """A job as text: state, dataset, metrics, per-class precision/recall, artifacts."""
    head = f"job {status.job_id} {status.state.name}"
    if status.state is JobState.RUNNING:
        head += f" ({status.phase.name})"
    if status.succeeded:
        head += f"{_seconds(status)}: published {status.output_model} v{status.output_version}"
    else:
        head += f": output model {status.output_model}"
    print(f"{head} (base {status.base_model} v{status.base_version})", file=out)
    dataset = status.dataset
    print(
        f"dataset: {dataset.name or dataset.dataset_id}, {dataset.num_images} images, "
        f"{len(dataset.images_per_class)} classes (imbalance ratio {dataset.imbalance_ratio:.2f})",
        file=out,
    )
    if status.error:
        print(f"error: {status.error}", file=out)
    metrics = status.metrics
    if metrics is not None:
        print(
            f"validation accuracy {metrics.val_accuracy:.4f}, loss {metrics.val_loss:.4f} "
            f"(best epoch {metrics.best_epoch} of {metrics.epochs_run}); "
            f"training accuracy {metrics.train_accuracy:.4f}, loss {metrics.train_loss:.4f}",
            file=out,
        )
        rows = [(c.label, f"{c.precision:.4f}", f"{c.recall:.4f}", c.support) for c in metrics.per_class]
        table(("class", "precision", "recall", "support"), rows, out)
    if status.artifacts:
        print("metrics and plots (relative to the server's model root):", file=out)
        for artifact in status.artifacts:
            print(f"  {artifact}", file=out)
    if status.succeeded:
        print(
            f"classify with: python -m client classify IMAGE --model {status.output_model} "
            f"--version {status.output_version}",
            file=out,
        )


def _show(status: JobStatus, args: argparse.Namespace, out: TextIO) -> None:
    if args.json:
        print_json(plain(status), out)
    else:
        report(status, out)


class _PhaseLines:
    """Progress without a terminal (a log, CI): one line on stderr per stage of the job."""

    def __init__(self) -> None:
        self._stage: tuple[JobState, object] | None = None

    def __call__(self, event: JobEvent) -> None:
        stage = (event.state, event.phase if event.state is JobState.RUNNING else None)
        if stage != self._stage or event.state.done:
            self._stage = stage
            running = event.state is JobState.RUNNING and event.phase is not JobPhase.UNSPECIFIED
            where = event.phase.name if running else event.state.name
            print(f"{event.job_id} {where}: {event.message}", file=sys.stderr, flush=True)


def _wait_and_report(client: ModelClient, job_id: str, args: argparse.Namespace, out: TextIO) -> int:
    progress = None if sys.stderr.isatty() else _PhaseLines()
    try:
        status = client.wait_job(job_id, progress=progress, raise_on_failure=False)
    except KeyboardInterrupt:
        print(
            f"stopped waiting; job {job_id} goes on: python -m client job {job_id} --wait "
            f"(or: python -m client cancel {job_id})",
            file=sys.stderr,
        )
        raise
    _show(status, args, out)
    if not status.succeeded:
        print(
            f"error: fine-tuning job {job_id} {status.state.name}: {status.error or 'cancelled'}",
            file=sys.stderr,
        )
        return EXIT_JOB_FAILED
    return 0


# --- commands --------------------------------------------------------------------------------------


def _fine_tune(client: ModelClient, args: argparse.Namespace, out: TextIO) -> int:
    if sum(source is not None for source in (args.directory, args.data_dir, args.dataset)) != 1:
        raise ValueError(
            "give a local directory DIR to upload, --data-dir PATH on the server, or --dataset ID of an "
            "upload (one of them)"
        )
    if args.directory is not None:
        print(f"uploading {args.directory} ...", file=sys.stderr, flush=True)
    job = client.fine_tune(
        Dataset.by_id(args.dataset) if args.dataset is not None else args.directory,
        data_dir=args.data_dir,
        output_model=args.output,
        base_model=args.base,
        base_version=args.base_version,
        hyperparameters=_hyperparameters(args),
        request_id=args.request_id,
        dataset_name=args.name,
    )
    dataset = job.status.dataset
    print(
        f"job {job.job_id} {job.state.name}: {dataset.num_images} images of "
        f"{len(dataset.images_per_class)} classes (dataset {dataset.dataset_id}; --dataset "
        f"{dataset.dataset_id} trains on it again without an upload) -> {args.output}",
        file=sys.stderr,
        flush=True,
    )
    if args.no_wait:
        _show(job.status, args, out)
        return 0
    return _wait_and_report(client, job.job_id, args, out)


def _jobs(client: ModelClient, args: argparse.Namespace, out: TextIO) -> None:
    jobs = client.list_jobs(args.state, args.limit)
    if args.json:
        print_json(plain(jobs), out)
        return
    if not jobs:
        print("no jobs", file=out)
        return
    rows = [
        (
            job.job_id,
            job.state.name,
            job.phase.name if job.state is JobState.RUNNING else "",
            f"{job.output_model} v{job.output_version}" if job.output_version else job.output_model,
            f"{job.base_model} v{job.base_version}",
            job.dataset.num_images,
            f"{job.metrics.val_accuracy:.4f}" if job.metrics else "",
            job.created_at.astimezone().strftime("%Y-%m-%d %H:%M") if job.created_at else "",
            job.error[:60] + ("..." if len(job.error) > 60 else ""),
        )
        for job in jobs
    ]
    table(("job", "state", "phase", "output", "base", "images", "val_acc", "created", "error"), rows, out)


def _job(client: ModelClient, args: argparse.Namespace, out: TextIO) -> int:
    if args.wait:
        return _wait_and_report(client, args.job_id, args, out)
    _show(client.get_job(args.job_id), args, out)
    return 0


def _cancel(client: ModelClient, args: argparse.Namespace, out: TextIO) -> None:
    status = client.cancel_job(args.job_id)
    if args.json:
        print_json(plain(status), out)
    else:
        print(f"job {status.job_id} {status.state.name}: nothing was published", file=out)


COMMANDS: dict[str, Command] = {"fine-tune": _fine_tune, "jobs": _jobs, "job": _job, "cancel": _cancel}
