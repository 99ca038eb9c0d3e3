"""TensorFlow Serving's REST API, as TF Serving users call it on port 8501 with curl.

``GET /v1/models/{m}[/versions/{v}|/labels/{l}]`` (status), ``.../metadata`` and
``POST ...:predict`` with ``instances`` (row format) or ``inputs`` (columnar format), binary values
as ``{"b64": ...}`` and ``signature_name``. Status and metadata are the gRPC answers
(:mod:`server.api.tfserving`) in protobuf's JSON mapping; predict runs
:meth:`InferenceService.predict`, the path of TF Serving's gRPC Predict (so encoded images are
checked, oriented and batched exactly as in Classify).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from typing import Any

import numpy as np
from aiohttp import web
from google.protobuf import json_format
from tensorflow_serving.apis import get_model_metadata_pb2

from model_format import signatures as sig
from server.api import tfserving
from server.errors import InvalidRequest, NotFound
from server.inference import InferenceService
from server.repository import ModelRef, ModelRepository
from server.rest.app import MODEL, SERVED
from server.settings import ServerSettings

#: ``{model}[/versions/{v}|/labels/{l}][/metadata|:verb]`` after ``/v1/models/``.
_PATH = re.compile(
    r"^(?P<model>[^/:]+)(?:/versions/(?P<version>\d+)|/labels/(?P<label>[^/:]+))?"
    r"(?:(?P<metadata>/metadata)|:(?P<verb>[A-Za-z]+))?$"
)
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


def _as_input(name: str, value: Any) -> np.ndarray:
    """JSON values as the signature's input tensor: strings/bytes for 'images', uint8 for 'pixels'."""
    if name == sig.IMAGES_INPUT:
        if not isinstance(value, list) or not all(isinstance(v, (bytes, str)) for v in value):
            raise InvalidRequest('input \'images\' must be a list of {"b64": "<base64 image>"} values')
        return np.array([v.encode() if isinstance(v, str) else v for v in value], dtype=object)
    try:
        array = np.asarray(value)
    except ValueError:
        raise InvalidRequest(f"input {name!r} is not a rectangular nested list") from None
    if array.dtype.kind not in "iu" or (array.size and (array.min() < 0 or array.max() > 255)):
        raise InvalidRequest(f"input {name!r} must hold integers 0..255 (uint8 [N, H, W, 3] pixels)")
    return array.astype(np.uint8)


def predict_inputs(document: dict, input_name: str) -> tuple[dict[str, np.ndarray], bool]:
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
        return {input_name: _as_input(input_name, _decode_binary(value))}, True
    inputs = document["inputs"]
    if _named(inputs):
        if set(inputs) != {input_name}:
            raise InvalidRequest(f"this signature takes one input named {input_name!r}; got {sorted(inputs)}")
        inputs = inputs[input_name]
    return {input_name: _as_input(input_name, _decode_binary(inputs))}, False


class TFServingHandlers:
    def __init__(
        self, settings: ServerSettings, repository: ModelRepository, inference: InferenceService
    ) -> None:
        self.settings = settings
        self.repository = repository
        self.inference = inference

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
            return ModelRef(target["model"], version=int(target["version"]))
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
        version = int(target["version"]) if target["version"] is not None else None
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
        try:
            document = json.loads(await request.read())
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise InvalidRequest(f"the request body is not JSON: {exc}") from None
        if not isinstance(document, dict):
            raise InvalidRequest("the request body must be a JSON object")
        signature = document.get("signature_name") or sig.DEFAULT
        if not isinstance(signature, str):
            raise InvalidRequest("'signature_name' must be a string")
        input_name = sig.PIXELS_INPUT if signature.endswith("_pixels") else sig.IMAGES_INPUT
        inputs, rows = predict_inputs(document, input_name)
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
    settings: ServerSettings, repository: ModelRepository, inference: InferenceService
) -> list[web.RouteDef]:
    h = TFServingHandlers(settings, repository, inference)
    return [
        web.get("/v1/models/{path:.+}", h.get, name="tfserving.status"),
        web.post("/v1/models/{path:.+}", h.post, name="tfserving.predict"),
    ]
