"""``imageserve.v1.ImageModelService``: each method converts, calls one core function, converts back."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import grpc

from protos.imageserve.v1 import image_service_pb2 as pb
from server.api import converters, finetune_converters
from server.errors import FineTuningDisabled, InvalidRequest
from server.inference import InferenceService
from server.metrics import Metrics
from server.repository import ModelRepository
from server.settings import ServerSettings

if TYPE_CHECKING:
    from server.finetune.manager import FineTuneManager

log = logging.getLogger(__name__)

SERVICE = pb.DESCRIPTOR.services_by_name["ImageModelService"]
SERVICE_NAME = SERVICE.full_name


class ImageModelServicer:
    rpc_service = SERVICE_NAME

    def __init__(
        self,
        settings: ServerSettings,
        repository: ModelRepository,
        inference: InferenceService,
        finetune: FineTuneManager | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.settings = settings
        self.repository = repository
        self.inference = inference
        self.finetune = finetune
        self.metrics = metrics

    def observe_call(self, rpc: str, request, response, code: str, seconds: float) -> None:
        """Called once per call by :func:`server.api.errors.grpc_method`: metrics and the debug request
        log."""
        served = getattr(response, "model", None)
        if isinstance(served, pb.ServedModel):
            model, version = served.name, served.version
        else:
            # Only names the repository knows become label values: bad requests must not grow the series.
            asked = getattr(getattr(request, "model", None), "name", None) or getattr(request, "name", None)
            model, version = (asked if asked in self.repository.model_names() else "-"), None
        if self.metrics is not None:
            self.metrics.record_request(rpc, model, version, code, seconds)
        log.debug("%s model=%s version=%s -> %s in %.1f ms", rpc, model, version or "-", code, seconds * 1000)

    async def Classify(
        self, request: pb.ClassifyRequest, context: grpc.aio.ServicerContext
    ) -> pb.ClassifyResponse:
        result = await self.inference.classify(
            converters.model_ref(request.model),
            list(request.images),
            request.top_k if request.HasField("top_k") else None,
            converters.deadline(context),
        )
        return converters.classify_response(result)

    async def ExtractFeatures(
        self, request: pb.ExtractFeaturesRequest, context: grpc.aio.ServicerContext
    ) -> pb.ExtractFeaturesResponse:
        result = await self.inference.extract_features(
            converters.model_ref(request.model), list(request.images), converters.deadline(context)
        )
        return converters.features_response(result)

    async def ListModels(self, request: pb.ListModelsRequest, context) -> pb.ListModelsResponse:
        return pb.ListModelsResponse(
            models=[converters.model_status(view, include_labels=False) for view in self.repository.views()]
        )

    async def GetModelStatus(self, request: pb.GetModelStatusRequest, context) -> pb.ModelStatus:
        if not request.name:
            raise InvalidRequest("name is required")
        return converters.model_status(self.repository.view(request.name), include_labels=True)

    async def GetServerInfo(self, request: pb.GetServerInfoRequest, context) -> pb.ServerInfo:
        return converters.server_info(self.settings)

    # --- fine-tuning: the plain core is server.finetune.manager.FineTuneManager.

    def _finetune(self):
        if self.finetune is None:
            raise FineTuningDisabled("fine-tuning is not enabled on this server")
        return self.finetune

    async def UploadDataset(self, request_iterator, context) -> pb.Dataset:
        dataset = await self._finetune().upload_dataset(finetune_converters.upload_items(request_iterator))
        return finetune_converters.dataset(dataset)

    async def StartFineTune(self, request: pb.StartFineTuneRequest, context) -> pb.FineTuneJob:
        job = await self._finetune().start_job(finetune_converters.start_request(request))
        return finetune_converters.job(job)

    async def GetFineTuneJob(self, request: pb.GetFineTuneJobRequest, context) -> pb.FineTuneJob:
        return finetune_converters.job(self._finetune().get(request.job_id))

    async def ListFineTuneJobs(
        self, request: pb.ListFineTuneJobsRequest, context
    ) -> pb.ListFineTuneJobsResponse:
        jobs = self._finetune().list(finetune_converters.job_states(request.states), request.limit)
        return pb.ListFineTuneJobsResponse(jobs=[finetune_converters.job(job) for job in jobs])

    async def CancelFineTuneJob(self, request: pb.CancelFineTuneJobRequest, context) -> pb.FineTuneJob:
        return finetune_converters.job(await self._finetune().cancel(request.job_id))

    async def WatchFineTuneJob(self, request: pb.WatchFineTuneJobRequest, context):
        async for event in self._finetune().watch(request.job_id, request.after_event_id):
            yield finetune_converters.event(event)
