"""Versions whose activations vary: random weights with randomised BatchNorm statistics.

Fresh BatchNorm statistics (mean 0, variance 1) make a random-weight MobileNetV2 output a constant,
which would hide any difference between runtimes; seeded random statistics make it vary as with
real weights. Exported through the exporter itself (its ``adjust`` hook), so the versions are real.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def randomise_batchnorm(model, seed: int) -> int:
    """Give every BatchNormalization layer of ``model`` seeded random statistics; returns how many."""
    import keras

    rng = np.random.default_rng(seed)
    count = 0
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if not isinstance(layer, keras.layers.BatchNormalization):
            continue
        shape = layer.moving_mean.shape
        layer.moving_mean.assign(rng.normal(0.0, 0.5, shape).astype("float32"))
        layer.moving_variance.assign(rng.uniform(0.5, 2.0, shape).astype("float32"))
        if layer.gamma is not None:
            layer.gamma.assign(rng.uniform(0.5, 1.5, shape).astype("float32"))
        if layer.beta is not None:
            layer.beta.assign(rng.normal(0.0, 0.25, shape).astype("float32"))
        count += 1
    return count


def export_varied(root: Path, name: str, size: int, seed: int, onnx: bool = True, **options) -> Path:
    """Export ``name`` with random weights and random BatchNorm statistics into ``root``; its path."""
    from exporter.export import ExportSpec, export_model
    from graphs.progress import Progress

    def vary(network) -> None:
        assert randomise_batchnorm(network.keras_model, seed) > 0

    spec = ExportSpec(
        name=name, weights="random", input_size=size, seed=seed, onnx=onnx, output_dir=root, **options
    )
    return export_model(spec, Progress("test-export", stream=None), adjust=vary).path
