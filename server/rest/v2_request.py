"""An Open Inference Protocol (V2) REST inference request, parsed and checked into plain values.

:func:`parse_infer_request` runs on the event loop for small bodies and in the parser process for
large ones (:mod:`server.rest.bodies`): it imports nothing heavier than NumPy, and what it returns is
small (the tensors as arrays, and only the few fields of the document the handler uses).

Binary data: with an ``Inference-Header-Content-Length: <n>`` header, the body is ``n`` bytes of
JSON followed by each input flagged ``"parameters": {"binary_data_size": k}``, in order (BYTES
elements each prefixed by a 4-byte little-endian length). BYTES inputs in JSON are strings, or
``{"b64": ...}`` objects for binary data such as images.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from server.api.tensors import DATATYPES, Tensor, check_bytes_count, check_shape, from_raw
from server.errors import InvalidRequest
from server.rest.bodies import flatten, loads

HEADER_LENGTH = "Inference-Header-Content-Length"
#: Parameters are ``$parameter`` values (string, number, boolean); a few per object.
MAX_PARAMETERS = 16
#: Outputs a request may name (a version has two: probabilities and features).
MAX_OUTPUTS = 8
MAX_INPUTS = 8


@dataclass
class InferRequest:
    """What the handler needs of a V2 infer request."""

    inputs: list[Tensor]
    parameters: dict[str, Any] = field(default_factory=dict)
    #: Requested outputs: (name, binary) in order; empty: every output of the signature.
    outputs: list[tuple[str, bool | None]] = field(default_factory=list)
    binary_default: bool = False
    id: str | None = None


def _object(value: Any, what: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidRequest(f"{what} must be a JSON object")
    return value


def _list(value: Any, what: str, most: int) -> list:
    if value is None:
        return []
    if not isinstance(value, list):
        raise InvalidRequest(f"{what} must be a JSON list")
    if len(value) > most:
        raise InvalidRequest(f"{what}: {len(value)} entries; at most {most}")
    return value


def parameters_of(value: Any, what: str) -> dict[str, Any]:
    """A parameters object: at most MAX_PARAMETERS string, number or boolean values."""
    parameters = _object(value, what)
    if len(parameters) > MAX_PARAMETERS:
        raise InvalidRequest(f"{what}: {len(parameters)} entries; at most {MAX_PARAMETERS}")
    for key, item in parameters.items():
        if not isinstance(item, (str, int, float, bool)):
            raise InvalidRequest(f"{what}: {key!r} must be a string, a number or a boolean")
    return dict(parameters)


def _bytes_element(name: str, value: Any, base64_strings: bool) -> bytes:
    if isinstance(value, dict) and set(value) == {"b64"} and isinstance(value["b64"], str):
        value, base64_strings = value["b64"], True
    if not isinstance(value, str):
        raise InvalidRequest(f'input {name!r}: BYTES elements are JSON strings or {{"b64": ...}} objects')
    if not base64_strings:
        return value.encode()
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidRequest(f"input {name!r}: an element is not valid base64") from None


def json_tensor(
    name: str, datatype: str, shape: list[int], data: Any, parameters: dict[str, Any], max_bytes_elements: int
) -> np.ndarray:
    if datatype == "BYTES":
        check_bytes_count(name, shape, max_bytes_elements)
    values = flatten(name, data)
    check_shape(name, shape, len(values))
    if datatype == "BYTES":
        base64_strings = parameters.get("content_type") == "base64"
        return np.array([_bytes_element(name, v, base64_strings) for v in values], dtype=object).reshape(
            shape
        )
    dtype = DATATYPES.get(datatype)
    if dtype is None:
        raise InvalidRequest(f"input {name!r}: unsupported datatype {datatype!r}; use BYTES or UINT8")
    if any(isinstance(v, (bool, str, dict, type(None))) for v in values) and dtype != np.dtype(bool):
        raise InvalidRequest(f"input {name!r}: {datatype} data must be numbers")
    array = np.asarray(values)
    if (
        dtype.kind in "ui"
        and array.size
        and (
            array.dtype.kind == "f" or array.min() < np.iinfo(dtype).min or array.max() > np.iinfo(dtype).max
        )
    ):
        raise InvalidRequest(
            f"input {name!r}: {datatype} values must be integers in [{np.iinfo(dtype).min}, "
            f"{np.iinfo(dtype).max}]"
        )
    return array.astype(dtype).reshape(shape)


def parse_infer_request(body: bytes, header_length: str | None, max_bytes_elements: int) -> InferRequest:
    """The request's inputs as tensors (binary parts included) and the fields the handler uses."""
    binary = b""
    if header_length is not None:
        written_as_number = header_length.isascii() and header_length.isdigit() and len(header_length) <= 18
        if not written_as_number or int(header_length) > len(body):
            raise InvalidRequest(
                f"{HEADER_LENGTH} must be the JSON part's length in bytes (at most {len(body)})"
            )
        body, binary = body[: int(header_length)], body[int(header_length) :]
    document = _object(loads(body), "the request body")
    inputs, offset = [], 0
    for item in _list(document.get("inputs"), "'inputs'", MAX_INPUTS):
        item = _object(item, "each input")
        name, datatype, shape = item.get("name"), item.get("datatype"), item.get("shape")
        if (
            not isinstance(name, str)
            or not isinstance(datatype, str)
            or not isinstance(shape, list)
            or not all(isinstance(d, int) and not isinstance(d, bool) for d in shape)
        ):
            raise InvalidRequest("each input needs a name, a datatype and a shape (a list of integers)")
        parameters = parameters_of(item.get("parameters"), f"input {name!r} parameters")
        size = parameters.get("binary_data_size")
        if size is not None:
            if not isinstance(size, int) or size < 0 or offset + size > len(binary):
                raise InvalidRequest(f"input {name!r}: binary_data_size {size} runs past the binary data")
            data = from_raw(name, datatype, shape, binary[offset : offset + size], max_bytes_elements)
            offset += size
        elif "data" in item:
            data = json_tensor(name, datatype, shape, item["data"], parameters, max_bytes_elements)
        else:
            raise InvalidRequest(f"input {name!r} has neither data nor binary_data_size")
        inputs.append(Tensor(name, datatype, shape, data, parameters))
    if offset != len(binary):
        raise InvalidRequest(f"{len(binary) - offset} bytes of binary data belong to no input")
    parameters = parameters_of(document.get("parameters"), "parameters")
    binary_default = bool(parameters.pop("binary_data_output", False))
    outputs: list[tuple[str, bool | None]] = []
    for output in _list(document.get("outputs"), "'outputs'", MAX_OUTPUTS):
        output = _object(output, "each output")
        name = output.get("name")
        if not isinstance(name, str):
            raise InvalidRequest("each output needs a name (a string)")
        binary_data = parameters_of(output.get("parameters"), f"output {name!r} parameters").get(
            "binary_data"
        )
        outputs.append((name, None if binary_data is None else bool(binary_data)))
    request_id = document.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise InvalidRequest("'id' must be a string")
    return InferRequest(inputs, parameters, outputs, binary_default, request_id)
