"""Export pretrained Keras Applications and TF Hub image models as versioned SavedModels.

Every exported version carries its preprocessing inside the serving signatures, so a caller sends
encoded image bytes (or uint8 pixels) and gets probabilities or features back.

Public entry points: :func:`exporter.export.export_model` and ``python -m exporter``.
"""

__version__ = "0.1.0"
