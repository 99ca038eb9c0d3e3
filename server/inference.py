"""The serving core: Classify and ExtractFeatures on plain Python values (no protobuf here).

A request is checked (limits, image headers), leases a model version from the repository, goes
through that version's batcher, and comes back as plain results naming the version that answered.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from api_types.results import Prediction  # one definition of a prediction, the API's
from model_format import signatures as sig
from server import tracing
from server.errors import InvalidRequest
from server.images import apply_orientation, inspect_image
from server.repository import ModelRepository
from server.served import ModelRef
from server.settings import ServerSettings

log = logging.getLogger(__name__)

DEFAULT_TOP_K = 5


@dataclass(frozen=True)
class ClassifyResult:
    name: str
    version: int
    predictions: list[list[Prediction]]


@dataclass(frozen=True)
class FeaturesResult:
    name: str
    version: int
    features: np.ndarray  # float32 [N, D]


@dataclass(frozen=True)
class PredictResult:
    """Outputs of one signature, by output name (TF Serving's Predict)."""

    name: str
    version: int
    signature: str
    outputs: dict[str, np.ndarray]


def top_k_predictions(probabilities: np.ndarray, k: int, labels: Sequence[str]) -> list[list[Prediction]]:
    """Highest-probability classes per row, best first."""
    if probabilities.shape[0] == 0:
        return []
    top = np.argsort(-probabilities, axis=1, kind="stable")[:, :k]
    return [
        [Prediction(int(c), labels[c] if c < len(labels) else str(c), float(row[c])) for c in indices]
        for row, indices in zip(probabilities, top)
    ]


class InferenceService:
    """Classify / ExtractFeatures over the repository's served versions."""

    def __init__(self, settings: ServerSettings, repository: ModelRepository) -> None:
        self.settings = settings
        self.repository = repository

    async def _prepare_images(self, images: Sequence[bytes]) -> list[bytes]:
        if not images:
            raise InvalidRequest("no images in the request")
        limit = self.settings.max_images_per_request
        if len(images) > limit:
            raise InvalidRequest(
                f"{len(images)} images in one request; the maximum is {limit}: split the request"
            )
        prepared = list(images)
        # "decode": header checks and EXIF orientation; pixels are decoded inside the model call.
        with tracing.span("decode", {"imageserve.images": len(images)}):
            for index, data in enumerate(images):
                if inspect_image(index, data, self.settings.max_image_pixels).needs_orientation:
                    loop = asyncio.get_running_loop()
                    prepared[index] = await loop.run_in_executor(None, apply_orientation, index, data)
        return prepared

    async def classify(
        self, ref: ModelRef, images: Sequence[bytes], top_k: int | None = None, deadline: float | None = None
    ) -> ClassifyResult:
        """Top-k classes per image (``top_k`` None: the default, 5). A ``top_k`` above the model's
        number of classes returns every class (a 2-class model answers the default 5 with 2)."""
        if top_k is not None and top_k < 1:
            raise InvalidRequest(
                f"top_k must be >= 1 (leave it unset for the default {DEFAULT_TOP_K}), got {top_k}"
            )
        k = top_k or DEFAULT_TOP_K
        self.repository.resolve(ref)  # an unknown model is the more useful error, before image checks
        prepared = await self._prepare_images(images)
        async with self.repository.lease(ref, "classify", deadline) as served:
            metadata = served.model.metadata
            probabilities = await served.batchers["classify"].submit(prepared, deadline)
            k = min(k, probabilities.shape[1])
            return ClassifyResult(
                served.name, served.version, top_k_predictions(probabilities, k, metadata.labels)
            )

    async def extract_features(
        self, ref: ModelRef, images: Sequence[bytes], deadline: float | None = None
    ) -> FeaturesResult:
        self.repository.resolve(ref)
        prepared = await self._prepare_images(images)
        async with self.repository.lease(ref, "features", deadline) as served:
            features = await served.batchers["features"].submit(prepared, deadline)
            return FeaturesResult(served.name, served.version, np.asarray(features, dtype=np.float32))

    async def predict(
        self, ref: ModelRef, signature: str, inputs: dict[str, np.ndarray], deadline: float | None = None
    ) -> PredictResult:
        """Run a signature by name, as TF Serving's Predict does.

        Encoded images (the ``images`` input) take the same path as Classify/ExtractFeatures (checks,
        EXIF orientation, batching), so both APIs return the same numbers; ``pixels`` inputs are checked
        and run directly.
        """
        signature = signature or sig.DEFAULT
        served = self.repository.resolve(ref)
        kind = served.model.kind_of(signature)
        if kind is None:
            known = ", ".join(served.model.signature_names)
            raise InvalidRequest(
                f"model {served.name!r} v{served.version} has no signature {signature!r}; signatures: {known}"
            )
        takes_pixels = signature.endswith("_pixels")
        expected = sig.PIXELS_INPUT if takes_pixels else sig.IMAGES_INPUT
        if set(inputs) != {expected}:
            raise InvalidRequest(
                f"signature {signature!r} takes one input named {expected!r}, got {sorted(inputs)}"
            )
        value = inputs[expected]
        if takes_pixels:
            self._check_pixels(value)
        else:
            if value.dtype.kind not in ("S", "O") or value.ndim != 1:
                raise InvalidRequest(
                    f"input 'images' must be a 1-D string tensor of encoded images, got {value.dtype} "
                    f"{value.shape}"
                )
            prepared = await self._prepare_images([bytes(item) for item in value])
        output_name = sig.PROBABILITIES_OUTPUT if kind == "classify" else sig.FEATURES_OUTPUT
        async with self.repository.lease(ref, kind, deadline) as served:
            if takes_pixels:
                loop = asyncio.get_running_loop()
                try:
                    with tracing.span(
                        "model", {"imageserve.batch.size": len(value), "imageserve.signature": signature}
                    ):
                        outputs = await loop.run_in_executor(
                            self.repository.model_executor,
                            served.model.call_signature,
                            signature,
                            {expected: value},
                        )
                except ValueError as exc:
                    raise InvalidRequest(f"input 'pixels': {exc}") from None
            else:
                outputs = {output_name: await served.batchers[kind].submit(prepared, deadline)}
            return PredictResult(served.name, served.version, signature, outputs)

    def _check_pixels(self, pixels: np.ndarray) -> None:
        if pixels.dtype != np.uint8 or pixels.ndim != 4 or pixels.shape[-1] != 3:
            raise InvalidRequest(
                f"input 'pixels' must be uint8 [N, H, W, 3], got {pixels.dtype} {list(pixels.shape)}"
            )
        count, height, width, _ = pixels.shape
        if count == 0:
            raise InvalidRequest("no images in the request")
        if count > self.settings.max_images_per_request:
            raise InvalidRequest(
                f"{count} images in one request; the maximum is {self.settings.max_images_per_request}: "
                "split the request"
            )
        if height < 1 or width < 1 or height * width > self.settings.max_image_pixels:
            raise InvalidRequest(
                f"{width}x{height} images: each must have 1 to {self.settings.max_image_pixels:,} pixels"
            )
