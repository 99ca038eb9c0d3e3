"""Benchmark servers that can also time their own model, in their own process.

    python -m bench.hosted MODEL [python -m server flags ...]
    python -m bench.hosted --bare MODEL_DIR

The first runs the server as ``python -m server`` does (same settings, same
:class:`server.app.ModelServer`, its event loop on the main thread) and waits until MODEL is
AVAILABLE. The second is the floor a Python gRPC server can reach here: a bare ``grpc.aio`` handler,
encoded image bytes in, the same ``classify`` signature run in a thread, the top class index out (no
protobuf, no checks, no batching); the benchmark compares the real server with it.

Both then print one JSON line ``{"ready": true, "port": N}`` on stdout and answer
:mod:`bench.inprocess` commands read from stdin by calling the signature they serve directly, from a
thread of their own. The benchmark sends no requests while it waits for such an answer, so the server
is idle meanwhile. End of stdin (or SIGTERM) stops the process.

Why: identical processes here run the same model up to ~6 ms apart (see :mod:`bench.inprocess`), so
the serving figures are compared with the model's speed measured in the same process, on the same
loaded signature: "the best the model itself can do in the same process".
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

#: The bare server's one method (request: encoded image bytes; response: the top class, 4 bytes).
BARE_SERVICE, BARE_METHOD = "bench.Bare", "Classify"


async def answer_until_stopped(classify: Any, port: int, metrics_port: int | None = None) -> None:
    """Warm up, say ready, then answer timing commands until stdin ends or a signal arrives."""
    from bench.common import real_jpegs
    from bench.inprocess import InProcess, serve_commands

    model = InProcess(classify, real_jpegs())
    model.single_latencies(5)  # warm up on the photos before answering "ready"
    sys.stdout.write(json.dumps({"ready": True, "port": port, "metrics_port": metrics_port}) + "\n")
    sys.stdout.flush()
    loop = asyncio.get_running_loop()
    commands = loop.create_future()

    def answer_commands() -> None:  # a daemon thread: a SIGTERM must not wait for stdin
        try:
            serve_commands(model, sys.stdin, sys.stdout)
        except BaseException as exc:  # noqa: BLE001 - handed to the event loop, raised there
            loop.call_soon_threadsafe(commands.set_exception, exc)
        else:
            loop.call_soon_threadsafe(commands.set_result, None)

    threading.Thread(target=answer_commands, name="bench-commands", daemon=True).start()
    terminated = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, terminated.set)
    stop = asyncio.ensure_future(terminated.wait())
    await asyncio.wait({commands, stop}, return_when=asyncio.FIRST_COMPLETED)
    stop.cancel()
    if commands.done():
        commands.result()  # a failed command is an error of this process, not a silent stop


async def host(model_name: str, server_flags: list[str]) -> None:
    from server.app import ModelServer
    from server.served import ModelRef
    from server.settings import load_settings

    server = ModelServer(load_settings(server_flags))
    port = await server.start()
    try:
        await server.repository.initial_load_done.wait()
        served = server.repository.resolve(ModelRef(model_name))  # raises if the model did not load
        await answer_until_stopped(served.model.function("classify"), port, server.metrics.port)
    finally:
        await server.stop()


async def host_bare(model_dir: Path) -> None:
    import grpc
    import tensorflow as tf

    classify = tf.saved_model.load(str(model_dir)).signatures["classify"]
    executor = ThreadPoolExecutor(1, thread_name_prefix="model")

    def run(image: bytes) -> bytes:
        probabilities = classify(images=tf.constant([image]))["probabilities"].numpy()
        return int(probabilities[0].argmax()).to_bytes(4, "little")

    async def handle(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        return await asyncio.get_running_loop().run_in_executor(executor, run, request)

    server = grpc.aio.server()
    handlers = {BARE_METHOD: grpc.unary_unary_rpc_method_handler(handle)}  # no (de)serializers: bytes
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(BARE_SERVICE, handlers),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        await answer_until_stopped(classify, port)
    finally:
        await server.stop(1)
        executor.shutdown(wait=False)


USAGE = "usage: python -m bench.hosted MODEL [python -m server flags ...] | --bare MODEL_DIR"


def main(argv: list[str] | None = None) -> int:
    from server.logs import configure_logging
    from server.settings import SettingsError, load_settings

    args = sys.argv[1:] if argv is None else argv
    if len(args) == 2 and args[0] == "--bare":
        asyncio.run(host_bare(Path(args[1])))
        return 0
    if not args or args[0].startswith("-"):
        print(USAGE, file=sys.stderr)
        return 2
    try:
        settings = load_settings(args[1:])
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level, settings.log_format)  # to stderr: stdout carries the answers
    asyncio.run(host(args[0], args[1:]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
