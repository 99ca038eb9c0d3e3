"""A TensorFlow Serving REST Predict request, parsed and checked into the signature's input array.

Row format (``instances``) or columnar format (``inputs``); binary values as ``{"b64": ...}``. Runs
on the event loop for small bodies and in the parser process for large ones
(:mod:`server.rest.bodies`), so it imports nothing heavier than NumPy and returns arrays.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Any

import numpy as np

from model_format import signatures as sig
from server.errors import InvalidRequest
from server.rest.bodies import check_nesting, loads


@dataclass
class PredictRequest:
    signature: str
    inputs: dict[str, np.ndarray]
    rows: bool  # row format: the answer is "predictions", else "outputs"


_B64 = "b64"


def _is_binary(value: Any) -> bool:
    return isinstance(value, dict) and set(value) == {_B64}


def _decode_binary(value: Any) -> Any:
    """``{"b64": ...}`` objects anywhere in a value become bytes."""
    if _is_binary(value):
        if not isinstance(value[_B64], str):
            raise InvalidRequest('a {"b64": ...} value must hold a base64 string')
        try:
            return base64.b64decode(value[_B64], validate=True)
        except (binascii.Error, ValueError):
            raise InvalidRequest('a {"b64": ...} value is not valid base64') from None
    if isinstance(value, list):
        return [_decode_binary(item) for item in value]
    return value


def _named(value: Any) -> bool:
    """An object of named inputs (not a binary value)."""
    return isinstance(value, dict) and not _is_binary(value)


def _as_input(name: str, value: Any, max_images: int) -> np.ndarray:
    """JSON values as the signature's input tensor: strings/bytes for 'images', uint8 for 'pixels'."""
    if name == sig.IMAGES_INPUT:
        if not isinstance(value, list) or not all(isinstance(v, (bytes, str)) for v in value):
            raise InvalidRequest('input \'images\' must be a list of {"b64": "<base64 image>"} values')
        if len(value) > max_images:
            raise InvalidRequest(
                f"{len(value)} images in one request; the maximum is {max_images}: split the request"
            )
        return np.array([v.encode() if isinstance(v, str) else v for v in value], dtype=object)
    try:
        array = np.asarray(value)
    except ValueError:
        raise InvalidRequest(f"input {name!r} is not a rectangular nested list") from None
    if array.dtype.kind not in "iu" or (array.size and (array.min() < 0 or array.max() > 255)):
        raise InvalidRequest(f"input {name!r} must hold integers 0..255 (uint8 [N, H, W, 3] pixels)")
    return array.astype(np.uint8)


def predict_inputs(document: dict, input_name: str, max_images: int) -> tuple[dict[str, np.ndarray], bool]:
    """The signature's input from a row (``instances``) or columnar (``inputs``) request; and whether it was
    rows."""
    if ("instances" in document) == ("inputs" in document):
        raise InvalidRequest(
            "send either 'instances' (row format) or 'inputs' (columnar format), not both or neither"
        )
    if "instances" in document:
        instances = document["instances"]
        if not isinstance(instances, list):
            raise InvalidRequest("'instances' must be a list")
        if instances and all(_named(item) for item in instances):
            names = {key for item in instances for key in item}
            if names != {input_name}:
                raise InvalidRequest(
                    f"this signature takes one input named {input_name!r}; got {sorted(names)}"
                )
            value = [item[input_name] for item in instances]
        else:
            value = instances
        check_nesting("'instances'", value)
        return {input_name: _as_input(input_name, _decode_binary(value), max_images)}, True
    inputs = document["inputs"]
    if _named(inputs):
        if set(inputs) != {input_name}:
            raise InvalidRequest(f"this signature takes one input named {input_name!r}; got {sorted(inputs)}")
        inputs = inputs[input_name]
    check_nesting("'inputs'", inputs)
    return {input_name: _as_input(input_name, _decode_binary(inputs), max_images)}, False


def parse_predict(body: bytes, max_images: int) -> PredictRequest:
    """The signature a Predict request names and its input, as an array."""
    document = loads(body)
    if not isinstance(document, dict):
        raise InvalidRequest("the request body must be a JSON object")
    signature = document.get("signature_name") or sig.DEFAULT
    if not isinstance(signature, str):
        raise InvalidRequest("'signature_name' must be a string")
    input_name = sig.PIXELS_INPUT if signature.endswith("_pixels") else sig.IMAGES_INPUT
    inputs, rows = predict_inputs(document, input_name, max_images)
    return PredictRequest(signature, inputs, rows)
