"""The model format: what a version directory holds and how it is named, without TensorFlow.

The exporter writes this format, the server reads it, fine-tuning writes it again; all three take
its names from here, so reading a constant never costs a TensorFlow import:

- :mod:`model_format.signatures`: signature, input and output names of every exported SavedModel;
- :mod:`model_format.manifest`: ``manifest.json``, its format tag and keys;
- :mod:`model_format.layout`: ``<root>/<name>/<version>/``, model names, version numbers, the names
  of staging, rejected and completion-marker entries, and the ONNX twin's files;
- :mod:`model_format.labels`: the labels file's text, one class name per line.

It is the schema only: no file is read or written here (:mod:`storage` does that).
"""
