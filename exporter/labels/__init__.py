"""Class names shipped inside the package: a consumer never needs a network to name a class."""

from __future__ import annotations

import json
from importlib import resources

#: Label sets the catalog can name. ``imagenet1000`` is the Keras Applications order
#: (``decode_predictions``); ``imagenet1001`` is the TF Hub order with ``background`` first.
LABEL_SETS = ("imagenet1000", "imagenet1001")


def _read(name: str) -> str:
    return resources.files("exporter.labels").joinpath(name).read_text(encoding="utf-8")


def load_label_set(name: str) -> list[str]:
    """Return the class names of a shipped label set, index = output position."""
    if name == "imagenet1000":
        index = json.loads(_read("imagenet_class_index.json"))
        return [index[str(i)][1] for i in range(len(index))]
    if name == "imagenet1001":
        return _read("ImageNetLabels.txt").splitlines()
    raise ValueError(f"unknown label set {name!r}; known: {', '.join(LABEL_SETS)}")


def default_labels_for(num_classes: int) -> list[str]:
    """Labels for a model whose label set is not given: ImageNet when the size says so."""
    if num_classes == 1000:
        return load_label_set("imagenet1000")
    if num_classes == 1001:
        return load_label_set("imagenet1001")
    return [f"class_{i}" for i in range(num_classes)]
