"""Pixel normalisation of each model family, written as TensorFlow ops for the serving graph.

Every function takes float32 RGB pixels in [0, 255], shape ``[N, H, W, 3]``, already resized to the
model's input size, and returns what the network expects. The modes mirror Keras Applications'
``imagenet_utils.preprocess_input`` (``caffe``, ``tf``, ``torch``) plus EfficientNet-Lite's
(``lite``), the TF Hub image convention (``unit``) and ``none`` for Keras models that normalise
inside the network (EfficientNet, MobileNetV3). ``tests/exporter/test_fidelity.py`` checks each
against the family's own ``preprocess_input``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import tensorflow as tf

# ImageNet channel means/stds as Keras uses them (imagenet_utils._preprocess_symbolic_input).
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
TORCH_MEAN_RGB = (0.485, 0.456, 0.406)
TORCH_STD_RGB = (0.229, 0.224, 0.225)


def _caffe(x: tf.Tensor) -> tf.Tensor:
    bgr = x[..., ::-1]
    return bgr - tf.constant(CAFFE_MEAN_BGR, dtype=x.dtype)


def _tf(x: tf.Tensor) -> tf.Tensor:
    return x / 127.5 - 1.0


def _torch(x: tf.Tensor) -> tf.Tensor:
    x = x / 255.0
    return (x - tf.constant(TORCH_MEAN_RGB, dtype=x.dtype)) / tf.constant(TORCH_STD_RGB, dtype=x.dtype)


def _lite(x: tf.Tensor) -> tf.Tensor:
    return (x - 127.0) / 128.0


def _unit(x: tf.Tensor) -> tf.Tensor:
    return x / 255.0


def _none(x: tf.Tensor) -> tf.Tensor:
    return x


@dataclass(frozen=True)
class PreprocessingMode:
    name: str
    description: str
    fn: Callable[[tf.Tensor], tf.Tensor]


MODES: dict[str, PreprocessingMode] = {
    mode.name: mode
    for mode in (
        PreprocessingMode("caffe", "RGB->BGR, subtract ImageNet BGR means (VGG, ResNet)", _caffe),
        PreprocessingMode("tf", "scale to [-1, 1] (MobileNetV2, Inception)", _tf),
        PreprocessingMode(
            "torch", "scale to [0, 1], subtract mean, divide by std per channel (DenseNet)", _torch
        ),
        PreprocessingMode("lite", "(x - 127) / 128, Google's EfficientNet-Lite input scaling", _lite),
        PreprocessingMode("unit", "scale to [0, 1] (TF Hub image models)", _unit),
        PreprocessingMode(
            "none", "raw [0, 255]; the network rescales itself (EfficientNet, MobileNetV3)", _none
        ),
    )
}


def get_mode(name: str) -> PreprocessingMode:
    try:
        return MODES[name]
    except KeyError:
        raise ValueError(f"unknown preprocessing mode {name!r}; known: {', '.join(MODES)}") from None
