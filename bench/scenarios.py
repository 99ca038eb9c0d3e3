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

from bench.common import ensure_export
from bench.load import CONCURRENCY, c1_latency, measure_level
from bench.processes import BareServer, HostedServer, Server, copy_version


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
        copy_version(ensure_export(name, 224, root=Path(__file__).parent / "models-224"), root, name, 1)
    try:
        server = Server(root, *flags)
        server.stop()
        return {
            "models": ["mobilenet_v2_keras@224", "vgg16@224 (with its 138M-parameter head)"],
            "cold_start_s": server.cold_start_s,
        }
    finally:
        shutil.rmtree(root, ignore_errors=True)
