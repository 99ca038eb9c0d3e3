"""Build the network of a catalog entry: Keras Applications constructors and TF Hub handles.

The result, :class:`BuiltNetwork`, is two plain callables on *preprocessed-by-us* pixels (float32 in
[0, 255], already resized): ``classify`` returns probabilities, ``features`` returns the
global-average-pooled last convolutional features. The serving signatures wrap them with decoding,
resizing and the family's normalisation (:mod:`graphs.signatures`).
"""

from __future__ import annotations

import importlib
import os
import re
import tempfile
import urllib.error
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tensorflow as tf

from exporter.catalog import CatalogEntry
from exporter.errors import UserError, WeightsUnavailable
from exporter.preprocessing import get_mode
from exporter.spec import IMAGENET, RANDOM
from exporter.torch_checkpoint import sha256_file


@dataclass
class BuiltNetwork:
    """A network ready to be wrapped in serving signatures.

    ``classify``/``features`` take float32 pixels in [0, 255], shape ``[N, S, S, 3]`` and apply the
    family's normalisation themselves. ``trackables`` are the objects holding variables; the serving
    module keeps a reference so that ``tf.saved_model.save`` writes them.
    """

    classify: Callable[[tf.Tensor], tf.Tensor] | None
    features: Callable[[tf.Tensor], tf.Tensor] | None
    num_classes: int | None
    feature_dim: int | None
    trackables: dict[str, Any]
    weights: dict[str, Any]
    notes: list[str] = field(default_factory=list)
    keras_model: Any = None  # the Keras classification (or headless) model, for tests and fine-tuning


def keras_cache_dir() -> Path:
    """Where ``keras.utils.get_file`` keeps downloaded weights (``$KERAS_HOME/models``)."""
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    return Path(home) / "models"


def hub_cache_dir() -> Path:
    """Where ``tensorflow_hub`` caches downloaded handles (``$TFHUB_CACHE_DIR``)."""
    return Path(os.environ.get("TFHUB_CACHE_DIR") or os.path.join(tempfile.gettempdir(), "tfhub_modules"))


def _offline_alternatives(entry: CatalogEntry) -> str:
    lines = ["Alternatives that need no network:"]
    if entry.supports_random_weights:
        lines.append(
            f"  python -m exporter {entry.name} --weights PATH     load the weights from a local .h5 file"
        )
        lines.append(
            f"  python -m exporter {entry.name} --weights random   random weights, to try the pipeline "
            "offline"
        )
    else:
        lines.append(
            f"  python -m exporter {entry.name} --hub-handle /local/savedmodel/dir [--hub-feature-handle DIR]"
        )
        lines.append(
            "  python -m exporter mobilenet_v2_keras --weights random   the Keras MobileNetV2, offline "
            "stand-in"
        )
    return "\n".join(lines)


def feature_tensor(model: Any) -> Any:
    """The global-average-pooled last convolutional feature map of a Keras Applications model.

    Without a classification head the model's own output is that map. With one, it is the input of
    the head's pooling: the *last* GlobalAveragePooling2D (earlier ones belong to squeeze-and-excitation
    blocks, later layers such as MobileNetV3's logits Flatten to the classes), or, for heads without
    one (VGG), the Flatten layer.
    """
    import keras

    source = model.output
    if len(source.shape) != 4:
        pools = [layer for layer in model.layers if isinstance(layer, keras.layers.GlobalAveragePooling2D)]
        flattens = [layer for layer in model.layers if isinstance(layer, keras.layers.Flatten)]
        if not pools and not flattens:
            raise ValueError(f"{model.name}: no pooling or flatten layer to take features from")
        source = (pools or flattens)[-1].input
    if len(source.shape) != 4:
        raise ValueError(f"{model.name}: expected a 4-D feature map, got shape {source.shape}")
    return keras.layers.GlobalAveragePooling2D(name="features")(source)


def keras_constructor(entry: CatalogEntry) -> Callable[..., tuple[Any, dict[str, Any] | None]]:
    """``fn(weights, include_top, input_shape) -> (model, provenance)`` for a Keras entry.

    A ``keras.applications`` constructor records no provenance (Keras downloads and caches its files);
    a ``keras_builder`` returns where its ImageNet weights came from (see :class:`CatalogEntry`).
    """
    if entry.keras_builder:
        module_name, _, attribute = entry.keras_builder.partition(":")
        return getattr(importlib.import_module(module_name), attribute)
    import keras

    application = getattr(keras.applications, entry.keras_application)
    return lambda **kwargs: (application(**kwargs), None)


