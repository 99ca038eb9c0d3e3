"""int8 twins: post-training static quantization of the checked fp32 twin on calibration images.

ONNX Runtime's quantizer (already a dependency: no new package) measures each activation's range on
the calibration pixels and writes the twin again with QuantizeLinear/DequantizeLinear pairs (QDQ,
per-channel int8 weights, uint8 activations: its advice for x86 CPUs). OpenVINO reads such a twin and
runs the quantized convolutions in int8 (VNNI, AMX). Measured here (AVX512-VNNI, no AMX): VGG16's
features 3.4x ONNX Runtime fp32 at features cosine 0.99993; EfficientNet-Lite0's depthwise layers lose
too much (cosine 0.82 on real photos) and its gate refuses it (bench/README.md).
An int8 twin serves only past :func:`graphs.openvino_twin.precision_gate` against the fp32 twin.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import numpy as np

from graphs.onnx_twin import TwinUnusable
from model_format import signatures as sig


class _Quiet(logging.Filter):
    """Drops the quantizer's advice to pre-process the model, logged at WARNING on every call."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "pre-process" not in record.getMessage() and "pre-processing" not in record.getMessage()


def quantize(model: bytes, pixels: np.ndarray) -> bytes:
    """The twin ``model`` quantized to int8 with activation ranges measured on ``pixels``
    (``[N, size, size, 3]`` float32 in [0, 255], what the twin takes); raises :class:`TwinUnusable`."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    if not len(pixels):
        raise TwinUnusable("int8 needs calibration images, and the version has none")
    batches = iter(
        [{sig.PIXELS_INPUT: np.ascontiguousarray(pixels[i : i + 1], np.float32)} for i in range(len(pixels))]
    )

    class Reader(CalibrationDataReader):
        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(batches, None)

    quiet = _Quiet()
    logging.getLogger().addFilter(quiet)
    try:
        with tempfile.TemporaryDirectory(prefix="imageserve-int8-") as scratch:
            source, target = Path(scratch) / "fp32.onnx", Path(scratch) / "int8.onnx"
            source.write_bytes(model)
            quantize_static(
                source,
                target,
                Reader(),
                quant_format=QuantFormat.QDQ,
                per_channel=True,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
            )
            return target.read_bytes()
    except TwinUnusable:
        raise
    except Exception as exc:  # the quantizer raises anything for graphs it cannot handle
        reason = (str(exc) or type(exc).__name__).strip().splitlines()[0][:300]
        raise TwinUnusable(f"int8 quantization failed: {reason}") from None
    finally:
        logging.getLogger().removeFilter(quiet)
