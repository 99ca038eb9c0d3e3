"""Names of the serving signatures, their inputs and outputs (what :mod:`graphs.signatures` builds).

===================  ============================================  =====================================
name                 input                                         output
===================  ============================================  =====================================
``classify``         ``images``: string ``[None]`` (encoded)       ``probabilities``: float32 ``[None, C]``
``classify_pixels``  ``pixels``: uint8 ``[None, None, None, 3]``   ``probabilities``: float32 ``[None, C]``
``features``         ``images``: string ``[None]``                 ``features``: float32 ``[None, D]``
``features_pixels``  ``pixels``: uint8 ``[None, None, None, 3]``   ``features``: float32 ``[None, D]``
``serving_default``  same as ``classify`` (or ``features`` for a model without a classifier)
===================  ============================================  =====================================
"""

from __future__ import annotations

CLASSIFY = "classify"
CLASSIFY_PIXELS = "classify_pixels"
FEATURES = "features"
FEATURES_PIXELS = "features_pixels"
DEFAULT = "serving_default"  # tf.saved_model.DEFAULT_SERVING_SIGNATURE_DEF_KEY (a test checks they agree)

IMAGES_INPUT = "images"
PIXELS_INPUT = "pixels"
PROBABILITIES_OUTPUT = "probabilities"
FEATURES_OUTPUT = "features"

#: The labels file's name among the SavedModel's assets (one line per class, in output order).
LABELS_ASSET = "labels.txt"
