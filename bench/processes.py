"""The server processes the serving benchmark starts, and what it reads from them.

- :class:`HostedServer`: ``python -m bench.hosted MODEL ...``, the real server that also times its
  own model in-process on request (the load levels and the c=1 latency);
- :class:`BareServer`: ``python -m bench.hosted --bare``, the floor a bare ``grpc.aio`` handler reaches;
- :class:`Server`: ``python -m server`` as a user runs it (hot swaps, cold start, the defaults' RSS).

NOTE: this machine's speed drifts by 20% within seconds and more over minutes (shared CPUs), so every
server figure is compared with in-process figures measured right next to it: the limit in windows
alternating with the served load, and single-image latency in rounds alternating with the c=1 server
requests. And identical processes run the model at different speeds (see bench/inprocess.py), so the
in-process figures are measured inside the server process itself (bench/hosted.py), on the signature
it serves.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent


def rss_mib(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    kib = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:"))
    return kib / 1024


def metrics_seconds_spent(metrics_port: int) -> dict[str, float]:
    """Totals from a server's own metrics: seconds in Classify calls and in model calls, and counts."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    wanted = {
        "imageserve_request_duration_seconds_sum": "request_s",
        "imageserve_request_duration_seconds_count": "requests",
        "imageserve_model_duration_seconds_sum": "model_s",
        "imageserve_model_duration_seconds_count": "model_calls",
    }
    totals = dict.fromkeys(wanted.values(), 0.0)
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as response:
        text = response.read().decode()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name in wanted and sample.labels.get("rpc", "Classify") == "Classify":
                totals[wanted[sample.name]] += sample.value
    return totals


def server_flags(root: Path, state_dir: str, *flags: str) -> list[str]:
    """Loopback; the gRPC and metrics ports are free ones the server binds and reports."""
    return [
        "--model-root", str(root), "--host", "127.0.0.1", "--port", "0", "--metrics-port", "0",
        "--poll-interval-s", "0.5", "--state-dir", state_dir, *flags,
    ]  # fmt: skip


def _env() -> dict[str, str]:
    return {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(REPO_ROOT)}


class HostedServer:
    """A server process (:mod:`bench.hosted`) serving ``model`` that also times the model in-process."""

    kind = "server"

    def __init__(self, root: Path, model: str, *flags: str) -> None:
        self.model = model
        self.state_dir = tempfile.mkdtemp(prefix="bench-state-")
        try:
            self._spawn([model, *server_flags(root, self.state_dir, *flags)])
        except BaseException:  # never reaches the caller's clean-up: tidy up here
            shutil.rmtree(self.state_dir, ignore_errors=True)
            raise

    def _spawn(self, args: list[str]) -> None:
        # Kept open until stop(): the process writes its log there.
        log = tempfile.NamedTemporaryFile(prefix="bench-server-", suffix=".log", delete=False)  # noqa: SIM115
        self.log = log
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bench.hosted", *args],
            cwd=REPO_ROOT, env=_env(), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log,
            text=True,
        )  # fmt: skip
        ready = self._answer()
        self.port, self.metrics_port = ready["port"], ready.get("metrics_port")
        #: The limits' configurations (threads calling at once, batch size), found by :meth:`sweep`.
        self.limit_configs = {
            "limit": {"callers": 1, "batch": 1},
            "concurrent_limit": {"callers": 1, "batch": 1},
        }

    def open_caller(self) -> Any:
        from bench.load import ImageServeCaller

        return ImageServeCaller(self.address, self.model)

    def _answer(self) -> Any:
        line = self.process.stdout.readline()
        if not line:
            log = Path(self.log.name).read_text(errors="replace").splitlines()[-30:]
            raise RuntimeError(
                f"benchmark server {self.process.pid} exited with {self.process.wait()}:\n" + "\n".join(log)
            )
        return json.loads(line)

    def _ask(self, **command: Any) -> Any:
        self.process.stdin.write(json.dumps(command) + "\n")
        self.process.stdin.flush()
        return self._answer()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def sweep(self, seconds: float) -> list[dict]:
        """In-process images/s by threads calling at once and batch size; sets :attr:`limit_configs`:
        the best batch size from one thread (the limit) and the best of all (the concurrent limit)."""
        sweep = self._ask(op="sweep", seconds=seconds)

        def best(entries: list[dict]) -> dict:
            entry = max(entries, key=lambda entry: entry["images_per_s"])
            return {"callers": entry["callers"], "batch": entry["batch"]}

        self.limit_configs = {
            "limit": best([entry for entry in sweep if entry["callers"] == 1]),
            "concurrent_limit": best(sweep),
        }
        return sweep

    def rate(self, seconds: float, limit: str = "limit") -> float:
        """In-process images/s at a limit's configuration (``limit`` or ``concurrent_limit``)."""
        return self._ask(op="rate", **self.limit_configs[limit], seconds=seconds)

    def single_latencies(self, count: int) -> list[float]:
        """``count`` in-process single-image latencies."""
        return self._ask(op="single", count=count)

    def seconds_spent(self) -> dict[str, float]:
        return metrics_seconds_spent(self.metrics_port)

    def rss_mib(self) -> float:
        return rss_mib(self.process.pid)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.stdin.close()  # end of commands: the server stops
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(30)
        self.log.close()
        os.unlink(self.log.name)
        if self.state_dir:
            shutil.rmtree(self.state_dir, ignore_errors=True)


