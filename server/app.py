"""Assemble and run the server: settings -> repository -> core -> gRPC services -> signals.

``python -m server --model-root models/`` serves every model under the root. ``ModelServer`` is the
same thing as an object, which tests start in-process on a free port.
"""

from __future__ import annotations

import asyncio
import logging
import resource
import signal
from concurrent.futures import ThreadPoolExecutor

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from server import __version__, tracing
from server.api import tfserving, v2_grpc
from server.api.openinference import OpenInference
from server.api.registration import generic_handler
from server.api.servicer import SERVICE, SERVICE_NAME, ImageModelServicer
from server.auth import TokenAuthInterceptor, load_tokens, server_credentials
from server.backend import BackendLoader
from server.finetune.manager import FineTuneManager
from server.inference import InferenceService
from server.logs import configure_logging
from server.metrics import Metrics
from server.repository import ModelRepository
from server.rest import tfserving as rest_tfserving
from server.rest import v2 as rest_v2
from server.rest.app import RestServer
from server.rest.bodies import BodyParser
from server.settings import ServerSettings, SettingsError

log = logging.getLogger(__name__)

#: Health service name for one model: "model/<name>" (the empty name is the whole server: SERVING once
#: the first load pass is done and a model is served, which is what a readiness probe asks).
MODEL_HEALTH_PREFIX = "model/"
#: Health service name for liveness probes: SERVING while the event loop answers, whether or not any
#: model is loaded (a liveness probe on "" would restart a replica whose model root is empty or slow
#: to load, which cannot help). NOT_SERVING only once shutdown has begun.
LIVENESS_SERVICE = "liveness"
#: Longest the server waits for the model root's first listing before it listens.
STARTUP_SCAN_S = 10.0


def configure_tensorflow(settings: ServerSettings) -> None:
    """Thread pools must be set before TensorFlow runs its first op; later calls cannot change them."""
    import tensorflow as tf

    try:
        if settings.tf_intra_op_threads:
            tf.config.threading.set_intra_op_parallelism_threads(settings.tf_intra_op_threads)
        if settings.tf_inter_op_threads:
            tf.config.threading.set_inter_op_parallelism_threads(settings.tf_inter_op_threads)
    except RuntimeError:
        log.warning("TensorFlow was already initialised in this process; its thread settings are unchanged")


