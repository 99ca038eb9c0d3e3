"""``python -m server.finetune.worker``: one fine-tuning job, in a process of its own.

Protocol (the server's side is :mod:`server.finetune.worker_process`):

- stdin: the job spec as one JSON line (:class:`~server.finetune.pipeline.JobSpec`); then stdin stays
  open. When it closes, the server is gone and the worker exits at once. The worker also asks the
  kernel for SIGKILL when its parent dies (``PR_SET_PDEATHSIG``), so a server killed with SIGKILL
  takes its worker along.
- stdout: the typed messages of :mod:`server.finetune.messages`, one JSON object per line (anything
  a library prints goes to stderr instead): progress while it works, then exactly one outcome
  (succeeded or failed). A worker that exits without one was killed or crashed.
- stderr: log lines (and tracebacks of bugs), inherited from the server.

What the job does is :mod:`server.finetune.pipeline`.
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import signal
import sys
import threading
from typing import TextIO

from server.finetune.messages import Failed
from server.finetune.pipeline import JobFailed, JobSpec, Reporter, run_job

log = logging.getLogger("server.finetune.worker")

PARENT_PID_ENV = "IMAGESERVE_WORKER_PARENT_PID"
EXIT_PARENT_GONE = 3
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """Ask for SIGKILL when the server dies; exit now if it already has."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: the stdin watch below still ends the worker
        pass
    expected = os.environ.get(PARENT_PID_ENV)
    if expected and os.getppid() != int(expected):
        os._exit(EXIT_PARENT_GONE)


def _exit_when_stdin_closes() -> None:
    def watch() -> None:
        sys.stdin.read()  # returns at EOF: the server closed the pipe or died
        os._exit(EXIT_PARENT_GONE)

    threading.Thread(target=watch, name="stdin-watch", daemon=True).start()


def _protocol_stream() -> TextIO:
    """The real stdout, for protocol lines only; fd 1 then points at stderr for anything else printing."""
    protocol_fd = os.dup(1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return os.fdopen(protocol_fd, "w", buffering=1, encoding="utf-8")


def _limit_threads(threads: int) -> None:
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(max(1, min(2, threads)))


def main() -> int:
    _die_with_parent()
    protocol = _protocol_stream()
    line = sys.stdin.readline()
    if not line:
        return EXIT_PARENT_GONE
    spec = JobSpec(**json.loads(line))
    _exit_when_stdin_closes()
    from server.logs import configure_logging

    configure_logging(os.environ.get("IMAGESERVE_LOG_LEVEL", "INFO"))
    _limit_threads(spec.threads)
    report = Reporter(protocol)
    log.info("job %s: worker pid %d, %d threads", spec.job_id, os.getpid(), spec.threads)
    try:
        outcome = run_job(spec, report)
    except JobFailed as exc:
        log.info("job %s failed: %s", spec.job_id, exc)
        report.send(Failed(str(exc), exc.metrics))
        return 0
    except Exception as exc:  # a bug: the traceback goes to the server log, the user gets a generic reason
        log.exception("job %s: training worker error", spec.job_id)
        reason = (
            f"internal error in the training worker ({type(exc).__name__}); details are in the server log"
        )
        report.send(Failed(reason))
        return 1
    report.send(outcome)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from graphs.tensorflow_import import import_tensorflow_quietly

    import_tensorflow_quietly()
    sys.exit(main())
