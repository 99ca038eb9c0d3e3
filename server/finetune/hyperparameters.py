"""Training parameters of a job, their defaults and their checks.

The defaults are documented in the API (``FineTuneHyperparameters`` in the proto); a field left unset
there takes the value here. :meth:`Hyperparameters.validate` runs before a job is created, so a bad
value is an INVALID_ARGUMENT answer to StartFineTune, never a failed job.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from server.errors import InvalidRequest

CLASS_WEIGHTINGS = ("none", "balanced")
MAX_SEED = 2**32 - 1  # numpy's and Keras' global seeds are 32-bit


@dataclass(frozen=True)
class Hyperparameters:
    hidden_units: int = 256
    dropout: float = 0.2
    learning_rate: float = 0.001
    epochs: int = 50
    batch_size: int = 32
    validation_fraction: float = 0.2
    seed: int = 0
    class_weighting: str = "none"
    early_stopping_patience: int = 8
    min_val_accuracy: float | None = None
    augment: bool = False
    min_images_per_class: int = 5

    def validate(self) -> Hyperparameters:
        checks = [
            (1 <= self.hidden_units <= 8192, f"hidden_units must be in [1, 8192], got {self.hidden_units}"),
            (0.0 <= self.dropout < 1.0, f"dropout must be in [0, 1), got {self.dropout:g}"),
            (0.0 < self.learning_rate <= 1.0, f"learning_rate must be in (0, 1], got {self.learning_rate:g}"),
            (1 <= self.epochs <= 1000, f"epochs must be in [1, 1000], got {self.epochs}"),
            (1 <= self.batch_size <= 4096, f"batch_size must be in [1, 4096], got {self.batch_size}"),
            (
                0.0 < self.validation_fraction < 1.0,
                f"validation_fraction must be in (0, 1), got {self.validation_fraction:g}",
            ),
            (0 <= self.seed <= MAX_SEED, f"seed must be in [0, {MAX_SEED}], got {self.seed}"),
            (
                self.class_weighting in CLASS_WEIGHTINGS,
                f"class_weighting must be one of {', '.join(CLASS_WEIGHTINGS)}, got {self.class_weighting!r}",
            ),
            (
                0 <= self.early_stopping_patience <= 1000,
                f"early_stopping_patience must be in [0, 1000], got {self.early_stopping_patience}",
            ),
            (
                self.min_val_accuracy is None or 0.0 <= self.min_val_accuracy <= 1.0,
                f"min_val_accuracy must be in [0, 1] (an accuracy), got {self.min_val_accuracy}",
            ),
            (
                self.min_images_per_class >= 2,
                f"min_images_per_class must be >= 2 (one to train on, one to validate on), "
                f"got {self.min_images_per_class}",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise InvalidRequest(f"hyperparameters: {message}")
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Hyperparameters:
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})
