"""Serving benchmark: how close does the server get to the model's own speed?

One command, one process tree, real JPEG photos, per model (MobileNetV2 at 224x224 and VGG16 at a
smaller size, random weights: the network is offline here, and speed does not depend on the weights):

1. limit: the SavedModel ``classify`` signature called in-process at its best batch size (from a
   sweep of 1..32), as the issue defines it; and, stricter, the **concurrent limit**: the best over
   1, 2 or 4 threads calling at once x batch sizes (concurrent calls keep both cores busier than one
   big call: for MobileNetV2 ~1.4x the one-thread limit here). Both are measured in windows
   alternating with each load level's windows of served load (the machine's speed drifts within
   seconds), inside the server process itself, on the signature it serves (:mod:`bench.hosted`;
   identical processes differ in speed here, see :mod:`bench.inprocess`);
2. the server through the real Python client (:class:`client.AsyncModelClient`) over loopback at
   concurrency 1, 4, 16 and 64, one image per request: images/s, p50/p95/p99 latency, errors;
   concurrency-1 latency is also measured against ``--processes`` server processes, each in rounds
   alternating with its own in-process single-image calls, and in the same rounds against as many
   bare ``grpc.aio`` servers running the same signature (the floor a Python gRPC server reaches here);
3. the same server with batching off, as the baseline;
4. the server again with ``--runtime onnxruntime`` (the network on its ONNX twin), whose in-process
   figures are ONNX Runtime's (same decode + network, best threads x batch), and the issue 20 ratios
   against the TensorFlow figures of steps 1-2 (:mod:`bench.runtimes`), plus fine-tuning's feature
   extraction on both runtimes. Steps 1-3 run with ``--runtime tensorflow``.

Then: server RSS after warm-up and after 20 hot swaps under load, and the cold start (process start ->
SERVING) with the default models' offline stand-ins. Prints a table with the ratios server/limit and
batched/unbatched, checks the targets and writes JSON under bench/results/.

    python -m bench.serving              # everything (~40 minutes on 2 cores)
    python -m bench.serving --quick      # shorter runs, for a smoke test
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from bench import runtimes  # noqa: E402
from bench.common import ensure_export, machine, median, percentiles, real_jpegs, write_results  # noqa: E402

CONCURRENCY = (1, 4, 16, 64)
MODELS = {"mobilenet_v2_keras": 224, "vgg16": 112}
REPO_ROOT = Path(__file__).resolve().parent.parent


# --- the servers measured, each timing its own model -------------------------------------------------
#
# NOTE: this machine's speed drifts by 20% within seconds and more over minutes (shared CPUs), so
# every server figure is compared with in-process figures measured right next to it: the limit in
# windows alternating with the served load, and single-image latency in rounds alternating with the
# c=1 server requests. And identical processes run the model at different speeds (see
# bench/inprocess.py), so the in-process figures are measured inside the server process itself
# (bench/hosted.py), on the signature it serves.


def metrics_seconds_spent(metrics_port: int) -> dict[str, float]:
    """Totals from a server's own metrics: seconds in Classify calls and in model calls, and counts."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    wanted = {"imageserve_request_duration_seconds_sum": "request_s",
              "imageserve_request_duration_seconds_count": "requests",
              "imageserve_model_duration_seconds_sum": "model_s",
              "imageserve_model_duration_seconds_count": "model_calls"}
    totals = dict.fromkeys(wanted.values(), 0.0)
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as response:
        text = response.read().decode()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name in wanted and sample.labels.get("rpc", "Classify") == "Classify":
                totals[wanted[sample.name]] += sample.value
    return totals


