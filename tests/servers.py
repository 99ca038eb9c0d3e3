"""Real servers for tests: in-process on a free port (its own event-loop thread), or a subprocess."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import grpc

from server.settings import ServerSettings
from storage.local import copy_version  # noqa: F401 - the tests' way to place a version
from storage.roots import as_root

#: Every port a test server opens is bound by the server itself (0: a free one, read back from the server).
#: Networks run on TensorFlow: choosing a runtime converts an ONNX twin at load (seconds to a minute),
#: which only the runtime tests are about (and the tests of the defaults a user gets).
TEST_DEFAULTS = dict(
    host="127.0.0.1",
    port=0,
    metrics_port=None,
    poll_interval_s=0.2,
    shutdown_grace_s=2.0,
    runtime="tensorflow",
)


def test_settings(model_root: Path, **overrides: Any) -> ServerSettings:
    """Settings for a test server: loopback, a free port, metrics off, fast polling, a fresh state dir,
    networks on TensorFlow.

    Ask for REST or metrics with ``rest_port=0`` / ``metrics_port=0`` and read the bound ports from
    :attr:`InProcessServer.rest_address` / :attr:`InProcessServer.metrics_url`."""
    if "state_dir" not in overrides:
        overrides["state_dir"] = Path(tempfile.mkdtemp(prefix="imageserve-state-"))
    return ServerSettings(model_root=as_root(model_root), **{**TEST_DEFAULTS, **overrides})


test_settings.__test__ = False  # a helper, not a test (its name starts with test_)


class InProcessServer:
    """A :class:`server.app.ModelServer` running on its own event loop in a background thread."""

    def __init__(self, settings: ServerSettings, loader: Any = None) -> None:
        """``loader``: how versions load; by default fake versions load the fake backend and the
        others TensorFlow (:func:`tests.fake_backend.test_loader`)."""
        from server.app import ModelServer
        from tests.fake_backend import test_loader

        loader = loader or test_loader

        self.settings = settings
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="test-server", daemon=True)
        self._thread.start()
        self.server: ModelServer = self.call(self._build(settings, loader))

    @staticmethod
    async def _build(settings: ServerSettings, loader: Any):
        from server.app import ModelServer

        return ModelServer(settings, loader)

    def call(self, coroutine, timeout: float = 300) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def start(self, wait_loaded: bool = True, timeout: float = 300) -> InProcessServer:
        self.call(self.server.start(), timeout)
        if wait_loaded:
            self.call(self.server.repository.initial_load_done.wait(), timeout)
        return self

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.server.port}"

    @property
    def rest_address(self) -> str:
        """``http://127.0.0.1:<port>`` of the REST door (started with ``rest_port=0``)."""
        return f"http://127.0.0.1:{self.server.rest.port}"

    @property
    def metrics_url(self) -> str:
        """``http://127.0.0.1:<port>/metrics`` (started with ``metrics_port=0``)."""
        return f"http://127.0.0.1:{self.server.metrics.port}/metrics"

    def reconcile(self) -> None:
        """Run one poll of the model root now (instead of waiting for the next one)."""
        self.call(self.server.repository.reconcile())

    def stop(self, grace_s: float = 1.0) -> None:
        try:
            self.call(self.server.stop(grace_s), timeout=120)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(timeout=30)


def free_port() -> int:
    """A TCP port that was free a moment ago, for a client to find NOTHING listening there.

    Never for a server a test starts: something else may take the port before the server binds it
    (seen in CI). Servers bind port 0 and report the port they got."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class HeldPort:
    """A loopback port the test holds bound but not listening, so that clients are refused there and
    no other process can take it; :meth:`release` frees it right before a server binds it.

    For the one test whose subject is a client calling BEFORE its server starts (the server's port
    must be known first). The gap between release and bind is the server's next statement, not the
    seconds a port picked with :func:`free_port` stays unguarded."""

    def __init__(self) -> None:
        import socket

        self._socket = socket.socket()
        self._socket.bind(("127.0.0.1", 0))
        self.port: int = self._socket.getsockname()[1]

    def release(self) -> int:
        self._socket.close()
        return self.port


def wait_for(predicate, timeout: float = 60.0, interval: float = 0.05, what: str = "condition") -> Any:
    """Poll ``predicate`` until it returns a truthy value, with a deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def loopback_args(model_root: Path, *flags: str) -> list[str]:
    """``python -m server`` flags for a test: the model root, loopback, a free port, metrics off,
    networks on TensorFlow, then ``flags``."""
    return [
        "--model-root",
        str(model_root),
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        "--metrics-port",
        "off",
        "--runtime",
        "tensorflow",
        *flags,
    ]


class SubprocessServer:
    """``python -m server`` as a user runs it; the port is read from its log line."""

    LISTENING = re.compile(r"listening on \S+:(\d+)")
    REST = re.compile(r"REST \(.*\) on \S+:(\d+)")
    METRICS = re.compile(r"metrics on http://\S+:(\d+)/metrics")

    def __init__(self, args: list[str], env: dict[str, str] | None = None, cwd: Path | None = None) -> None:
        self.args = args
        self.env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", **(env or {})}
        self.cwd = cwd
        self.process: subprocess.Popen | None = None
        self.port: int | None = None
        self.rest_port: int | None = None  # with --rest-port 0, from the server's log
        self.metrics_port: int | None = None  # with --metrics-port 0, from the server's log
        self.log_lines: list[str] = []
        self._reader: threading.Thread | None = None
        self._port_found = threading.Event()

    def start(self, timeout: float = 120) -> SubprocessServer:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "server", *self.args],
            stderr=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            text=True,
            env=self.env,
            cwd=self.cwd,
        )
        self._reader = threading.Thread(target=self._read_log, daemon=True)
        self._reader.start()
        if not self._port_found.wait(timeout):
            self.kill()
            raise RuntimeError("server did not start:\n" + "\n".join(self.log_lines[-30:]))
        return self

    def _read_log(self) -> None:
        for line in self.process.stderr:
            self.log_lines.append(line.rstrip("\n"))
            for pattern, attribute in ((self.REST, "rest_port"), (self.METRICS, "metrics_port")):
                if (found := pattern.search(line)) and getattr(self, attribute) is None:
                    setattr(self, attribute, int(found.group(1)))
            # NOTE: REST and metrics are logged before "listening on": all ports are known when it is.
            match = self.LISTENING.search(line)
            if match and self.port is None:
                self.port = int(match.group(1))
                self._port_found.set()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def log_text(self) -> str:
        return "\n".join(self.log_lines)

    def wait_serving(self, timeout: float = 180) -> None:
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        with grpc.insecure_channel(self.address) as channel:
            stub = health_pb2_grpc.HealthStub(channel)

            def serving() -> bool:
                try:
                    status = stub.Check(health_pb2.HealthCheckRequest(), timeout=2).status
                except grpc.RpcError:
                    return False
                return status == health_pb2.HealthCheckResponse.SERVING

            wait_for(serving, timeout, 0.2, "the server to be SERVING")

    def kill(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait(30)

    def terminate(self, timeout: float = 60) -> int:
        self.process.terminate()
        return self.process.wait(timeout)


def replace_settings(settings: ServerSettings, **changes: Any) -> ServerSettings:
    return dataclasses.replace(settings, **changes)
