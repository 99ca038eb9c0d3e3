"""``manifest.json``: what the exporter (and fine-tuning) record beside each SavedModel.

Keys (``KEYS``; the exporter writes no other, a test checks):

==================  =====================================================================================
``format``          :data:`MANIFEST_FORMAT`
``name``            the model's name (the directory above the version)
``version``         the version number (filled in when it is published)
``source``          where the network came from: ``kind`` keras | hub | finetune, and its details
``weights``         which weights: ``kind`` imagenet | random | finetune | ..., seeds, handles, sha256
``input_size``      square side in pixels every image is resized to
``preprocessing``   the family's normalisation baked into the signatures (``mobilenet_v2``, ``vgg16``, ...)
``num_classes``     width of ``probabilities`` (0 or null: no classifier)
``feature_dim``     width of ``features``
``labels_file``     path of the labels file inside the version (``assets/labels.txt``), or null
``signatures``      each signature's inputs and outputs with shapes
``onnx``            the ONNX twin's record (file, sha256, opset, tool versions, check figures) or its error
``exporter_version``, ``tensorflow_version``, ``created_at``: provenance
``training``        a fine-tuned version's job, dataset, hyperparameters and figures (fine-tuning only)
``head``            a fine-tuned version's head on its own: ``head.npz``, its layers and check (or its
                    error); with ``source.base_hash``, a server holding the base serves the version as
                    the base's features plus this head (fine-tuning only)
``calibration``     the calibration images' file (``calibration.zip``), count and sha256: int8 is
                    quantized on them, reduced precisions are gated on them (``--calibration DIR``;
                    a fine-tuning job's training images)
``validation``      a fine-tuned version's held-out images with their class ids (``validation.zip``):
                    a reduced precision must keep its accuracy on them (fine-tuning only)
==================  =====================================================================================
"""

from __future__ import annotations

MANIFEST_FILE = "manifest.json"
MANIFEST_FORMAT = "imageserve.manifest/1"

KEYS = frozenset(
    {
        "format",
        "name",
        "version",
        "source",
        "weights",
        "input_size",
        "preprocessing",
        "num_classes",
        "feature_dim",
        "labels_file",
        "signatures",
        "onnx",
        "exporter_version",
        "tensorflow_version",
        "created_at",
        "training",
        "head",
        "calibration",
        "validation",
    }
)