def build_keras(
    entry: CatalogEntry, weights: str, input_size: int, seed: int, include_top: bool
) -> BuiltNetwork:
    constructor = keras_constructor(entry)
    notes: list[str] = []
    if weights == IMAGENET and include_top and input_size != entry.default_input_size:
        include_top = False
        notes.append(
            f"ImageNet weights with the classification head need {entry.default_input_size}x"
            f"{entry.default_input_size}; exporting features only at {input_size}x{input_size}"
        )
    import keras

    keras.utils.set_random_seed(seed)
    kwargs = dict(include_top=include_top, input_shape=(input_size, input_size, 3))
    try:
        model, provenance = constructor(weights=IMAGENET if weights == IMAGENET else None, **kwargs)
    except Exception as exc:  # keras.utils.get_file raises a bare Exception on network errors
        if "URL fetch failure" not in str(exc):
            raise
        url_match = re.search(r"https?://\S+?(?=:\s|$)", str(exc))
        url = url_match.group(0) if url_match else "(unknown URL)"
        cached = keras_cache_dir() / url.rsplit("/", 1)[-1]
        raise WeightsUnavailable(
            f"could not download the ImageNet weights for {entry.name} (no network?)\n"
            f"  fetching: {url}\n"
            f"  reason:   {str(exc).split(' -- ')[-1]}\n"
            f"Keras caches this file as {cached}; copy it there from a machine with internet and rerun.\n"
            + _offline_alternatives(entry)
        ) from None
    weights_info: dict[str, Any] = {"kind": weights, **(provenance or {})}
    if weights == RANDOM:
        weights_info = {"kind": RANDOM, "seed": seed}
    elif weights != IMAGENET:
        path = Path(weights)  # exists: checked by exporter.spec.validate_spec
        try:
            model.load_weights(str(path))
        except (ValueError, OSError) as exc:
            raise UserError(
                f"--weights {weights}: could not load into {entry.name} (include_top={include_top}, "
                f"input {input_size}x{input_size}): {exc}. Weights saved without the classification head "
                "need --no-top."
            ) from None
        weights_info = {"kind": "file", "path": str(path.resolve()), "sha256": sha256_file(path)}

    preprocess = get_mode(entry.preprocessing).fn
    feature_model = keras.Model(model.inputs, feature_tensor(model), name=f"{model.name}_features")

    def features(pixels: tf.Tensor) -> tf.Tensor:
        return feature_model(preprocess(pixels), training=False)

    classify = None
    num_classes = None
    if include_top:
        num_classes = int(model.output.shape[-1])

        def classify(pixels: tf.Tensor) -> tf.Tensor:
            return model(preprocess(pixels), training=False)

    return BuiltNetwork(
        classify=classify,
        features=features,
        num_classes=num_classes,
        feature_dim=int(feature_model.output.shape[-1]),
        trackables={"network": model, "feature_network": feature_model},
        weights=weights_info,
        notes=notes,
        keras_model=model,
    )


def load_hub(entry: CatalogEntry, handle: str) -> Any:
    """``hub.load(handle)`` with offline failures turned into a message that says what to do."""
    import tensorflow_hub as hub

    is_remote = re.match(r"^[a-z]+://", handle) is not None
    if not is_remote and not Path(handle).exists():
        raise UserError(
            f"hub handle {handle!r}: no such local path (a URL or a SavedModel directory is expected)"
        )
    try:
        return hub.load(handle)
    except (urllib.error.URLError, ConnectionError, TimeoutError) as exc:
        raise WeightsUnavailable(
            f"could not download TF Hub handle for {entry.name} (no network?)\n"
            f"  fetching: {handle}\n"
            f"  reason:   {getattr(exc, 'reason', exc)}\n"
            f"tensorflow_hub caches handles under {hub_cache_dir()} (set TFHUB_CACHE_DIR to choose);"
            " copy the unpacked SavedModel from a machine with internet and pass its directory.\n"
            + _offline_alternatives(entry)
        ) from None
    except OSError as exc:
        raise UserError(f"hub handle {handle!r} could not be loaded: {exc}") from None


def _probe_width(fn: Callable[[tf.Tensor], tf.Tensor], input_size: int, what: str, handle: str) -> int:
    try:
        out = fn(tf.zeros([1, input_size, input_size, 3], tf.float32))
    except (tf.errors.InvalidArgumentError, ValueError, TypeError) as exc:
        raise UserError(
            f"hub handle {handle!r} did not accept a [1, {input_size}, {input_size}, 3] float32 image as a "
            f"{what}: "
            f"{str(exc).splitlines()[0]}. Check --input-size."
        ) from None
    if len(out.shape) != 2:
        raise UserError(
            f"hub handle {handle!r} returned shape {tuple(out.shape)}; a {what} must return [N, K]"
        )
    return int(out.shape[-1])


def build_hub(entry: CatalogEntry, input_size: int) -> BuiltNetwork:
    unit = get_mode(entry.preprocessing).fn
    trackables: dict[str, Any] = {}
    classify = features = None
    num_classes = feature_dim = None
    if entry.hub_handle:
        classifier = load_hub(entry, entry.hub_handle)
        trackables["hub_classifier"] = classifier
        if entry.hub_outputs_probabilities:

            def classify(pixels: tf.Tensor) -> tf.Tensor:
                return classifier(unit(pixels))

        else:  # Hub classifiers return logits.

            def classify(pixels: tf.Tensor) -> tf.Tensor:
                return tf.nn.softmax(classifier(unit(pixels)), axis=-1)

        num_classes = _probe_width(classify, input_size, "classifier", entry.hub_handle)
    if entry.hub_feature_handle:
        extractor = load_hub(entry, entry.hub_feature_handle)
        trackables["hub_feature_extractor"] = extractor

        def features(pixels: tf.Tensor) -> tf.Tensor:
            return extractor(unit(pixels))

        feature_dim = _probe_width(features, input_size, "feature extractor", entry.hub_feature_handle)
    handles = {"classifier": entry.hub_handle, "feature_vector": entry.hub_feature_handle}
    return BuiltNetwork(
        classify=classify,
        features=features,
        num_classes=num_classes,
        feature_dim=feature_dim,
        trackables=trackables,
        weights={"kind": "hub", "handles": {k: v for k, v in handles.items() if v}},
    )
