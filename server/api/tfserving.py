"""TensorFlow Serving's own gRPC API on the same port, so clients built on ``tensorflow-serving-api``
work unchanged: ``tensorflow.serving.PredictionService`` (``Predict``, ``GetModelMetadata``) and
``tensorflow.serving.ModelService`` (``GetModelStatus``).

``Predict`` runs any exported signature by name (``serving_default``, ``classify``,
``classify_pixels``, ``features``, ``features_pixels``); encoded ``images`` go through the same core
path as ``Classify``/``ExtractFeatures`` (checks, EXIF orientation, batching), so both APIs return the
same numbers. Errors use the same status codes and messages as the imageserve API.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf
from google.protobuf import any_pb2, wrappers_pb2
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_pb2,
    model_service_pb2,
    predict_pb2,
    prediction_service_pb2,
)

from server.api import converters
from server.errors import InvalidRequest, NotFound
from server.inference import InferenceService
from server.repository import ModelRepository
from server.served import ModelRef, VersionState

PREDICTION_SERVICE = prediction_service_pb2.DESCRIPTOR.services_by_name["PredictionService"]
MODEL_SERVICE = model_service_pb2.DESCRIPTOR.services_by_name["ModelService"]

_STATES = {
    VersionState.LOADING: get_model_status_pb2.ModelVersionStatus.LOADING,
    VersionState.AVAILABLE: get_model_status_pb2.ModelVersionStatus.AVAILABLE,
    VersionState.UNLOADING: get_model_status_pb2.ModelVersionStatus.UNLOADING,
    VersionState.FAILED: get_model_status_pb2.ModelVersionStatus.END,
}
_FAILED_PRECONDITION = 9  # tensorflow.error.Code, as TF Serving reports a version that failed to load


def model_ref(spec: model_pb2.ModelSpec) -> ModelRef:
    choice = spec.WhichOneof("version_choice")
    if choice == "version":
        if spec.version.value < 1:
            raise InvalidRequest(f"model version must be >= 1, got {spec.version.value}")
        return ModelRef(spec.name, version=spec.version.value)
    if choice == "version_label":
        return ModelRef(spec.name, label=spec.version_label)
    return ModelRef(spec.name)


def served_spec(name: str, version: int, signature: str = "") -> model_pb2.ModelSpec:
    return model_pb2.ModelSpec(
        name=name, version=wrappers_pb2.Int64Value(value=version), signature_name=signature
    )


def _tensor_to_array(name: str, proto) -> np.ndarray:
    try:
        return tf.make_ndarray(proto)
    except (TypeError, ValueError) as exc:
        raise InvalidRequest(f"input {name!r} is not a valid TensorProto: {exc}") from None


class _Observed:
    """Metrics and request logs through the main servicer's ``observe_call``."""

    def __init__(self, main_servicer) -> None:
        self._main = main_servicer

    def observe_call(self, rpc, request, response, code, seconds) -> None:
        # Label values come from bounded sets only: a model the repository knows, the version that
        # answered (never the one a failed request asked for: 10,000 such requests made 10,000 series).
        answered = getattr(response, "model_spec", None)
        spec = answered or getattr(request, "model_spec", None)
        name = spec.name if spec is not None and spec.name in self._main.repository.model_names() else "-"
        version = answered.version.value if answered is not None and answered.HasField("version") else None
        if self._main.metrics is not None:
            self._main.metrics.record_request(f"tfserving.{rpc}", name, version, code, seconds)


class PredictionServicer(_Observed):
    rpc_service = PREDICTION_SERVICE.full_name

    def __init__(self, repository: ModelRepository, inference: InferenceService, main_servicer) -> None:
        super().__init__(main_servicer)
        self.repository = repository
        self.inference = inference

    async def Predict(self, request: predict_pb2.PredictRequest, context) -> predict_pb2.PredictResponse:
        inputs = {name: _tensor_to_array(name, proto) for name, proto in request.inputs.items()}
        result = await self.inference.predict(
            model_ref(request.model_spec),
            request.model_spec.signature_name,
            inputs,
            converters.deadline(context),
        )
        wanted = set(request.output_filter) or set(result.outputs)
        unknown = wanted - set(result.outputs)
        if unknown:
            raise InvalidRequest(
                f"output_filter names unknown outputs {sorted(unknown)}; outputs: {sorted(result.outputs)}"
            )
        response = predict_pb2.PredictResponse(
            model_spec=served_spec(result.name, result.version, result.signature)
        )
        for name in sorted(wanted):
            response.outputs[name].CopyFrom(
                tf.make_tensor_proto(np.asarray(result.outputs[name], np.float32))
            )
        return response

    async def GetModelMetadata(
        self, request: get_model_metadata_pb2.GetModelMetadataRequest, context
    ) -> get_model_metadata_pb2.GetModelMetadataResponse:
        unsupported = set(request.metadata_field) - {"signature_def"}
        if unsupported or not request.metadata_field:
            raise InvalidRequest(
                "metadata_field must be ['signature_def'] (the only metadata TF Serving defines)"
            )
        return model_metadata(self.repository, model_ref(request.model_spec))


class ModelServicer(_Observed):
    rpc_service = MODEL_SERVICE.full_name

    def __init__(self, repository: ModelRepository, main_servicer) -> None:
        super().__init__(main_servicer)
        self.repository = repository

    async def GetModelStatus(
        self, request: get_model_status_pb2.GetModelStatusRequest, context
    ) -> get_model_status_pb2.GetModelStatusResponse:
        wanted = request.model_spec.version.value if request.model_spec.HasField("version") else None
        return model_status(self.repository, request.model_spec.name, wanted)


def model_metadata(
    repository: ModelRepository, ref: ModelRef
) -> get_model_metadata_pb2.GetModelMetadataResponse:
    """GetModelMetadata's answer (gRPC and REST): every signature of the served version."""
    served = repository.resolve(ref)
    signature_map = get_model_metadata_pb2.SignatureDefMap()
    for name, definition in served.model.signature_defs.items():
        signature_map.signature_def[name].CopyFrom(definition)
    packed = any_pb2.Any()
    packed.Pack(signature_map)
    response = get_model_metadata_pb2.GetModelMetadataResponse(
        model_spec=served_spec(served.name, served.version)
    )
    response.metadata["signature_def"].CopyFrom(packed)
    return response


def model_status(
    repository: ModelRepository, name: str, wanted: int | None = None
) -> get_model_status_pb2.GetModelStatusResponse:
    """GetModelStatus's answer (gRPC and REST): every version, or only ``wanted``."""
    view = repository.view(name)
    response = get_model_status_pb2.GetModelStatusResponse()
    for served in view.versions:
        if wanted is not None and served.version != wanted:
            continue
        status = response.model_version_status.add(version=served.version, state=_STATES[served.state])
        status.status.SetInParent()  # error_code OK, as TF Serving reports it
        if served.state is VersionState.FAILED:
            status.status.error_code = _FAILED_PRECONDITION
            status.status.error_message = served.error
    if wanted is not None and not response.model_version_status:
        known = ", ".join(str(v.version) for v in view.versions) or "none"
        raise NotFound(f"model {view.name!r} has no version {wanted}; versions: {known}")
    return response
