"""TensorFlow graphs of a served version: what the exporter and fine-tuning build, and the server runs.

- :mod:`graphs.signatures`: the serving functions with the preprocessing baked in (:class:`ServingModule`);
- :mod:`graphs.publish`: write a module as a SavedModel, reload and check it, publish it
  (:func:`save_and_publish`, through :mod:`storage.publish`);
- :mod:`graphs.onnx_twin`: the network's ONNX twin, converted and checked against the SavedModel;
- :mod:`graphs.openvino_twin`: that twin on OpenVINO at fp32, bf16 or int8, and the gate against fp32;
- :mod:`graphs.quantize`, :mod:`graphs.calibration`: int8 twins, on a version's own images;
- :mod:`graphs.progress`, :mod:`graphs.tensorflow_import`: step logging, a quiet TensorFlow import.

Above :mod:`storage` and :mod:`model_format`; below the exporter, the server and fine-tuning.
"""
