"""TensorFlow Serving's REST API, as TF Serving users call it on port 8501 with curl.

``GET /v1/models/{m}[/versions/{v}|/labels/{l}]`` (status), ``.../metadata`` and
``POST ...:predict`` with ``instances`` (row format) or ``inputs`` (columnar format), binary values
as ``{"b64": ...}`` and ``signature_name``. Status and metadata are the gRPC answers
(:mod:`server.api.tfserving`) in protobuf's JSON mapping; predict runs
:meth:`InferenceService.predict`, the path of TF Serving's gRPC Predict (so encoded images are
checked, oriented and batched exactly as in Classify).
"""

from __future__ import annotations

import re

import numpy as np
from aiohttp import web
from google.protobuf import json_format
from tensorflow_serving.apis import get_model_metadata_pb2

from server.api import tfserving
from server.discovery import version_number
from server.errors import InvalidRequest, NotFound
from server.inference import InferenceService
from server.repository import ModelRepository
from server.rest.app import MODEL, SERVED
from server.rest.bodies import BodyParser
from server.rest.tfserving_request import parse_predict
from server.served import ModelRef
from server.settings import ServerSettings

#: ``{model}[/versions/{v}|/labels/{l}][/metadata|:verb]`` after ``/v1/models/``.
_PATH = re.compile(
    r"^(?P<model>[^/:]+)(?:/versions/(?P<version>[^/:]+)|/labels/(?P<label>[^/:]+))?"
    r"(?:(?P<metadata>/metadata)|:(?P<verb>[A-Za-z]+))?$"
)


class TFServingHandlers:
    def __init__(
        self,
        settings: ServerSettings,
        repository: ModelRepository,
        inference: InferenceService,
        bodies: BodyParser,
    ) -> None:
        self.settings = settings
        self.repository = repository
        self.inference = inference
        self.bodies = bodies

    def _target(self, request: web.Request) -> dict[str, str | None]:
        match = _PATH.match(request.match_info["path"])
        if match is None:
            raise NotFound(
                f"no TF Serving REST endpoint {request.path!r}: use "
                "/v1/models/<name>[/versions/<n>|/labels/<l>][/metadata|:predict]"
            )
        request[MODEL] = match["model"]  # for metrics (the path is one route)
        return match.groupdict()

    def _ref(self, target: dict[str, str | None]) -> ModelRef:
        if target["version"] is not None:
            return ModelRef(target["model"], version=version_number(target["version"]))
        return ModelRef(target["model"], label=target["label"])

    async def get(self, request: web.Request) -> web.Response:
        target = self._target(request)
        if target["verb"] is not None:
            raise InvalidRequest(f"':{target['verb']}' takes POST")
        if target["metadata"]:
            response = tfserving.model_metadata(self.repository, self._ref(target))
            signature_map = get_model_metadata_pb2.SignatureDefMap()
            response.metadata["signature_def"].Unpack(signature_map)
            return web.json_response(
                {
                    "model_spec": json_format.MessageToDict(
                        response.model_spec, preserving_proto_field_name=True
                    ),
                    "metadata": {
                        "signature_def": json_format.MessageToDict(
                            signature_map, preserving_proto_field_name=True
                        )
                    },
                }
            )
        version = version_number(target["version"]) if target["version"] is not None else None
        if target["label"] is not None:
            labels = self.settings.model_config(target["model"]).version_labels
            if target["label"] not in labels:
                known = ", ".join(sorted(labels)) or "none configured"
                raise NotFound(
                    f"unknown version label {target['label']!r} for model {target['model']!r}; labels: "
                    f"{known}"
                )
            version = labels[target["label"]]
        status = tfserving.model_status(self.repository, target["model"], version)
        body = json_format.MessageToDict(
            status, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
        )
        return web.json_response(body)

    async def post(self, request: web.Request) -> web.Response:
        target = self._target(request)
        if target["verb"] != "predict":
            verb = f":{target['verb']}" if target["verb"] else "no verb"
            raise InvalidRequest(
                f"{verb}: this server answers ':predict' (its signatures are predict signatures)"
            )
        ref = self._ref(target)
        self.repository.resolve(ref)  # an unknown model is the more useful error, before input checks
        body = await self.bodies.read(request)
        parsed = await self.bodies.parse(parse_predict, body, self.settings.max_images_per_request)
        signature, inputs, rows = parsed.signature, parsed.inputs, parsed.rows
        result = await self.inference.predict(ref, signature, inputs)
        request[SERVED] = (result.name, result.version)
        outputs = {name: np.asarray(values, np.float32).tolist() for name, values in result.outputs.items()}
        if len(outputs) == 1:
            (value,) = outputs.values()
            return web.json_response({"predictions" if rows else "outputs": value})
        if not rows:
            return web.json_response({"outputs": outputs})
        count = len(next(iter(outputs.values())))
        return web.json_response(
            {"predictions": [{k: v[i] for k, v in outputs.items()} for i in range(count)]}
        )


def routes(
    settings: ServerSettings, repository: ModelRepository, inference: InferenceService, bodies: BodyParser
) -> list[web.RouteDef]:
    h = TFServingHandlers(settings, repository, inference, bodies)
    return [
        web.get("/v1/models/{path:.+}", h.get, name="tfserving.status"),
        web.post("/v1/models/{path:.+}", h.post, name="tfserving.predict"),
    ]
