"""What a fine-tuned version carries besides the model: metrics.json and two plots (matplotlib, headless)."""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from typing import Any

import numpy as np

from server.finetune.jobs import EpochMetrics, FineTuneMetrics, metrics_to_dict

METRICS_FILE = "metrics.json"
CURVE_FILE = "training_curve.png"
CONFUSION_FILE = "confusion_matrix.png"
ARTIFACTS = (METRICS_FILE, CURVE_FILE, CONFUSION_FILE)


def metrics_document(
    job_id: str,
    labels: Sequence[str],
    history: Sequence[EpochMetrics],
    metrics: FineTuneMetrics,
    confusion: np.ndarray,
    context: dict[str, Any],
) -> bytes:
    """metrics.json: per-epoch loss/accuracy, final metrics, per-class precision/recall, confusion matrix."""
    document = {
        "job_id": job_id,
        **context,
        "labels": list(labels),
        "history": [epoch.__dict__ for epoch in history],
        "final": {k: v for k, v in metrics_to_dict(metrics).items() if k != "per_class"},
        "per_class": [c.__dict__ for c in metrics.per_class],
        "confusion_matrix": {
            "rows": "true class (labels order)",
            "columns": "predicted class (labels order)",
            "split": "validation",
            "counts": confusion.tolist(),
        },
    }
    return (json.dumps(document, indent=2, sort_keys=False) + "\n").encode()


def _png(figure: Any) -> bytes:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    plt.close(figure)
    return buffer.getvalue()


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # headless: a server has no display
    import matplotlib.pyplot as plt

    return plt


def training_curve_png(history: Sequence[EpochMetrics], best_epoch: int, title: str) -> bytes:
    plt = _pyplot()
    epochs = [e.epoch for e in history]
    figure, (loss_axis, accuracy_axis) = plt.subplots(1, 2, figsize=(10, 4))
    loss_axis.plot(epochs, [e.loss for e in history], label="training")
    loss_axis.plot(epochs, [e.val_loss for e in history], label="validation")
    loss_axis.set(xlabel="epoch", ylabel="loss (categorical cross-entropy)", title="loss")
    accuracy_axis.plot(epochs, [e.accuracy for e in history], label="training")
    accuracy_axis.plot(epochs, [e.val_accuracy for e in history], label="validation")
    accuracy_axis.set(xlabel="epoch", ylabel="accuracy", title="accuracy", ylim=(0, 1.02))
    for axis in (loss_axis, accuracy_axis):
        axis.axvline(
            best_epoch, color="grey", linestyle="--", linewidth=1, label=f"best epoch ({best_epoch})"
        )
        axis.grid(alpha=0.3)
        axis.legend()
    figure.suptitle(title)
    return _png(figure)


def confusion_matrix_png(confusion: np.ndarray, labels: Sequence[str], title: str) -> bytes:
    plt = _pyplot()
    n = len(labels)
    side = min(4 + 0.45 * n, 30)
    figure, axis = plt.subplots(figsize=(side, side))
    axis.imshow(confusion, cmap="Blues")
    shown = [label if len(label) <= 20 else label[:19] + "…" for label in labels]
    long_labels = n > 6 and max(len(label) for label in shown) > 2
    axis.set_xticks(range(n), shown, rotation=90 if long_labels else 0)
    axis.set_yticks(range(n), shown)
    axis.set(xlabel="predicted", ylabel="true", title=title)
    if n <= 40:
        threshold = confusion.max() / 2 if confusion.size else 0
        for (row, column), count in np.ndenumerate(confusion):
            color = "white" if count > threshold else "black"
            axis.text(column, row, str(count), ha="center", va="center", color=color, fontsize=8)
    return _png(figure)