def rss_mib(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    kib = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:"))
    return kib / 1024


def server_flags(root: Path, metrics_port: int, state_dir: str, *flags: str) -> list[str]:
    return ["--model-root", str(root), "--host", "127.0.0.1", "--port", "0", "--metrics-port", str(metrics_port),
            "--poll-interval-s", "0.5", "--state-dir", state_dir, *flags]


class HostedServer:
    """A server process (:mod:`bench.hosted`) serving ``model`` that also times the model in-process."""

    kind = "server"

    def __init__(self, root: Path, model: str, *flags: str) -> None:
        from tests.servers import free_port

        self.model = model
        self.metrics_port = free_port()
        self.state_dir = tempfile.mkdtemp(prefix="bench-state-")
        try:
            self._spawn([model, *server_flags(root, self.metrics_port, self.state_dir, *flags)])
        except BaseException:  # never reaches the caller's clean-up: tidy up here
            shutil.rmtree(self.state_dir, ignore_errors=True)
            raise

    def _spawn(self, args: list[str]) -> None:
        self.log = tempfile.NamedTemporaryFile(prefix="bench-server-", suffix=".log", delete=False)
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(REPO_ROOT)}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bench.hosted", *args],
            cwd=REPO_ROOT, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log, text=True,
        )
        self.port = self._answer()["port"]
        #: The limits' configurations (threads calling at once, batch size), found by :meth:`sweep`.
        self.limit_configs = {"limit": {"callers": 1, "batch": 1}, "concurrent_limit": {"callers": 1, "batch": 1}}

    def open_caller(self) -> ImageServeCaller:
        return ImageServeCaller(self.address, self.model)

    def _answer(self):
        line = self.process.stdout.readline()
        if not line:
            log = Path(self.log.name).read_text(errors="replace").splitlines()[-30:]
            raise RuntimeError(f"benchmark server {self.process.pid} exited with {self.process.wait()}:\n"
                               + "\n".join(log))
        return json.loads(line)

    def _ask(self, **command):
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

        self.limit_configs = {"limit": best([entry for entry in sweep if entry["callers"] == 1]),
                              "concurrent_limit": best(sweep)}
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

    def open_caller(self) -> BareCaller:
        return BareCaller(self.address)

    def seconds_spent(self) -> dict[str, float]:
        return {}


class ImageServeCaller:
    """One image per call through the real client, which stays connected (as a backend's would)."""

    def __init__(self, address: str, model: str) -> None:
        from client import AsyncModelClient

        self._client = AsyncModelClient(address, timeout=60, retries=0)
        self._model = model

    async def classify(self, photo: bytes) -> None:
        await self._client.classify(photo, model=self._model, top_k=1)

    async def close(self) -> None:
        await self._client.close()


class BareCaller:
    """One image per call to the bare server: a raw ``grpc.aio`` channel, bytes in and out."""

    def __init__(self, address: str) -> None:
        import grpc

        from bench.hosted import BARE_METHOD, BARE_SERVICE

        self._channel = grpc.aio.insecure_channel(address)
        self._classify = self._channel.unary_unary(f"/{BARE_SERVICE}/{BARE_METHOD}")

    async def classify(self, photo: bytes) -> None:
        await self._classify(photo, timeout=60)

    async def close(self) -> None:
        await self._channel.close()


class Server:
    """``python -m server`` as a user runs it (for the hot swaps and the cold start)."""

    def __init__(self, root: Path, *flags: str) -> None:
        from tests.servers import SubprocessServer, free_port

        self.root = root
        self.metrics_port = free_port()
        self.state_dir = tempfile.mkdtemp(prefix="bench-state-")
        self.started = time.monotonic()
        try:
            self.process = SubprocessServer(server_flags(root, self.metrics_port, self.state_dir, *flags)).start(timeout=300)
            self.process.wait_serving(timeout=600)
        except BaseException:  # never reaches the caller's clean-up: tidy up here
            shutil.rmtree(self.state_dir, ignore_errors=True)
            raise
        self.cold_start_s = time.monotonic() - self.started

    @property
    def address(self) -> str:
        return self.process.address

    def rss_mib(self) -> float:
        return rss_mib(self.process.process.pid)

    def stop(self) -> None:
        self.process.terminate(60)
        shutil.rmtree(self.state_dir, ignore_errors=True)


# --- the server through the client -------------------------------------------------------------------


#: Each load level alternates this many windows of served load with windows of in-process calls.
LEVEL_WINDOWS = 4


