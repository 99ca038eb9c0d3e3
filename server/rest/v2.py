"""The Open Inference Protocol (KServe V2) over HTTP/JSON, with the binary tensor data extension.

Paths: ``/v2/health/live``, ``/v2/health/ready``, ``/v2``, ``/v2/models/{m}[/versions/{v}]``,
``.../ready``, ``.../infer`` and ``POST /v2/repository/index``. Requests become
:class:`~server.api.tensors.Tensor` values (:mod:`server.rest.v2_request`, parsed where they cannot
stall the server: :mod:`server.rest.bodies`) and go to the same :class:`OpenInference` as gRPC.

Binary data: with an ``Inference-Header-Content-Length: <n>`` header, the body is ``n`` bytes of
JSON followed by each input flagged ``"parameters": {"binary_data_size": k}``, in order (BYTES
elements each prefixed by a 4-byte little-endian length). Outputs come back the same way when asked
for (``binary_data`` on an output or ``binary_data_output`` on the request); else as JSON lists.
BYTES inputs in JSON are strings, or ``{"b64": ...}`` objects for binary data such as images.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from server.api.openinference import OpenInference
from server.api.tensors import to_raw
from server.errors import InvalidRequest
from server.rest.app import SERVED
from server.rest.bodies import BodyParser, loads
from server.rest.v2_request import HEADER_LENGTH, parse_infer_request

BINARY_EXTENSIONS = ("model_repository", "binary_tensor_data")


class V2Handlers:
    def __init__(self, dataplane: OpenInference, bodies: BodyParser) -> None:
        self.dataplane = dataplane
        self.bodies = bodies

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
        options = await self.bodies.parse(_index_options, await self.bodies.read(request))
        return web.json_response(self.dataplane.repository_index(ready_only=options))

    async def infer(self, request: web.Request) -> web.Response:
        info = request.match_info
        parsed = await self.bodies.parse(
            parse_infer_request,
            await self.bodies.read(request),
            request.headers.get(HEADER_LENGTH),
            self.dataplane.max_images_per_request,
        )
        result = await self.dataplane.infer(
            info["model"],
            info.get("version", ""),
            parsed.inputs,
            [name for name, _ in parsed.outputs],
            parsed.parameters,
        )
        request[SERVED] = (result.name, result.version)
        answer: dict[str, Any] = {"model_name": result.name, "model_version": str(result.version)}
        if parsed.id is not None:
            answer["id"] = parsed.id
        binary_of = dict(parsed.outputs)
        answer["outputs"], blobs = [], []
        for tensor in result.outputs:
            output: dict[str, Any] = {"name": tensor.name, "datatype": tensor.datatype, "shape": tensor.shape}
            binary = binary_of.get(tensor.name)
            if parsed.binary_default if binary is None else binary:
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


def _index_options(body: bytes) -> bool:
    """``POST /v2/repository/index``'s body: ``{"ready": true}`` lists only ready models."""
    if not body.strip():
        return False
    options = loads(body)
    if not isinstance(options, dict):
        raise InvalidRequest("the request body must be a JSON object")
    return bool(options.get("ready"))


def routes(dataplane: OpenInference, bodies: BodyParser) -> list[web.RouteDef]:
    h = V2Handlers(dataplane, bodies)
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
