"""Prometheus metrics, one registry per server, exposed on ``metrics_port`` at ``/metrics``.

Series (all prefixed ``imageserve_``):

==========================================  =========  ================================================
name                                        type       labels
==========================================  =========  ================================================
``requests_total``                          counter    rpc, model, version, code
``request_duration_seconds``                histogram  rpc, model: whole call, as the server sees it
``queue_duration_seconds``                  histogram  model, kind: oldest request's wait for its batch
``model_duration_seconds``                  histogram  model, kind, runtime, precision: one model call
``batch_size``                              histogram  model, kind: images per model call
``images_total``                            counter    model, version, kind: images through the model
``model_loads_total``                       counter    model, result (``loaded`` / ``failed``)
``model_load_duration_seconds``             histogram  model: load + warm-up
``model_unloads_total``                     counter    model
``model_evictions_total``                   counter    model: unloaded to stay within memory_budget
``model_resident_bytes``                    gauge      model, version: memory a loaded version holds
``model_unload_duration_seconds``           histogram  model: includes waiting for in-flight requests
``served_versions``                         gauge      model: versions AVAILABLE now
``finetune_jobs``                           gauge      state: jobs in the store by state
``pending_images``                          gauge      model, version, stage (``queued`` / ``running``)
``inflight_requests``                       gauge      model, version: requests holding the version
==========================================  =========  ================================================

Images per second is ``rate(imageserve_images_total[1m])``. ``pending_images`` summed over ``stage`` is
the work a replica has accepted and not answered: what a HorizontalPodAutoscaler scales on. The
registry also carries prometheus_client's standard ``process_*`` (CPU, memory, open files) and
``python_*`` (GC, interpreter) series.
"""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Callable
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    make_wsgi_app,
)
from prometheus_client.core import GaugeMetricFamily

from server.sockets import listening_socket

log = logging.getLogger(__name__)

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)
_LOAD_BUCKETS = (0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300)