async def _load_window(caller, photos: list[bytes], concurrency: int, seconds: float,
                       latencies: list[float], errors: list[str]) -> int:
    """``concurrency`` callers, one image per request; counts the answers that arrive within a window
    of ``seconds``, then drains. The window opens once the pipeline is full (``concurrency`` answers
    in) plus a random delay of up to the time that took: with batching, answers arrive in bursts, and
    a window opening on an answer would always start at the same point of the burst cycle and count
    the same partial burst every time (a bias, not noise); at a random phase the count is unbiased."""
    from client import ImageServeError

    began = time.monotonic()
    completed, counted = 0, 0
    window_start: float | None = None
    window_end: float | None = None

    async def keep_calling(index: int) -> None:
        nonlocal completed, counted, window_start, window_end
        i = index
        while window_end is None or time.monotonic() < window_end:
            started = time.monotonic()
            try:
                await caller.classify(photos[i % len(photos)])
                ok = True
            except ImageServeError as exc:
                errors.append(f"{exc.code}: {exc.details}")
                ok = False
            finished = time.monotonic()
            completed += 1  # answers and errors alike: a failing server must not keep the window from ending
            if window_end is None:
                if completed >= concurrency:
                    window_start = finished + random.uniform(0.0, finished - began)
                    window_end = window_start + seconds
            elif ok and window_start < finished <= window_end:
                counted += 1
                latencies.append(finished - started)
            i += concurrency

    await asyncio.gather(*(keep_calling(i) for i in range(concurrency)))
    return counted


async def measure_level(server: HostedServer, photos: list[bytes], concurrency: int, seconds: float) -> dict:
    """One load level, interleaved with the limits: LEVEL_WINDOWS windows of served load (seconds in
    all, steady state only) alternate with in-process windows of the same length in the same process
    (one of each limit before the first and after each), so that the machine's drift (20% within
    seconds here) hits both sides alike. Throughput is over the served windows; each limit is the
    mean of its in-process windows."""
    window_s = max(seconds / LEVEL_WINDOWS, 1.0)
    latencies: list[float] = []
    errors: list[str] = []
    counted = 0
    limits: dict[str, list[float]] = {"limit": [], "concurrent_limit": []}

    async def measure_limits() -> None:
        for name, values in limits.items():
            values.append(await asyncio.to_thread(server.rate, window_s, name))

    caller = server.open_caller()
    try:
        await served_latencies(caller, photos, 2 * concurrency)  # warm the connection and the batcher
        await measure_limits()
        for _ in range(LEVEL_WINDOWS):
            counted += await _load_window(caller, photos, concurrency, window_s, latencies, errors)
            await measure_limits()
    finally:
        await caller.close()
    images_per_s = counted / (window_s * LEVEL_WINDOWS)
    level = {"concurrency": concurrency, "images_per_s": images_per_s, "errors": len(errors),
             "error_samples": errors[:3], **percentiles(latencies)}
    for name, values in limits.items():  # limit_images_per_s, limit_by_window, ratio_to_limit; concurrent_limit_...
        mean = sum(values) / len(values)
        level.update({f"{name}_images_per_s": mean, f"{name}_by_window": values, f"ratio_to_{name}": images_per_s / mean})
    return level


async def served_latencies(caller, photos: list[bytes], count: int) -> list[float]:
    latencies = []
    for i in range(count):
        started = time.monotonic()
        await caller.classify(photos[i % len(photos)])
        latencies.append(time.monotonic() - started)
    return latencies


C1_ROUNDS, C1_PER_ROUND = 10, 20


