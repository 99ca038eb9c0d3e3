"""A terminal progress bar for a fine-tuning job, drawn from its events with tqdm (on stderr).

One bar per stage: ``queued``, then each phase of the running job (validating, extracting features,
training, exporting). A bar shows the phase's progress, the time spent in it, the server's estimate
of the time left in it (during training an upper bound: early stopping may end sooner) and the
latest event's message, e.g. ``epoch 7/50: loss 0.2130, accuracy 0.9340, val_loss ...``. The last
line says how the job ended.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TextIO

from api_types.results import JobEvent, JobPhase, JobState

__all__ = ["JobProgressBar", "job_progress", "ProgressOption"]

#: ``progress=`` of ``wait``: None (a bar when stderr is a terminal), True, False, or a callable
#: that receives each :class:`~api_types.results.JobEvent`.
ProgressOption = bool | Callable[[JobEvent], None] | None

_STAGE_NAMES = {
    JobPhase.UNSPECIFIED: "starting",
    JobPhase.VALIDATING: "validating",
    JobPhase.EXTRACTING_FEATURES: "extracting features",
    JobPhase.TRAINING: "training",
    JobPhase.EXPORTING: "exporting",
}
_BAR_FORMAT = "{desc:<20} {percentage:3.0f}%|{bar:20}| {elapsed}{postfix}"


def _stage(event: JobEvent) -> str:
    if event.state is JobState.QUEUED:
        return "queued"
    return _STAGE_NAMES.get(event.phase, event.phase.name.lower())


class JobProgressBar:
    """Feeds a job's events into tqdm bars; call it with each event, then :meth:`close`."""

    def __init__(self, file: TextIO | None = None) -> None:
        self.file = file if file is not None else sys.stderr
        self._bar: Any = None
        self._stage: str | None = None

    def __call__(self, event: JobEvent) -> None:
        from tqdm import tqdm  # NOTE: imported when a bar is drawn, not when the client is imported

        if event.state.done:
            self._end_stage(finished=event.state is JobState.SUCCEEDED)
            tqdm.write(f"{event.state.name}: {event.message}", file=self.file)
            return
        stage = _stage(event)
        if stage != self._stage:
            self._end_stage(finished=True)
            self._stage = stage
            self._bar = tqdm(
                total=100, desc=stage, file=self.file, bar_format=_BAR_FORMAT, dynamic_ncols=True, leave=True
            )
        details = [event.message] if event.message else []
        if event.eta_seconds:
            details.insert(0, f"eta {tqdm.format_interval(event.eta_seconds)}")
        self._bar.n = round(100 * min(max(event.progress, 0.0), 1.0))
        self._bar.set_postfix_str(" · ".join(details), refresh=False)
        self._bar.refresh()

    def _end_stage(self, finished: bool) -> None:
        if self._bar is not None:
            if finished and self._stage != "queued":
                self._bar.n = 100
                self._bar.refresh()
            self._bar.close()
        self._bar, self._stage = None, None

    def close(self) -> None:
        """Close the open bar (a wait that ended early leaves it where it was)."""
        self._end_stage(finished=False)


def _is_terminal(file: TextIO | None) -> bool:
    isatty = getattr(file, "isatty", None)
    return bool(isatty and isatty())


@contextmanager
def job_progress(progress: ProgressOption) -> Iterator[Callable[[JobEvent], None] | None]:
    """The event callback ``progress=`` asks for (None: no progress), closed on exit."""
    if callable(progress):
        yield progress
        return
    if progress is None:
        progress = _is_terminal(sys.stderr)
    if not progress:
        yield None
        return
    bar = JobProgressBar()
    try:
        yield bar
    finally:
        bar.close()