class Metrics:
    """The server's Prometheus series; call the ``record_*`` methods from the event loop."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        # NOTE: our own registry (one per server, so tests can run several) does not get the default
        # registry's process_* and python_* collectors; operators' dashboards expect them, so add them.
        for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
            r.register(collector)
        self.requests = Counter(
            "imageserve_requests",
            "RPCs answered, by status code",
            ["rpc", "model", "version", "code"],
            registry=r,
        )
        self.request_duration = Histogram(
            "imageserve_request_duration_seconds",
            "RPC duration",
            ["rpc", "model"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.queue_duration = Histogram(
            "imageserve_queue_duration_seconds",
            "Time the oldest request of a batch waited before the model call",
            ["model", "kind"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.model_duration = Histogram(
            "imageserve_model_duration_seconds",
            "Duration of one model call (a batch)",
            ["model", "kind", "runtime", "precision"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "imageserve_batch_size",
            "Images per model call",
            ["model", "kind"],
            buckets=_BATCH_BUCKETS,
            registry=r,
        )
        self.images = Counter(
            "imageserve_images", "Images run through a model", ["model", "version", "kind"], registry=r
        )
        self.loads = Counter("imageserve_model_loads", "Model version loads", ["model", "result"], registry=r)
        self.load_duration = Histogram(
            "imageserve_model_load_duration_seconds",
            "Load + warm-up time of a model version",
            ["model"],
            buckets=_LOAD_BUCKETS,
            registry=r,
        )
        self.unloads = Counter("imageserve_model_unloads", "Model version unloads", ["model"], registry=r)
        self.evictions = Counter(
            "imageserve_model_evictions",
            "Versions unloaded to stay within memory_budget (they stay served; a request loads them)",
            ["model"],
            registry=r,
        )
        self.unload_duration = Histogram(
            "imageserve_model_unload_duration_seconds",
            "Unload time of a model version, including its in-flight requests",
            ["model"],
            buckets=_LOAD_BUCKETS,
            registry=r,
        )
        self.served_versions = Gauge(
            "imageserve_served_versions", "Versions AVAILABLE now", ["model"], registry=r
        )
        self._http_server = None
        self.port: int | None = None

    def serve(self, host: str, port: int) -> int:
        """Start the ``/metrics`` HTTP endpoint in a background thread, on the socket every door binds
        (:func:`server.sockets.listening_socket`: ``[::]`` is IPv4 and IPv6); returns the bound port.

        NOTE: in a thread of its own, so that a scrape never waits for the event loop."""
        sock = listening_socket(host, port)
        server = _MetricsHTTPServer(sock, make_wsgi_app(self.registry))
        threading.Thread(target=server.serve_forever, name="metrics-http", daemon=True).start()
        self._http_server = server
        self.port = sock.getsockname()[1]
        log.info("metrics on http://%s:%d/metrics", host, self.port)
        return self.port

    def close(self) -> None:
        if self._http_server is not None:
            self._http_server.shutdown()
            self._http_server.server_close()
            self._http_server = None

    def record_request(self, rpc: str, model: str, version: int | None, code: str, seconds: float) -> None:
        self.requests.labels(rpc, model, str(version or ""), code).inc()
        self.request_duration.labels(rpc, model).observe(seconds)

    def record_batch(
        self,
        model: str,
        version: int,
        kind: str,
        size: int,
        queued_s: float,
        model_s: float,
        runtime: str = "",
        precision: str = "",
    ) -> None:
        self.batch_size.labels(model, kind).observe(size)
        self.queue_duration.labels(model, kind).observe(queued_s)
        self.model_duration.labels(model, kind, runtime, precision).observe(model_s)
        self.images.labels(model, str(version), kind).inc(size)

    def record_lifecycle(self, event: str, model: str, version: int, seconds: float) -> None:
        if event == "load":
            self.loads.labels(model, "loaded").inc()
            self.load_duration.labels(model).observe(seconds)
        elif event == "load_failed":
            self.loads.labels(model, "failed").inc()
        elif event == "unload":
            self.unloads.labels(model).inc()
            self.unload_duration.labels(model).observe(seconds)
        elif event == "evict":
            self.evictions.labels(model).inc()

    def set_served_versions(self, counts: dict[str, int]) -> None:
        for model, count in counts.items():
            self.served_versions.labels(model).set(count)

    def track_finetune_jobs(self, counts_by_state: Callable[[], dict[str, int]]) -> None:
        """Report ``imageserve_finetune_jobs{state}`` from ``counts_by_state()`` at every scrape."""
        self.registry.register(_FinetuneJobsCollector(counts_by_state))

    def track_load(self, load: Callable[[], list[tuple[str, int, int, int, int]]]) -> None:
        """Report ``pending_images`` and ``inflight_requests`` from ``load()`` at every scrape.

        ``load()`` returns (model, version, queued images, running images, requests in flight) rows
        (:meth:`server.repository.ModelRepository.load`).
        """
        self.registry.register(_LoadCollector(load))

    def track_memory(self, memory: Callable[[], list[tuple[str, int, int]]]) -> None:
        """Report ``model_resident_bytes`` from ``memory()``: (model, version, bytes) of each version in
        memory (:meth:`server.repository.ModelRepository.memory`)."""
        self.registry.register(_MemoryCollector(memory))


class _LoadCollector:
    def __init__(self, load: Callable[[], list[tuple[str, int, int, int, int]]]) -> None:
        self._load = load

    def _families(self) -> tuple[GaugeMetricFamily, GaugeMetricFamily]:
        return (
            GaugeMetricFamily(
                "imageserve_pending_images",
                "Images accepted and not yet answered by the model: waiting in the batch queue or in a "
                "model call",
                labels=["model", "version", "stage"],
            ),
            GaugeMetricFamily(
                "imageserve_inflight_requests",
                "Requests holding a model version (decoding, queued or running)",
                labels=["model", "version"],
            ),
        )

    def describe(self):
        yield from self._families()

    def collect(self):
        pending, requests = self._families()
        for model, version, queued, running, inflight in sorted(self._load()):
            pending.add_metric([model, str(version), "queued"], queued)
            pending.add_metric([model, str(version), "running"], running)
            requests.add_metric([model, str(version)], inflight)
        yield pending
        yield requests


class _MemoryCollector:
    def __init__(self, memory: Callable[[], list[tuple[str, int, int]]]) -> None:
        self._memory = memory

    def _family(self) -> GaugeMetricFamily:
        return GaugeMetricFamily(
            "imageserve_model_resident_bytes",
            "Memory a loaded version holds, measured at its load (RSS growth)",
            labels=["model", "version"],
        )

    def describe(self):
        yield self._family()

    def collect(self):
        family = self._family()
        for model, version, size in sorted(self._memory()):
            family.add_metric([model, str(version)], size)
        yield family


class _FinetuneJobsCollector:
    def __init__(self, counts_by_state: Callable[[], dict[str, int]]) -> None:
        self._counts = counts_by_state

    def _family(self) -> GaugeMetricFamily:
        return GaugeMetricFamily("imageserve_finetune_jobs", "Fine-tuning jobs by state", labels=["state"])

    def describe(self):
        yield self._family()

    def collect(self):
        family = self._family()
        for state, count in sorted(self._counts().items()):
            family.add_metric([state], count)
        yield family


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args) -> None:  # noqa: A002 - the standard library's name
        """Scrapes are not logged (one every few seconds per Prometheus)."""


class _MetricsHTTPServer(ThreadingMixIn, WSGIServer):
    """A WSGI server on a socket bound elsewhere (dual-stack on ``[::]``), one thread per scrape."""

    daemon_threads = True

    def __init__(self, sock: socket.socket, app) -> None:
        self.address_family = sock.family
        super().__init__(sock.getsockname()[:2], _QuietHandler, bind_and_activate=False)
        self.socket.close()
        self.socket = sock
        self.server_address = sock.getsockname()[:2]
        self.server_name, self.server_port = "imageserve", self.server_address[1]
        self.setup_environ()
        self.set_app(app)