async def c1_latency(servers: list[HostedServer], photos: list[bytes]) -> dict:
    """c=1 latency against in-process single-image latency in the same process, in rounds: each round,
    every server process makes C1_PER_ROUND single-image calls in-process and answers C1_PER_ROUND
    requests from a caller that stays connected, one right after the other (which goes first
    alternates by round). A round's difference, per kind of server (this server, the bare floor), is
    the mean over its processes of served median minus in-process median; the overhead is the median
    of the rounds' differences (the machine's speed drifts between rounds). Also: where the served
    time goes, from the servers' own metrics."""
    direct: list[list[float]] = [[] for _ in servers]
    served: list[list[float]] = [[] for _ in servers]
    differences: dict[str, list[float]] = {server.kind: [] for server in servers}
    spent: dict[str, float] = {}
    callers = [server.open_caller() for server in servers]
    try:
        for caller in callers:
            await served_latencies(caller, photos, 3)  # connect and warm up
        for round_number in range(C1_ROUNDS):
            round_differences: dict[str, list[float]] = {kind: [] for kind in differences}
            for server, caller, mine_direct, mine_served in zip(servers, callers, direct, served):
                if round_number % 2:
                    round_direct = await asyncio.to_thread(server.single_latencies, C1_PER_ROUND)
                before = server.seconds_spent()
                round_served = await served_latencies(caller, photos, C1_PER_ROUND)
                after = server.seconds_spent()
                if not round_number % 2:
                    round_direct = await asyncio.to_thread(server.single_latencies, C1_PER_ROUND)
                for key in after:
                    spent[key] = spent.get(key, 0.0) + after[key] - before[key]
                mine_direct += round_direct
                mine_served += round_served
                round_differences[server.kind].append(median(round_served) - median(round_direct))
            for kind, values in round_differences.items():
                differences[kind].append(1000 * sum(values) / len(values))
    finally:
        for caller in callers:
            await caller.close()

    def summary(kind: str) -> dict:
        mine = [i for i, server in enumerate(servers) if server.kind == kind]
        return {
            "in_process": percentiles([x for i in mine for x in direct[i]]),
            "served": percentiles([x for i in mine for x in served[i]]),
            "in_process_p50_by_process_ms": [1000 * median(direct[i]) for i in mine],
            "served_p50_by_process_ms": [1000 * median(served[i]) for i in mine],
            "overhead_ms": median(differences[kind]),
            "overhead_by_round_ms": differences[kind],
        }

    result = summary("server")
    all_served = [x for i, server in enumerate(servers) if server.kind == "server" for x in served[i]]
    model_call_ms = 1000 * spent["model_s"] / max(spent["model_calls"], 1)
    request_ms = 1000 * spent["request_s"] / max(spent["requests"], 1)
    result["breakdown_ms"] = {
        "model_call_in_server": model_call_ms,
        "server_outside_model_call": request_ms - model_call_ms,
        "client_and_transport": 1000 * sum(all_served) / len(all_served) - request_ms,
    }
    if "bare" in differences:
        result["bare_grpc_floor"] = summary("bare")
    return result