class BareServer(HostedServer):
    """The floor (``python -m bench.hosted --bare``): a bare ``grpc.aio`` handler running the same
    signature in a thread, bytes in and out, timing its model the same way."""

    kind = "bare"

    def __init__(self, model_dir: Path) -> None:
        self.metrics_port = None
        self.state_dir = None
        self._spawn(["--bare", str(model_dir)])

    def open_caller(self) -> Any:
        from bench.load import BareCaller

        return BareCaller(self.address)

    def seconds_spent(self) -> dict[str, float]:
        return {}


class Server:
    """``python -m server`` as a user runs it; the port is read from its "listening on" log line."""

    LISTENING = re.compile(r"listening on \S+:(\d+)")
    METRICS = re.compile(r"metrics on http://\S+:(\d+)/metrics")

    def __init__(self, root: Path, *flags: str, timeout: float = 600, serving: bool = True) -> None:
        """Started and SERVING (health); with ``serving=False`` only listening (an empty model root
        never turns SERVING)."""
        self.root = root
        self.metrics_port: int | None = None  # read from the log (logged before "listening on")
        self.state_dir = tempfile.mkdtemp(prefix="bench-state-")
        self.log_lines: list[str] = []
        self.port: int | None = None
        self._listening = threading.Event()
        self.started = time.monotonic()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "server", *server_flags(root, self.state_dir, *flags)],
            cwd=REPO_ROOT, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        threading.Thread(target=self._read_log, name="bench-server-log", daemon=True).start()
        try:
            self._wait_serving(timeout, serving)
        except BaseException:  # never reaches the caller's clean-up: tidy up here
            self.stop()
            raise
        self.cold_start_s = time.monotonic() - self.started

    def _read_log(self) -> None:  # also keeps the pipe drained, so the server never blocks on its log
        for line in self.process.stderr:
            self.log_lines.append(line.rstrip("\n"))
            if (metrics := self.METRICS.search(line)) and self.metrics_port is None:
                self.metrics_port = int(metrics.group(1))
            match = self.LISTENING.search(line)
            if match and self.port is None:
                self.port = int(match.group(1))
                self._listening.set()

    def _fail(self, what: str) -> RuntimeError:
        return RuntimeError(f"python -m server {what}; its log ends:\n" + "\n".join(self.log_lines[-30:]))

    def _wait_serving(self, timeout: float, serving: bool = True) -> None:
        import grpc
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        deadline = time.monotonic() + timeout
        while not self._listening.wait(0.2):
            if self.process.poll() is not None:
                raise self._fail(f"exited with {self.process.returncode} before listening")
            if time.monotonic() > deadline:
                raise self._fail(f"did not listen within {timeout:.0f} s")
        if not serving:
            return
        with grpc.insecure_channel(self.address) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            while True:
                try:
                    status = stub.Check(health_pb2.HealthCheckRequest(), timeout=2).status
                    if status == health_pb2.HealthCheckResponse.SERVING:
                        return
                except grpc.RpcError:
                    pass
                if self.process.poll() is not None:
                    raise self._fail(f"exited with {self.process.returncode} before SERVING")
                if time.monotonic() > deadline:
                    raise self._fail(f"was not SERVING within {timeout:.0f} s")
                time.sleep(0.2)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def rss_mib(self) -> float:
        return rss_mib(self.process.pid)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(30)
        shutil.rmtree(self.state_dir, ignore_errors=True)
