"""A benchmark server: ``python -m server`` that can also time its own model, in its own process.

    python -m bench.hosted MODEL [python -m server flags ...]

Runs the server as ``python -m server`` does (same settings, same :class:`server.app.ModelServer`,
its event loop on the main thread), waits until MODEL is AVAILABLE, prints one JSON line
``{"ready": true, "port": N}`` on stdout, then answers :mod:`bench.inprocess` commands read from
stdin by calling the served version's ``classify`` signature directly, from a thread of its own.
The benchmark sends no requests while it waits for such an answer, so the server is idle meanwhile.
End of stdin (or SIGTERM) stops the server.

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

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


async def host(model_name: str, server_flags: list[str]) -> None:
    from bench.common import real_jpegs
    from bench.inprocess import InProcess, serve_commands
    from server.app import ModelServer
    from server.repository import ModelRef
    from server.settings import load_settings

    server = ModelServer(load_settings(server_flags))
    port = await server.start()
    try:
        await server.repository.initial_load_done.wait()
        served = server.repository.resolve(ModelRef(model_name))  # raises if the model did not load
        model = InProcess(served.model.function("classify"), real_jpegs())
        model.single_latencies(5)  # warm up on the photos before answering "ready"
        sys.stdout.write(json.dumps({"ready": True, "port": port}) + "\n")
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
    finally:
        await server.stop()


def main(argv: list[str] | None = None) -> int:
    from server.logs import configure_logging
    from server.settings import SettingsError, load_settings

    args = sys.argv[1:] if argv is None else argv
    if not args or args[0].startswith("-"):
        print("usage: python -m bench.hosted MODEL [python -m server flags ...]", file=sys.stderr)
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