def measure_server(
    root: Path, model: str, photos: list[bytes], seconds: float, flags: list[str], c1_servers: int = 0,
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
        levels = [asyncio.run(measure_level(server, photos, concurrency, seconds)) for concurrency in CONCURRENCY]
        result.update(levels=levels, rss_mib=server.rss_mib(), limit_configs=server.limit_configs)
        return result
    finally:
        for server in servers:
            server.stop()


# --- RSS over hot swaps ------------------------------------------------------------------------------


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
                    answered.append((await client.classify(photos[i % len(photos)], model=model, top_k=1)).version)
                except Exception as exc:  # counted, not hidden: any error fails the target
                    errors.append(repr(exc))
                i += 1

        workers = [asyncio.ensure_future(load()) for _ in range(4)]
        await asyncio.sleep(5)  # warm-up under load
        rss_warm = server.rss_mib()
        from tests.servers import copy_version

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
    return {"swaps": swaps, "rss_warm_mib": rss_warm, "rss_after_swaps_mib": rss_after,
            "growth": rss_after / rss_warm - 1, "errors": len(errors), "requests": len(answered)}


def measure_swaps(model_path: Path, model: str, photos: list[bytes], swaps: int, flags: list[str]) -> dict:
    root = Path(tempfile.mkdtemp(prefix="bench-swaps-"))
    from tests.servers import copy_version

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
    from tests.servers import copy_version

    for name in ("mobilenet_v2_keras", "vgg16"):
        copy_version(ensure_export(name, 224, root=Path(__file__).parent / "models-224"), root, name, 1)
    try:
        server = Server(root, *flags)
        server.stop()
        return {"models": ["mobilenet_v2_keras@224", "vgg16@224 (with its 138M-parameter head)"],
                "cold_start_s": server.cold_start_s}
    finally:
        shutil.rmtree(root, ignore_errors=True)


# --- report ------------------------------------------------------------------------------------------


def report(results: dict) -> list[str]:
    failures = []
    for model, result in results["models"].items():
        sweep = result["in_process_sweep"]
        configs = result["batched"]["limit_configs"]
        print(f"\n== {model} at {result['input_size']}x{result['input_size']}: in-process images/s by batch size")
        for callers in sorted({entry["callers"] for entry in sweep}):
            print(f"   {callers} thread{'s' if callers > 1 else ''} calling: " + ", ".join(
                f"{entry['batch']}: {entry['images_per_s']:.1f}" for entry in sweep if entry["callers"] == callers))
        threads = configs["concurrent_limit"]["callers"]
        print(f"   limit: one thread, batch {configs['limit']['batch']}; concurrent limit: "
              f"{threads} thread{'s' if threads > 1 else ''}, batch {configs['concurrent_limit']['batch']}")
        print(f"   {'conc':>4} | {'limit':>6} {'c.lim':>6} | {'batched img/s':>13} {'p50':>7} {'p95':>7} {'p99':>7} "
              f"{'err':>4} {'/limit':>6} {'/c.lim':>6} | {'unbatched img/s':>15} {'p50':>7} {'p99':>7} {'err':>4} | {'b/unb':>6}")
        for on, off in zip(result["batched"]["levels"], result["unbatched"]["levels"]):
            print(f"   {on['concurrency']:>4} | {on['limit_images_per_s']:6.1f} {on['concurrent_limit_images_per_s']:6.1f} | "
                  f"{on['images_per_s']:13.1f} {on['p50_ms']:7.1f} {on['p95_ms']:7.1f} {on['p99_ms']:7.1f} {on['errors']:4d} "
                  f"{on['ratio_to_limit']:6.2f} {on['ratio_to_concurrent_limit']:6.2f} | {off['images_per_s']:15.1f} {off['p50_ms']:7.1f} "
                  f"{off['p99_ms']:7.1f} {off['errors']:4d} | {on['images_per_s'] / off['images_per_s'] if off['images_per_s'] else float('nan'):6.2f}")
            if on["errors"] or off["errors"]:
                failures.append(f"{model}: errors at concurrency {on['concurrency']}")
        c16 = next(level for level in result["batched"]["levels"] if level["concurrency"] == 16)
        latency = result["batched"]["c1_latency"]
        overhead = latency["overhead_ms"]
        parts = latency["breakdown_ms"]
        by_process = " / ".join(f"{ms:.1f}" for ms in latency["in_process_p50_by_process_ms"])
        by_server = " / ".join(f"{ms:.1f}" for ms in latency["served_p50_by_process_ms"])
        print(f"   c=1 p50: served {latency['served']['p50_ms']:.1f} ms (by server process: {by_server}), in-process "
              f"single image {latency['in_process']['p50_ms']:.1f} ms (same processes: {by_process})")
        print(f"   served minus in-process, median of {len(latency['overhead_by_round_ms'])} alternating rounds: "
              f"{overhead:+.1f} ms")
        floor = latency.get("bare_grpc_floor")
        if floor:
            floor_by_process = " / ".join(f"{a:.1f}-{b:.1f}" for a, b in zip(floor["served_p50_by_process_ms"],
                                                                        floor["in_process_p50_by_process_ms"]))
            print(f"   the floor, a bare grpc.aio handler running the same signature in a thread (bytes in and out; "
                  f"served-in-process by process {floor_by_process} ms): {floor['overhead_ms']:+.1f} ms, so this "
                  f"server's own share is {overhead - floor['overhead_ms']:+.1f} ms")
        print(f"   served call (mean): model call in the server {parts['model_call_in_server']:.1f} ms + server code "
              f"{parts['server_outside_model_call']:.1f} ms + client and loopback {parts['client_and_transport']:.1f} ms")
        for key, prefix, name in (("limit", "target", "server/limit"),
                                  ("concurrent_limit", "stricter,", "server/concurrent limit")):
            ratio = c16[f"ratio_to_{key}"]
            print(f"   {prefix} {name} at c=16 >= 0.90: {ratio:.2f} {'OK' if ratio >= 0.9 else 'MISSED'}")
            if ratio < 0.9:
                failures.append(f"{model}: {name} {ratio:.2f} < 0.90 at concurrency 16")
        print(f"   target c=1 p50 <= in-process single image + 3 ms: {overhead:+.1f} ms {'OK' if overhead <= 3 else 'MISSED'}")
        if overhead > 3:
            failures.append(f"{model}: c=1 p50 {overhead:.1f} ms over the in-process single-image latency")
    swaps = results.get("swaps")
    if swaps:
        print(f"\nRSS: {swaps['rss_warm_mib']:.0f} MiB after warm-up, {swaps['rss_after_swaps_mib']:.0f} MiB after "
              f"{swaps['swaps']} hot swaps under load ({swaps['growth']:+.1%}; target <= +15%), "
              f"{swaps['errors']} errors in {swaps['requests']} requests")
        if swaps["growth"] > 0.15 or swaps["errors"]:
            failures.append("RSS growth over hot swaps above 15% or errors during swaps")
    cold = results.get("cold_start")
    if cold:
        print(f"cold start (process start -> SERVING, {', '.join(cold['models'])}): {cold['cold_start_s']:.1f} s")
    return failures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.serving", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short runs (smoke test; figures are rough)")
    parser.add_argument("--seconds", type=float, help="seconds per load level (default 10, quick 3)")
    parser.add_argument("--swaps", type=int, help="hot swaps for the RSS check (default 20, quick 3)")
    parser.add_argument("--models", default=",".join(f"{k}:{v}" for k, v in MODELS.items()), help="name:size,...")
    parser.add_argument("--server-flag", action="append", default=[], help="extra flag for python -m server")
    parser.add_argument("--runtimes", default="tensorflow,onnxruntime",
                        help="tensorflow (steps 1-3) and/or onnxruntime (step 4), comma-separated")
    parser.add_argument("--processes", type=int, help="server processes, and as many bare-gRPC floor processes, for the c=1 latency (default 3, quick 2)")
    args = parser.parse_args(argv)
    seconds = args.seconds or (3.0 if args.quick else 10.0)
    swaps = args.swaps if args.swaps is not None else (3 if args.quick else 20)
    processes = args.processes or (2 if args.quick else 3)
    sys.path.insert(0, str(REPO_ROOT))
    photos = real_jpegs()
    results: dict = {"machine": machine(), "seconds_per_level": seconds, "server_flags": args.server_flag,
                      "processes": processes, "models": {}}
    for spec in args.models.split(","):
        name, size = spec.split(":")
        model_path = ensure_export(name, int(size))
        root = Path(tempfile.mkdtemp(prefix="bench-root-"))
        from tests.servers import copy_version

        copy_version(model_path, root, name, 1)
        tf_flags = [*args.server_flag, "--runtime", "tensorflow"]
        print(f"[bench] {name}: server, batching on (c=1 latency against {processes} server processes) ...", flush=True)
        batched = measure_server(root, name, photos, seconds, tf_flags, c1_servers=processes)
        print(f"[bench] {name}: server, batching off ...", flush=True)
        unbatched = measure_server(root, name, photos, seconds, [*tf_flags, "--no-batching"],
                                   limit_configs=batched["limit_configs"])
        results["models"][name] = {"input_size": int(size), "in_process_sweep": batched.pop("in_process_sweep"),
                                   "batched": batched, "unbatched": unbatched}
        if "onnxruntime" in args.runtimes.split(","):
            print(f"[bench] {name}: server on onnxruntime (c=1 latency against {processes} server processes) ...", flush=True)
            onnx = measure_server(root, name, photos, seconds, [*args.server_flag, "--runtime", "onnxruntime"],
                                  c1_servers=processes)
            print(f"[bench] {name}: fine-tuning feature extraction on both runtimes ...", flush=True)
            results["models"][name]["onnxruntime"] = {
                "server": onnx, "ratios": runtimes.compare(batched, onnx),
                "feature_extraction": runtimes.feature_extraction(model_path, int(size), photos),
            }
        shutil.rmtree(root, ignore_errors=True)
    first = args.models.split(",")[0].split(":")
    if swaps:
        print(f"[bench] RSS over {swaps} hot swaps under load ...", flush=True)
        results["swaps"] = measure_swaps(ensure_export(first[0], int(first[1])), first[0], photos, swaps, args.server_flag)
    if not args.quick:
        print("[bench] cold start with the default models' stand-ins at 224 ...", flush=True)
        results["cold_start"] = measure_cold_start(args.server_flag)
    failures = report(results)
    for name, result in results["models"].items():
        if "onnxruntime" in result:
            onnx = result["onnxruntime"]
            failures += runtimes.report(name, onnx["ratios"], onnx["feature_extraction"])
    results["targets_missed"] = failures
    print(f"\nwritten: {write_results('serving', results)}")
    print("all targets met" if not failures else "targets missed:\n  " + "\n  ".join(failures))
    return 0 if not failures else 1


if __name__ == "__main__":
    sys.exit(main())
