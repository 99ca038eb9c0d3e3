"""A fine-tuned version's head on its own: the small network on the base's features, as NumPy.

A fine-tuned version is the base's feature extractor plus a head of a few hundred kilobytes. Beside
the complete SavedModel (which still loads alone, in TensorFlow Serving too), fine-tuning writes the
head as ``head.npz`` and its layers in the manifest's ``head`` record; a server that already holds the
base (the same network: the manifest's ``source.base_hash``) serves the version as the base's
features plus this head, instead of loading a second copy of the base (server/heads.py).

The layers are the trainer's: ``Normalization -> Dense(relu) -> Dropout -> Dense(softmax)``; any head
made of Normalization, Dense (linear, relu, softmax) and Dropout layers is written. NumPy only.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Mapping
from typing import Any

import numpy as np

HEAD_FILE = "head.npz"
ACTIVATIONS = ("linear", "relu", "softmax")
#: Keras' Normalization divides by max(sqrt(variance), epsilon).
EPSILON = 1e-7


class HeadUnsupported(Exception):
    """The head has a layer this format does not describe (the version is then served whole)."""


def extract(head: Any) -> tuple[list[dict[str, Any]], dict[str, np.ndarray]]:
    """The layers (JSON-able) and their arrays of a Keras head."""
    layers: list[dict[str, Any]] = []
    arrays: dict[str, np.ndarray] = {}
    for index, layer in enumerate(head.layers):
        kind = type(layer).__name__
        if kind == "InputLayer":
            continue
        if kind == "Dropout":
            continue  # identity at inference
        if kind == "Normalization":
            arrays[f"{index}.mean"] = np.asarray(layer.mean, np.float32).reshape(-1)
            arrays[f"{index}.variance"] = np.asarray(layer.variance, np.float32).reshape(-1)
            layers.append({"type": "normalization", "index": index})
        elif kind == "Dense":
            activation = layer.get_config().get("activation", "linear")
            if activation not in ACTIVATIONS:
                raise HeadUnsupported(f"activation {activation!r} of layer {layer.name!r}")
            kernel, bias = (np.asarray(w, np.float32) for w in layer.get_weights())
            arrays[f"{index}.kernel"], arrays[f"{index}.bias"] = kernel, bias
            layers.append({"type": "dense", "index": index, "activation": activation})
        else:
            raise HeadUnsupported(f"layer {layer.name!r} of type {kind}")
    return layers, arrays


def apply(
    layers: list[Mapping[str, Any]], arrays: Mapping[str, np.ndarray], features: np.ndarray
) -> np.ndarray:
    """The head's output rows for feature rows ``[N, D]`` (float32)."""
    x = np.asarray(features, np.float32)
    for layer in layers:
        key = layer["index"]
        if layer["type"] == "normalization":
            scale = np.maximum(np.sqrt(arrays[f"{key}.variance"]), np.float32(EPSILON))
            x = (x - arrays[f"{key}.mean"]) / scale
        else:
            x = x @ arrays[f"{key}.kernel"] + arrays[f"{key}.bias"]
            if layer["activation"] == "relu":
                x = np.maximum(x, np.float32(0))
            elif layer["activation"] == "softmax":
                x = np.exp(x - x.max(axis=-1, keepdims=True))
                x = x / x.sum(axis=-1, keepdims=True)
    return x.astype(np.float32, copy=False)


def to_bytes(arrays: Mapping[str, np.ndarray]) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def from_bytes(data: bytes) -> dict[str, np.ndarray]:
    with np.load(io.BytesIO(data), allow_pickle=False) as loaded:
        return {name: loaded[name] for name in loaded.files}


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
