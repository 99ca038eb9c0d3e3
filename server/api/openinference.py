"""The Open Inference Protocol (KServe V2) on plain values, shared by its gRPC and REST doors.

A request names inputs (``images``: BYTES ``[N]`` encoded images, or ``pixels``: UINT8
``[N, H, W, 3]``) and optionally outputs (``probabilities``, ``features``) or a ``signature``
parameter (any exported signature: ``classify``, ``features_pixels``, ``serving_default``...). Each
output runs through :meth:`server.inference.InferenceService.predict`, the TF Serving Predict path:
encoded images take Classify's path (checks, EXIF orientation, batching), so the numbers are the
same as Classify's. The transports (``v2_grpc``, ``server.rest.v2``) only turn wire tensors into
:class:`Tensor` and back.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from model_format import signatures as sig
from server import __version__
from server.api.tensors import Tensor
from server.discovery import version_number
from server.errors import InvalidRequest, ServingError
from server.inference import InferenceService
from server.repository import ModelRepository
from server.served import ModelRef, VersionState

SERVER_NAME = "imageserve"
PLATFORM = "tensorflow_savedmodel"
#: Protocol extensions served (the REST door adds ``binary_tensor_data``).
EXTENSIONS = ("model_repository",)
SIGNATURE_PARAMETER = "signature"

#: Output name -> (signature taking images, signature taking pixels).
_OUTPUT_SIGNATURES = {
    sig.PROBABILITIES_OUTPUT: (sig.CLASSIFY, sig.CLASSIFY_PIXELS),
    sig.FEATURES_OUTPUT: (sig.FEATURES, sig.FEATURES_PIXELS),
}
_STATES = {
    VersionState.AVAILABLE: "READY",
    VersionState.LOADING: "LOADING",
    VersionState.UNLOADING: "UNLOADING",
    VersionState.FAILED: "UNAVAILABLE",
}


@dataclass
class InferResult:
    name: str
    version: int
    outputs: list[Tensor]


def model_ref(name: str, version: str = "") -> ModelRef:
    """V2 versions are strings: empty is the default version, digits a number, anything else a label."""
    if not name:
        raise InvalidRequest("a model name is required")
    if not version:
        return ModelRef(name)
    if version.isdigit():  # any digits, "²" included: a number, or a clear error (never a label)
        return ModelRef(name, version=version_number(version))
    return ModelRef(name, label=version)


class OpenInference:
    """Health, metadata and inference as the Open Inference Protocol defines them."""

    def __init__(
        self, repository: ModelRepository, inference: InferenceService, server_ready: Callable[[], bool]
    ) -> None:
        self.repository = repository
        self.inference = inference
        self._server_ready = server_ready

    @property
    def max_images_per_request(self) -> int:
        """The most BYTES elements (encoded images) an input may hold."""
        return self.inference.settings.max_images_per_request

    def server_live(self) -> bool:
        return True

    def server_ready(self) -> bool:
        return self._server_ready()

    def server_metadata(self, extensions: tuple[str, ...] = EXTENSIONS) -> dict[str, Any]:
        return {"name": SERVER_NAME, "version": __version__, "extensions": list(extensions)}

    def model_ready(self, name: str, version: str = "") -> bool:
        """False (not an error) for unknown, loading or failed models, as V2 clients expect a boolean."""
        try:
            self.repository.resolve(model_ref(name, version))
        except ServingError:
            return False
        return True

    def model_metadata(self, name: str, version: str = "") -> dict[str, Any]:
        served = self.repository.resolve(model_ref(name, version))
        view = self.repository.view(name)
        available = [str(v.version) for v in view.versions if v.state is VersionState.AVAILABLE]
        metadata = served.model.metadata
        outputs = []
        if served.model.has("classify"):
            outputs.append(
                {"name": sig.PROBABILITIES_OUTPUT, "datatype": "FP32", "shape": [-1, metadata.num_classes]}
            )
        if served.model.has("features"):
            outputs.append(
                {"name": sig.FEATURES_OUTPUT, "datatype": "FP32", "shape": [-1, metadata.feature_dim]}
            )
        return {
            "name": served.name,
            "versions": available,
            "platform": PLATFORM,
            "inputs": [
                {"name": sig.IMAGES_INPUT, "datatype": "BYTES", "shape": [-1]},
                {"name": sig.PIXELS_INPUT, "datatype": "UINT8", "shape": [-1, -1, -1, 3]},
            ],
            "outputs": outputs,
        }

    def repository_index(self, ready_only: bool = False) -> list[dict[str, str]]:
        index = []
        for view in self.repository.views():
            for served in sorted(view.versions, key=lambda v: v.version):
                if ready_only and served.state is not VersionState.AVAILABLE:
                    continue
                index.append(
                    {
                        "name": view.name,
                        "version": str(served.version),
                        "state": _STATES[served.state],
                        "reason": served.error,
                    }
                )
        return index

    def _signatures(
        self, ref: ModelRef, input_name: str, outputs: list[str], parameters: dict[str, Any]
    ) -> list[str]:
        """The signatures to run: the ``signature`` parameter, else one per requested output, else the
        default."""
        takes_pixels = input_name == sig.PIXELS_INPUT
        signature = parameters.get(SIGNATURE_PARAMETER)
        if signature is not None:
            if not isinstance(signature, str) or not signature:
                raise InvalidRequest("the 'signature' parameter must be a signature name, e.g. 'classify'")
            return [signature]
        if outputs:
            unknown = sorted(set(outputs) - set(_OUTPUT_SIGNATURES))
            if unknown:
                raise InvalidRequest(f"unknown outputs {unknown}; outputs: {sorted(_OUTPUT_SIGNATURES)}")
            return [_OUTPUT_SIGNATURES[name][takes_pixels] for name in dict.fromkeys(outputs)]
        if not takes_pixels:
            return [sig.DEFAULT]
        kind = self.repository.resolve(ref).model.kind_of(sig.DEFAULT)
        return [sig.CLASSIFY_PIXELS if kind == "classify" else sig.FEATURES_PIXELS]

    async def infer(
        self,
        name: str,
        version: str,
        inputs: list[Tensor],
        outputs: list[str] | None = None,
        parameters: dict[str, Any] | None = None,
        deadline: float | None = None,
    ) -> InferResult:
        ref = model_ref(name, version)
        self.repository.resolve(ref)  # an unknown model is the more useful error, before input checks
        if len(inputs) != 1 or inputs[0].name not in (sig.IMAGES_INPUT, sig.PIXELS_INPUT):
            got = [t.name for t in inputs]
            raise InvalidRequest(
                "send one input, 'images' (BYTES [N], encoded images) or 'pixels' (UINT8 [N,H,W,3]); got "
                f"{got}"
            )
        tensor = inputs[0]
        expected = "BYTES" if tensor.name == sig.IMAGES_INPUT else "UINT8"
        if tensor.datatype != expected:
            raise InvalidRequest(f"input {tensor.name!r} must be {expected}, got {tensor.datatype}")
        signatures = self._signatures(ref, tensor.name, list(outputs or []), parameters or {})
        results = await asyncio.gather(
            *(
                self.inference.predict(ref, signature, {tensor.name: tensor.data}, deadline)
                for signature in signatures
            )
        )
        wanted = set(outputs or ())
        answer = []
        for result in results:
            for output, values in sorted(result.outputs.items()):
                if wanted and output not in wanted:
                    continue
                values = np.asarray(values, dtype=np.float32)
                answer.append(Tensor(output, "FP32", list(values.shape), values))
        missing = wanted - {t.name for t in answer}
        if missing:
            raise InvalidRequest(f"outputs {sorted(missing)} are not produced by signature {signatures[0]!r}")
        first = results[0]
        return InferResult(first.name, first.version, answer)
