"""The model format: what a version directory holds and how it is named, without TensorFlow.

The exporter writes this format, the server reads it, fine-tuning writes it again; all three take
its names from here, so reading a constant never costs a TensorFlow import:

- :mod:`model_format.signatures`: signature, input and output names of every exported SavedModel;
- :mod:`model_format.manifest`: ``manifest.json``, its format tag and keys, and how to read it;
- :mod:`model_format.layout`: ``<root>/<name>/<version>/``, version numbers, the names of staging,
  rejected and completion-marker entries, and the ONNX twin's files.
"""
