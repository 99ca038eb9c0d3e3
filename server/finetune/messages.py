"""What a training worker tells the server: typed messages, one JSON object per line on its stdout.

``{"kind": "event", "phase", "message", "progress", "eta_seconds", "epoch"}`` while it works
(:class:`Progress`), then exactly one ``{"kind": "succeeded", "output_version", "metrics", "artifacts"}``
(:class:`Succeeded`) or ``{"kind": "failed", "error", "metrics"}`` (:class:`Failed`). A worker that
exits without either was killed or crashed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from server.finetune.jobs import EpochMetrics, FineTuneMetrics, JobPhase, metrics_from_dict, metrics_to_dict


@dataclass(frozen=True)
class Progress:
    """One step of the job, shown to watchers as an event."""

    phase: JobPhase
    message: str = ""
    progress: float = 0.0
    eta_seconds: float = 0.0
    epoch: EpochMetrics | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": "event",
            "phase": self.phase.value,
            "message": self.message,
            "progress": round(float(self.progress), 4),
            "eta_seconds": round(float(self.eta_seconds), 1),
            "epoch": self.epoch.__dict__ if self.epoch else None,
        }


@dataclass(frozen=True)
class Succeeded:
    """The worker published ``output_version``."""

    output_version: int
    metrics: FineTuneMetrics | None = None
    artifacts: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": "succeeded",
            "output_version": self.output_version,
            "metrics": metrics_to_dict(self.metrics) if self.metrics else None,
            "artifacts": list(self.artifacts),
        }


@dataclass(frozen=True)
class Failed:
    """The job failed for ``error`` (said to the user); ``metrics`` if training got that far."""

    error: str
    metrics: FineTuneMetrics | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": "failed",
            "error": self.error,
            "metrics": metrics_to_dict(self.metrics) if self.metrics else None,
        }


WorkerMessage = Progress | Succeeded | Failed
Outcome = Succeeded | Failed


def encode(message: WorkerMessage) -> str:
    return json.dumps(message.to_dict()) + "\n"


def decode(line: bytes | str) -> WorkerMessage:
    """The message on one line; ValueError if the line is not one (e.g. a library printed it)."""
    data = json.loads(line)
    if not isinstance(data, dict):
        raise ValueError("not a protocol message")  # noqa: TRY004 (callers catch ValueError, as for bad JSON)
    kind = data.get("kind")
    try:
        metrics = metrics_from_dict(data["metrics"]) if data.get("metrics") else None
        if kind == "event":
            epoch = data.get("epoch")
            return Progress(
                phase=JobPhase(data["phase"]),
                message=data.get("message", ""),
                progress=float(data.get("progress", 0.0)),
                eta_seconds=float(data.get("eta_seconds", 0.0)),
                epoch=EpochMetrics(**epoch) if epoch else None,
            )
        if kind == "succeeded":
            return Succeeded(int(data["output_version"]), metrics, tuple(data.get("artifacts") or ()))
        if kind == "failed":
            return Failed(str(data["error"]), metrics)
    except (KeyError, TypeError) as exc:
        raise ValueError(f"malformed {kind!r} message: {exc}") from None
    raise ValueError(f"unknown message kind {kind!r}")