class ModelServer:
    """The gRPC server with its repository, core services, health and reflection."""

    def __init__(self, settings: ServerSettings, loader: BackendLoader | None = None) -> None:
        """``loader``: how a version is loaded (default TensorFlow; tests pass a NumPy fake)."""
        self.settings = settings
        self.port: int | None = None
        self._model_executor = ThreadPoolExecutor(settings.model_threads, thread_name_prefix="model")
        self.health = health.aio.HealthServicer()
        self.metrics = Metrics()
        self.repository = ModelRepository(
            settings,
            self._model_executor,
            on_change=self._schedule_health_update,
            on_batch=self.metrics.record_batch,
            on_lifecycle=self.metrics.record_lifecycle,
            loader=loader,
        )
        self.inference = InferenceService(settings, self.repository)
        self.finetune = FineTuneManager(settings, self.repository)
        self.servicer = ImageModelServicer(
            settings, self.repository, self.inference, metrics=self.metrics, finetune=self.finetune
        )
        self.metrics.track_finetune_jobs(self.finetune.counts_by_state)
        self.metrics.track_load(self.repository.load)
        self.metrics.track_memory(self.repository.memory)
        self.tfserving_prediction = tfserving.PredictionServicer(
            self.repository, self.inference, self.servicer
        )
        self.tfserving_models = tfserving.ModelServicer(self.repository, self.servicer)
        self.open_inference = OpenInference(self.repository, self.inference, self.ready)
        self.v2_inference = v2_grpc.InferenceServicer(self.open_inference, self.servicer)
        self._server: grpc.aio.Server | None = None
        self.rest: RestServer | None = None
        # REST request bodies: read within a timeout, large ones parsed in a process of their own.
        self.bodies = BodyParser(settings.http_body_timeout_s)
        self._owns_tracing = False
        self._repository_start: asyncio.Task | None = None
        self._health_tasks: set[asyncio.Task] = set()
        self._stopped = asyncio.Event()

    def _grpc_options(self) -> list[tuple[str, int]]:
        return [
            ("grpc.max_receive_message_length", self.settings.max_message_bytes),
            ("grpc.max_send_message_length", self.settings.max_message_bytes),
            ("grpc.so_reuseport", 0),
        ]

    async def start(self) -> int:
        """Listen, then load the models in the background; returns the bound port."""
        configure_tensorflow(self.settings)
        try:
            self._owns_tracing = not tracing.enabled() and tracing.configure_from_environment()
        except ValueError as exc:  # e.g. an OTEL_TRACES_EXPORTER this server cannot export to
            raise SettingsError(str(exc)) from None
        tokens = load_tokens(self.settings)
        credentials = server_credentials(self.settings)
        interceptors = [TokenAuthInterceptor(tokens)] if tokens is not None else []
        server = grpc.aio.server(options=self._grpc_options(), interceptors=interceptors)
        server.add_generic_rpc_handlers(
            (
                generic_handler(self.servicer, SERVICE),
                generic_handler(self.tfserving_prediction, tfserving.PREDICTION_SERVICE),
                generic_handler(self.tfserving_models, tfserving.MODEL_SERVICE),
                generic_handler(self.v2_inference, v2_grpc.SERVICE),
            )
        )
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        reflection.enable_server_reflection(
            (
                SERVICE_NAME,
                tfserving.PREDICTION_SERVICE.full_name,
                tfserving.MODEL_SERVICE.full_name,
                health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                reflection.SERVICE_NAME,
            ),
            server,
        )
        address = f"{self.settings.host}:{self.settings.port}"
        if credentials is not None:
            self.port = server.add_secure_port(address, credentials)
        else:
            self.port = server.add_insecure_port(address)
        if not self.port:
            raise OSError(f"could not listen on {address}")
        if self.settings.rest_port is not None:
            routes = rest_v2.routes(self.open_inference, self.bodies) + rest_tfserving.routes(
                self.settings, self.repository, self.inference, self.bodies
            )
            self.rest = RestServer(self.settings, routes, tokens, self.metrics, self.repository.model_names)
            await self.rest.start()
        if self.settings.metrics_port is not None:
            self.metrics.serve(self.settings.host, self.settings.metrics_port)
        # Before listening, a model on disk is "loading", not "unknown" (a stalled object store delays
        # this by at most STARTUP_SCAN_S: the repository's polls keep listing it afterwards).
        try:
            scanned = await asyncio.wait_for(self.repository.scan(), STARTUP_SCAN_S)
        except TimeoutError:
            log.warning("the model root was not listed within %.0f s; listening anyway", STARTUP_SCAN_S)
            scanned = None
        if scanned is not None:
            self.repository.register_pending(*scanned)
        await self.health.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
        await self.health.set(SERVICE_NAME, health_pb2.HealthCheckResponse.NOT_SERVING)
        await self.health.set(LIVENESS_SERVICE, health_pb2.HealthCheckResponse.SERVING)
        await server.start()
        self._server = server
        log.info(
            "imageserve %s listening on %s:%d (%s, %s; model root %s)",
            __version__,
            self.settings.host,
            self.port,
            ("mutual TLS" if self.settings.tls_client_ca else "TLS")
            if credentials is not None
            else "plaintext",
            f"token auth, {len(tokens.entries)} tokens" if tokens is not None else "no auth",
            self.settings.model_root,
        )
        self._repository_start = asyncio.get_running_loop().create_task(self.repository.start())
        await self.finetune.start()
        return self.port

    def ready(self) -> bool:
        """Ready for inference: the first load of the model root is done and some model is available."""
        return self.repository.initial_load_done.is_set() and self.repository.any_available()

    def _schedule_health_update(self) -> None:
        task = asyncio.get_running_loop().create_task(self._update_health())
        self._health_tasks.add(task)
        task.add_done_callback(self._health_tasks.discard)

    async def _update_health(self) -> None:
        serving, not_serving = (
            health_pb2.HealthCheckResponse.SERVING,
            health_pb2.HealthCheckResponse.NOT_SERVING,
        )
        self.metrics.set_served_versions(self.repository.available_counts())
        for name in self.repository.model_names():
            available = self.repository.default_version(name) > 0
            await self.health.set(MODEL_HEALTH_PREFIX + name, serving if available else not_serving)
        ready = self.ready()
        for service in ("", SERVICE_NAME):
            await self.health.set(service, serving if ready else not_serving)

    async def stop(self, grace_s: float | None = None) -> None:
        """Stop accepting, let in-flight calls finish within the grace period, release models."""
        grace = self.settings.shutdown_grace_s if grace_s is None else grace_s
        await self.health.enter_graceful_shutdown()
        await self.finetune.stop()  # first: running jobs end FAILED (interrupted) and their watchers end
        if self._server is not None:
            log.info("shutting down: finishing in-flight requests (grace %.1f s)", grace)
            await asyncio.gather(
                self._server.stop(grace), *([self.rest.stop()] if self.rest is not None else [])
            )
        if self._repository_start is not None and not self._repository_start.done():
            self._repository_start.cancel()
        await self.repository.close()
        self._model_executor.shutdown(wait=False, cancel_futures=True)
        self.metrics.close()
        self.bodies.close()
        if self._owns_tracing:
            tracing.disable()  # flushes the spans still buffered
        self._stopped.set()
        log.info("stopped")

    async def wait_stopped(self) -> None:
        await self._stopped.wait()


async def serve(settings: ServerSettings) -> None:
    server = ModelServer(settings)
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    await server.stop()


def raise_open_files_limit() -> int:
    """Raise the soft limit of open files to the hard one (often 1,024 of 1,048,576): connections,
    model files and worker pipes share it, and REST's own limit (``http_max_connections``) must stay
    below it with room for the rest. Returns the limit now in force."""
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft < hard:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            return hard
        return soft
    except (ValueError, OSError):  # a platform that refuses: keep what there is
        return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def run(settings: ServerSettings) -> int:
    """Serve until SIGTERM or SIGINT; returns the process exit code (``python -m server`` calls this)."""
    configure_logging(settings.log_level, settings.log_format)
    open_files = raise_open_files_limit()
    if settings.rest_port is not None and settings.http_max_connections > open_files // 2:
        log.warning(
            "http_max_connections %d is more than half of this process's open-file limit (%d): REST "
            "connections could starve gRPC and the models of file descriptors",
            settings.http_max_connections,
            open_files,
        )
    try:
        asyncio.run(serve(settings))
    except SettingsError as exc:  # e.g. an unreadable certificate or a malformed token file
        log.error("%s", exc)
        return 2
    except OSError as exc:
        log.error("%s", exc)
        return 1
    return 0
