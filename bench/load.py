"""Load on a server through a caller, and its latency at concurrency 1.

A caller sends one image per call and stays connected (as a backend's would): :class:`ImageServeCaller`
through the real client, :class:`BareCaller` to the bare floor. :func:`measure_level` is one load
level in windows alternating with the model's in-process limits; :func:`c1_latency` compares c=1
latency with in-process single-image latency in the same processes, in alternating rounds.
"""

from __future__ import annotations

import asyncio
import random
import time
from typing import TYPE_CHECKING

from bench.common import median, percentiles

if TYPE_CHECKING:
    from bench.processes import HostedServer

#: The load levels' concurrencies.
CONCURRENCY = (1, 4, 16, 64)


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


#: Each load level alternates this many windows of served load with windows of in-process calls.
LEVEL_WINDOWS = 4


async def _load_window(
    caller, photos: list[bytes], concurrency: int, seconds: float, latencies: list[float], errors: list[str]
) -> int:
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
    level = {
        "concurrency": concurrency,
        "images_per_s": images_per_s,
        "errors": len(errors),
        "error_samples": errors[:3],
        **percentiles(latencies),
    }
    for (
        name,
        values,
    ) in limits.items():  # limit_images_per_s, limit_by_window, ratio_to_limit; concurrent_limit_...
        mean = sum(values) / len(values)
        level.update(
            {
                f"{name}_images_per_s": mean,
                f"{name}_by_window": values,
                f"ratio_to_{name}": images_per_s / mean,
            }
        )
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
