"""The Open Inference Protocol (KServe V2) over HTTP/JSON, with the binary tensor data extension.

Paths: ``/v2/health/live``, ``/v2/health/ready``, ``/v2``, ``/v2/models/{m}[/versions/{v}]``,
``.../ready``, ``.../infer`` and ``POST /v2/repository/index``. Requests become
:class:`~server.api.openinference.Tensor` values and go to the same :class:`OpenInference` as gRPC.

Binary data: with an ``Inference-Header-Content-Length: <n>`` header, the body is ``n`` bytes of
JSON followed by each input flagged ``"parameters": {"binary_data_size": k}``, in order (BYTES
elements each prefixed by a 4-byte little-endian length). Outputs come back the same way when asked
for (``binary_data`` on an output or ``binary_data_output`` on the request); else as JSON lists.
BYTES inputs in JSON are strings, or ``{"b64": ...}`` objects for binary data such as images.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

import numpy as np
from aiohttp import web

from server.api.openinference import DATATYPES, OpenInference, Tensor, check_shape, from_raw, to_raw
from server.errors import InvalidRequest
from server.rest.app import SERVED

HEADER_LENGTH = "Inference-Header-Content-Length"
BINARY_EXTENSIONS = ("model_repository", "binary_tensor_data")


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


def _flatten(value: Any) -> list:
    if isinstance(value, list):
        return [leaf for item in value for leaf in _flatten(item)]
    return [value]


def json_tensor(
    name: str, datatype: str, shape: list[int], data: Any, parameters: dict[str, Any]
) -> np.ndarray:
    values = _flatten(data)
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


def _object(value: Any, what: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidRequest(f"{what} must be a JSON object")
    return value


def parse_infer_request(body: bytes, header_length: str | None) -> tuple[dict, list[Tensor]]:
    """The request's JSON document and its input tensors (binary parts included)."""
    binary = b""
    if header_length is not None:
        if not header_length.isdigit() or int(header_length) > len(body):
            raise InvalidRequest(
                f"{HEADER_LENGTH} must be the JSON part's length in bytes (at most {len(body)})"
            )
        body, binary = body[: int(header_length)], body[int(header_length) :]
    try:
        document = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidRequest(f"the request body is not JSON: {exc}") from None
    document = _object(document, "the request body")
    inputs, offset = [], 0
    for item in document.get("inputs") or []:
        item = _object(item, "each input")
        name, datatype, shape = item.get("name"), item.get("datatype"), item.get("shape")
        if (
            not isinstance(name, str)
            or not isinstance(datatype, str)
            or not isinstance(shape, list)
            or not all(isinstance(d, int) and not isinstance(d, bool) for d in shape)
        ):
            raise InvalidRequest("each input needs a name, a datatype and a shape (a list of integers)")
        parameters = _object(item.get("parameters"), f"input {name!r} parameters")
        size = parameters.get("binary_data_size")
        if size is not None:
            if not isinstance(size, int) or size < 0 or offset + size > len(binary):
                raise InvalidRequest(f"input {name!r}: binary_data_size {size} runs past the binary data")
            data = from_raw(name, datatype, shape, binary[offset : offset + size])
            offset += size
        elif "data" in item:
            data = json_tensor(name, datatype, shape, item["data"], parameters)
        else:
            raise InvalidRequest(f"input {name!r} has neither data nor binary_data_size")
        inputs.append(Tensor(name, datatype, shape, data, parameters))
    if offset != len(binary):
        raise InvalidRequest(f"{len(binary) - offset} bytes of binary data belong to no input")
    return document, inputs


class V2Handlers:
    def __init__(self, dataplane: OpenInference) -> None:
        self.dataplane = dataplane

    async def live(self, request: web.Request) -> web.Response:
        live = self.dataplane.server_live()
        return web.json_response({"live": live}, status=200 if live else 400)

    async def ready(self, request: web.Request) -> web.Response:
        ready = self.dataplane.server_ready()
        return web.json_response({"ready": ready}, status=200 if ready else 400)

    async def server_metadata(self, request: web.Request) -> web.Response:
        return web.json_response(self.dataplane.server_metadata(BINARY_EXTENSIONS))

    async def model_metadata(self, request: web.Request) -> web.Response:
        info = request.match_info
        return web.json_response(self.dataplane.model_metadata(info["model"], info.get("version", "")))

    async def model_ready(self, request: web.Request) -> web.Response:
        info = request.match_info
        ready = self.dataplane.model_ready(info["model"], info.get("version", ""))
        return web.json_response({"name": info["model"], "ready": ready}, status=200 if ready else 400)

    async def repository_index(self, request: web.Request) -> web.Response:
        body = await request.read()
        try:
            options = _object(json.loads(body) if body.strip() else {}, "the request body")
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise InvalidRequest(f"the request body is not JSON: {exc}") from None
        return web.json_response(self.dataplane.repository_index(ready_only=bool(options.get("ready"))))

    async def infer(self, request: web.Request) -> web.Response:
        info = request.match_info
        document, inputs = parse_infer_request(await request.read(), request.headers.get(HEADER_LENGTH))
        parameters = dict(_object(document.get("parameters"), "parameters"))
        binary_default = bool(parameters.pop("binary_data_output", False))
        requested = [_object(o, "each output") for o in document.get("outputs") or []]
        binary_of = {
            o.get("name"): bool(
                _object(o.get("parameters"), "output parameters").get("binary_data", binary_default)
            )
            for o in requested
        }
        result = await self.dataplane.infer(
            info["model"], info.get("version", ""), inputs, [o.get("name") for o in requested], parameters
        )
        request[SERVED] = (result.name, result.version)
        answer: dict[str, Any] = {"model_name": result.name, "model_version": str(result.version)}
        if "id" in document:
            answer["id"] = document["id"]
        answer["outputs"], blobs = [], []
        for tensor in result.outputs:
            output: dict[str, Any] = {"name": tensor.name, "datatype": tensor.datatype, "shape": tensor.shape}
            if binary_of.get(tensor.name, binary_default):
                blob = to_raw(tensor)
                output["parameters"] = {"binary_data_size": len(blob)}
                blobs.append(blob)
            else:
                output["data"] = tensor.data.ravel().tolist()
            answer["outputs"].append(output)
        header = json.dumps(answer).encode()
        if not blobs:
            return web.Response(body=header, content_type="application/json")
        return web.Response(
            body=header + b"".join(blobs),
            content_type="application/octet-stream",
            headers={HEADER_LENGTH: str(len(header))},
        )


def routes(dataplane: OpenInference) -> list[web.RouteDef]:
    h = V2Handlers(dataplane)
    model, version = "/v2/models/{model}", "/v2/models/{model}/versions/{version}"
    return [
        web.get("/v2/health/live", h.live, name="v2.live"),
        web.get("/v2/health/ready", h.ready, name="v2.ready"),
        web.get("/v2", h.server_metadata, name="v2.server_metadata"),
        web.post("/v2/repository/index", h.repository_index, name="v2.repository_index"),
        web.get(model, h.model_metadata, name="v2.model_metadata"),
        web.get(version, h.model_metadata, name="v2.model_metadata:version"),
        web.get(model + "/ready", h.model_ready, name="v2.model_ready"),
        web.get(version + "/ready", h.model_ready, name="v2.model_ready:version"),
        web.post(model + "/infer", h.infer, name="v2.infer"),
        web.post(version + "/infer", h.infer, name="v2.infer:version"),
    ]
