"""What OpenTelemetry tracing costs a Classify call: the same server, rounds alternating tracing off / on.

"On" is the SDK with a BatchSpanProcessor, as with OTLP export, but into an exporter that drops the
spans, so the figure is the server's own cost (span creation, context propagation, the batcher's
per-request spans), not a collector's. c=1: sequential calls (latency); c=8: eight threads (throughput).

    python -m bench.tracing [--quick] [--input-size 96]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc

from bench.common import ensure_export, machine, median, percentiles, real_jpegs, write_results
from protos.imageserve.v1 import image_service_pb2 as pb
from protos.imageserve.v1 import image_service_pb2_grpc as pb_grpc
from server import tracing
from server.app import ModelServer
from server.settings import ServerSettings

MODEL = "mobilenet_v2_keras"


class _DroppingExporter:
    """A span exporter that accepts and forgets (the SDK's SpanExporter interface)."""

    def export(self, spans):
        from opentelemetry.sdk.trace.export import SpanExportResult

        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


def start_server(model_root: Path) -> tuple[ModelServer, asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    threading.Thread(target=loop.run_forever, daemon=True).start()
    settings = ServerSettings(
        model_root=model_root,
        host="127.0.0.1",
        port=0,
        metrics_port=None,
        state_dir=Path(tempfile.mkdtemp(prefix="bench-state-")),
    )

    async def build_and_start() -> ModelServer:
        server = ModelServer(settings)
        await server.start()
        await server.repository.initial_load_done.wait()
        return server

    return asyncio.run_coroutine_threadsafe(build_and_start(), loop).result(600), loop


def sequential(stub, request, seconds: float) -> list[float]:
    latencies, deadline = [], time.monotonic() + seconds
    while time.monotonic() < deadline:
        started = time.perf_counter()
        stub.Classify(request, timeout=30)
        latencies.append(time.perf_counter() - started)
    return latencies


def concurrent(stub, request, seconds: float, threads: int = 8) -> float:
    deadline = time.monotonic() + seconds

    def worker() -> int:
        count = 0
        while time.monotonic() < deadline:
            stub.Classify(request, timeout=30)
            count += 1
        return count

    started = time.monotonic()
    with ThreadPoolExecutor(threads) as pool:
        calls = sum(pool.map(lambda _: worker(), range(threads)))
    return calls / (time.monotonic() - started)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.tracing", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short rounds (figures are rough)")
    parser.add_argument("--input-size", type=int, default=96, help="model input size (default 96)")
    parser.add_argument("--rounds", type=int, help="off/on round pairs (default 4, quick 2)")
    args = parser.parse_args(argv)
    seconds, rounds = (3.0, args.rounds or 2) if args.quick else (10.0, args.rounds or 4)

    version_dir = ensure_export(MODEL, args.input_size)
    model_root = Path(tempfile.mkdtemp(prefix="bench-tracing-"))
    (model_root / MODEL).mkdir()
    (model_root / MODEL / "1").symlink_to(version_dir.resolve())
    server, loop = start_server(model_root)
    request = pb.ClassifyRequest(model=pb.ModelSpec(name=MODEL), images=[real_jpegs()[0]])
    figures: dict[str, dict[str, list[float]]] = {"off": {}, "on": {}}
    try:
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = pb_grpc.ImageModelServiceStub(channel)
            sequential(stub, request, 2.0)  # warm-up
            for _ in range(rounds):
                for mode in ("off", "on"):
                    if mode == "on":
                        tracing.enable(_DroppingExporter())
                    latencies = sequential(stub, request, seconds)
                    throughput = concurrent(stub, request, seconds)
                    tracing.disable()
                    for key, value in {**percentiles(latencies), "c8_calls_per_s": throughput}.items():
                        figures[mode].setdefault(key, []).append(value)
    finally:
        asyncio.run_coroutine_threadsafe(server.stop(1.0), loop).result(120)
        loop.call_soon_threadsafe(loop.stop)
    summary = {mode: {key: median(values) for key, values in keys.items()} for mode, keys in figures.items()}
    print(
        f"{'':8}{'c=1 p50 ms':>12}{'c=1 p95 ms':>12}{'c=8 calls/s':>13}   (median of {rounds} rounds of "
        f"{seconds:.0f} s)"
    )
    for mode in ("off", "on"):
        s = summary[mode]
        print(f"{mode:8}{s['p50_ms']:12.2f}{s['p95_ms']:12.2f}{s['c8_calls_per_s']:13.1f}")
    ratio = {key: summary["on"][key] / summary["off"][key] for key in ("p50_ms", "p95_ms", "c8_calls_per_s")}
    print(f"{'on/off':8}{ratio['p50_ms']:12.3f}{ratio['p95_ms']:12.3f}{ratio['c8_calls_per_s']:13.3f}")
    path = write_results(
        "tracing",
        {
            "machine": machine(),
            "input_size": args.input_size,
            "seconds": seconds,
            "rounds": figures,
            "median": summary,
            "on_over_off": ratio,
        },
    )
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
