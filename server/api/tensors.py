"""Tensors of the Open Inference Protocol as NumPy arrays: the wire encodings in and out, checked.

Shared by the gRPC door, the REST door and the REST door's body parser process
(:mod:`server.rest.bodies`), so it imports nothing but NumPy and the core's errors. Every check that
bounds the work a request can cause (dimensions, declared element counts) runs before that work.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from server.errors import InvalidRequest

#: V2 datatype <-> numpy dtype, for the types a request may carry.
DATATYPES = {
    "BOOL": np.dtype(bool),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
}
#: Most dimensions a tensor may declare (images are 1-D of BYTES or 4-D of UINT8 pixels).
MAX_DIMENSIONS = 8


@dataclass
class Tensor:
    """One named tensor. ``data`` is a numpy array of ``shape``; for BYTES, an object array of bytes."""

    name: str
    datatype: str
    shape: list[int]
    data: np.ndarray
    parameters: dict[str, Any] = field(default_factory=dict)


def declared_count(name: str, shape: list[int]) -> int:
    """The elements a shape declares, in Python integers (``[2**32, 2**32]`` is 2**64, not 0)."""
    if len(shape) > MAX_DIMENSIONS:
        raise InvalidRequest(f"input {name!r}: {len(shape)} dimensions; at most {MAX_DIMENSIONS}")
    if any(d < 0 for d in shape):
        raise InvalidRequest(f"input {name!r}: shape {list(shape)} has a negative dimension")
    return math.prod(shape)


def check_shape(name: str, shape: list[int], count: int) -> None:
    """The declared shape holds exactly ``count`` elements."""
    if declared_count(name, shape) != count:
        raise InvalidRequest(f"input {name!r}: shape {list(shape)} does not hold its {count} elements")


def check_bytes_count(name: str, shape: list[int], max_elements: int) -> None:
    """BYTES elements are encoded images: at most a request's images, checked before any is split."""
    count = declared_count(name, shape)
    if count > max_elements:
        raise InvalidRequest(
            f"{count:,} images in one request; the maximum is {max_elements}: split the request "
            f"(input {name!r} declares shape {list(shape)} of encoded images)"
        )


def split_bytes(name: str, raw: bytes) -> list[bytes]:
    """BYTES elements of the binary encoding: each a 4-byte little-endian length, then the bytes."""
    items, offset = [], 0
    view = memoryview(raw)
    while offset < len(raw):
        if offset + 4 > len(raw):
            raise InvalidRequest(f"input {name!r}: raw BYTES data ends inside an element's 4-byte length")
        length = int.from_bytes(view[offset : offset + 4], "little")
        offset += 4
        if offset + length > len(raw):
            raise InvalidRequest(f"input {name!r}: a raw BYTES element of {length} bytes runs past the data")
        items.append(bytes(view[offset : offset + length]))
        offset += length
    return items


def from_raw(name: str, datatype: str, shape: list[int], raw: bytes, max_bytes_elements: int) -> np.ndarray:
    """A tensor from its binary form (gRPC ``raw_input_contents``, REST binary data extension)."""
    if datatype == "BYTES":
        check_bytes_count(name, shape, max_bytes_elements)
        items = split_bytes(name, raw)
        check_shape(name, shape, len(items))
        return np.array(items, dtype=object).reshape(shape)
    dtype = DATATYPES.get(datatype)
    if dtype is None:
        raise InvalidRequest(f"input {name!r}: unsupported datatype {datatype!r}; use BYTES or UINT8")
    if len(raw) % dtype.itemsize:
        raise InvalidRequest(
            f"input {name!r}: {len(raw)} raw bytes is not a whole number of {datatype} elements"
        )
    values = np.frombuffer(raw, dtype=dtype.newbyteorder("<"))
    check_shape(name, shape, values.size)
    return values.reshape(shape)


def to_raw(tensor: Tensor) -> bytes:
    """The binary form of an output (FP32 little-endian)."""
    return np.ascontiguousarray(tensor.data, dtype=DATATYPES[tensor.datatype].newbyteorder("<")).tobytes()
