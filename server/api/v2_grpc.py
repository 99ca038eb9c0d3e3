"""``inference.GRPCInferenceService`` (Open Inference Protocol / KServe V2) on the main gRPC port.

Each method converts the protobuf request into plain values, calls :class:`OpenInference`, and
converts back; errors go through the same :func:`server.api.errors.grpc_method` mapping as the
imageserve API, so a V2 client sees the same status codes and messages.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from model_format.layout import MAX_VERSION_DIGITS
from protos.inference import grpc_service_pb2 as pb
from server.api import converters
from server.api.openinference import OpenInference
from server.api.tensors import DATATYPES, Tensor, check_bytes_count, check_shape, from_raw, to_raw
from server.discovery import is_version_number
from server.errors import InvalidRequest

SERVICE = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"]

#: Typed ``InferTensorContents`` field of each datatype.
_CONTENTS_FIELD = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}


def parameter_value(parameter: pb.InferParameter) -> Any:
    choice = parameter.WhichOneof("parameter_choice")
    return getattr(parameter, choice) if choice else None


def input_tensors(request: pb.ModelInferRequest, max_bytes_elements: int) -> list[Tensor]:
    """The request's inputs; BYTES inputs (encoded images) hold at most ``max_bytes_elements``."""
    raw = list(request.raw_input_contents)
    if raw and len(raw) != len(request.inputs):
        raise InvalidRequest(
            f"{len(raw)} raw_input_contents for {len(request.inputs)} inputs; send one per input"
        )
    tensors = []
    for index, item in enumerate(request.inputs):
        shape = list(item.shape)
        if raw:
            data = from_raw(item.name, item.datatype, shape, raw[index], max_bytes_elements)
        else:
            field = _CONTENTS_FIELD.get(item.datatype)
            if field is None:
                raise InvalidRequest(
                    f"input {item.name!r}: unsupported datatype {item.datatype!r}; use BYTES or UINT8"
                )
            values = getattr(item.contents, field)
            if item.datatype == "BYTES":
                check_bytes_count(item.name, shape, max_bytes_elements)
            check_shape(item.name, shape, len(values))
            if item.datatype == "BYTES":
                data = np.array(list(values), dtype=object).reshape(shape)
            else:
                array = np.asarray(values)
                if item.datatype == "UINT8" and array.size and array.max() > 255:
                    raise InvalidRequest(f"input {item.name!r}: UINT8 values must be 0..255")
                data = array.astype(DATATYPES[item.datatype]).reshape(shape)
        parameters = {key: parameter_value(value) for key, value in item.parameters.items()}
        tensors.append(Tensor(item.name, item.datatype, shape, data, parameters))
    return tensors


class InferenceServicer:
    rpc_service = SERVICE.full_name

    def __init__(self, dataplane: OpenInference, main_servicer) -> None:
        self.dataplane = dataplane
        self._main = main_servicer

    def observe_call(self, rpc, request, response, code, seconds) -> None:
        """Metrics through the main servicer's series, as ``v2.<Method>``."""
        name = (
            getattr(response, "model_name", "")
            or getattr(request, "model_name", "")
            or getattr(request, "name", "")
        )
        known = name in self._main.repository.model_names()
        version = getattr(response, "model_version", "")
        if self._main.metrics is not None:
            self._main.metrics.record_request(
                f"v2.{rpc}",
                name if known else "-",
                int(version) if is_version_number(version) and len(version) <= MAX_VERSION_DIGITS else None,
                code,
                seconds,
            )

    async def ServerLive(self, request: pb.ServerLiveRequest, context) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=self.dataplane.server_live())

    async def ServerReady(self, request: pb.ServerReadyRequest, context) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=self.dataplane.server_ready())

    async def ModelReady(self, request: pb.ModelReadyRequest, context) -> pb.ModelReadyResponse:
        return pb.ModelReadyResponse(ready=self.dataplane.model_ready(request.name, request.version))

    async def ServerMetadata(self, request: pb.ServerMetadataRequest, context) -> pb.ServerMetadataResponse:
        return pb.ServerMetadataResponse(**self.dataplane.server_metadata())

    async def ModelMetadata(self, request: pb.ModelMetadataRequest, context) -> pb.ModelMetadataResponse:
        metadata = self.dataplane.model_metadata(request.name, request.version)
        return pb.ModelMetadataResponse(
            name=metadata["name"],
            versions=metadata["versions"],
            platform=metadata["platform"],
            inputs=[pb.ModelMetadataResponse.TensorMetadata(**t) for t in metadata["inputs"]],
            outputs=[pb.ModelMetadataResponse.TensorMetadata(**t) for t in metadata["outputs"]],
        )

    async def RepositoryIndex(
        self, request: pb.RepositoryIndexRequest, context
    ) -> pb.RepositoryIndexResponse:
        models = self.dataplane.repository_index(ready_only=request.ready)
        return pb.RepositoryIndexResponse(models=[pb.RepositoryIndexResponse.ModelIndex(**m) for m in models])

    async def ModelInfer(self, request: pb.ModelInferRequest, context) -> pb.ModelInferResponse:
        result = await self.dataplane.infer(
            request.model_name,
            request.model_version,
            input_tensors(request, self.dataplane.max_images_per_request),
            [output.name for output in request.outputs],
            {key: parameter_value(value) for key, value in request.parameters.items()},
            converters.deadline(context),
        )
        response = pb.ModelInferResponse(
            model_name=result.name, model_version=str(result.version), id=request.id
        )
        for tensor in result.outputs:
            response.outputs.add(name=tensor.name, datatype=tensor.datatype, shape=tensor.shape)
            response.raw_output_contents.append(to_raw(tensor))
        return response
