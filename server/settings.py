"""Every server setting, typed and documented in one place.

Sources, lowest to highest precedence: the defaults below, an optional TOML config file
(``--config`` or ``IMAGESERVE_CONFIG``), environment variables ``IMAGESERVE_<FIELD>`` and command
line flags ``--field-name``. ``python -m server --help`` lists them all.

Per-model settings (version policy, version labels, batching overrides) live in the config file's
``[models.<name>]`` tables (:class:`ModelConfig`); the server re-reads them when the file changes.

Example ``imageserve.toml``::

    model_root = "models"
    port = 8500

    [models.vgg16]
    version_policy = "specific"
    versions = [3, 4]
    version_labels = { stable = 3, canary = 4 }
    max_batch_size = 4
    runtime = "tensorflow"
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from storage.roots import as_root, is_url, storage_problem

ENV_PREFIX = "IMAGESERVE_"
MiB = 1024 * 1024

VERSION_POLICIES = ("latest", "all", "specific")
RUNTIMES = ("auto", "tensorflow", "onnxruntime", "openvino")  # server/runtime.py
PRECISIONS = ("fp32", "bf16", "int8", "auto")  # server/runtime.py


class SettingsError(ValueError):
    """A setting has a bad value; the message names the setting and its source."""


def _doc(text: str, **kwargs: Any) -> Any:
    """A dataclass field with a one-line description (shown by ``--help``)."""
    return field(metadata={"help": text}, **kwargs)


@dataclass(frozen=True)
class ModelConfig:
    """Settings of one model, from the config file's ``[models.<name>]`` table."""

    version_policy: str = _doc(
        "which versions to serve: latest (the newest `latest`), all, or specific", default="latest"
    )
    latest: int = _doc("with version_policy=latest: how many of the newest versions to serve", default=1)
    versions: tuple[int, ...] = _doc("with version_policy=specific: the versions to serve", default=())
    version_labels: Mapping[str, int] = _doc(
        "names for versions, e.g. {stable = 3, canary = 4}", default_factory=dict
    )
    max_batch_size: int | None = _doc("override of the server's max_batch_size for this model", default=None)
    batch_timeout_ms: float | None = _doc(
        "override of the server's batch_timeout_ms for this model", default=None
    )
    runtime: str | None = _doc("override of the server's runtime for this model", default=None)
    precision: str | None = _doc("override of the server's precision for this model", default=None)

    def __post_init__(self) -> None:
        if self.runtime is not None and self.runtime not in RUNTIMES:
            raise SettingsError(f"runtime {self.runtime!r}; expected one of {', '.join(RUNTIMES)}")
        if self.precision is not None and self.precision not in PRECISIONS:
            raise SettingsError(f"precision {self.precision!r}; expected one of {', '.join(PRECISIONS)}")
        if self.version_policy not in VERSION_POLICIES:
            raise SettingsError(
                f"version_policy {self.version_policy!r}; expected one of {', '.join(VERSION_POLICIES)}"
            )
        if self.latest < 1:
            raise SettingsError(f"latest must be >= 1, got {self.latest}")
        if self.version_policy == "specific" and not self.versions:
            raise SettingsError("version_policy 'specific' needs a non-empty versions list")
        for label, version in self.version_labels.items():
            if not isinstance(version, int) or version < 1:
                raise SettingsError(
                    f"version label {label!r} must point at a positive version number, got {version!r}"
                )


@dataclass(frozen=True)
class ServerSettings:
    """The server's settings. Field names are the TOML keys; flags and env vars derive from them."""

    # --- where things are
    model_root: Path | str = _doc(
        "directory holding <name>/<version>/ SavedModels, or an object store URL (s3://bucket/prefix, gs://...;"
        " see docs/object-storage.md)",
        default=Path("models"),
    )
    config: Path | None = _doc(
        "optional TOML config file (these settings plus [models.<name>] tables)", default=None
    )
    state_dir: Path = _doc(
        "where fine-tuning jobs (SQLite, unless finetune_store) and uploaded datasets are kept",
        default=Path("state"),
    )
    data_root: Path | None = _doc(
        "directory under which StartFineTune may read data_dir datasets; unset: none", default=None
    )

    # --- network
    host: str = _doc("address to listen on", default="[::]")
    port: int = _doc("gRPC port (0 picks a free one and logs it)", default=8500)
    metrics_port: int | None = _doc(
        "Prometheus /metrics HTTP port (0 picks a free one and logs it); off disables", default=8510
    )
    rest_port: int | None = _doc(
        "HTTP port of the REST APIs (Open Inference Protocol V2, TF Serving's REST API); off (the default)"
        " disables, 0 picks a free one and logs it. TF Serving clients expect 8501",
        default=None,
    )
    max_message_bytes: int = _doc("largest request and response message, in bytes", default=64 * MiB)
    http_max_connections: int = _doc(
        "REST connections open at once; more are closed as soon as they are accepted", default=1000
    )
    http_header_timeout_s: float = _doc(
        "REST: from a request's first byte to its last header line; a slower connection is closed",
        default=10.0,
    )
    http_keepalive_timeout_s: float = _doc(
        "REST: an idle keep-alive connection is closed after this", default=15.0
    )
    http_body_timeout_s: float = _doc(
        "REST: the longest a request's body may take to arrive (HTTP 408 beyond it)", default=60.0
    )

    # --- request limits
    max_images_per_request: int = _doc(
        "most images one Classify/ExtractFeatures request may carry", default=64
    )
    max_image_pixels: int = _doc(
        "largest image (width x height) decoded; larger ones are refused unread", default=40_000_000
    )

    # --- model repository
    poll_interval_s: float = _doc(
        "how often the model root is scanned for new or removed versions", default=2.0
    )
    version_policy: str = _doc(
        "default version policy: latest, all or specific (see [models.<name>])", default="latest"
    )
    latest_versions: int = _doc("default number of newest versions served under the latest policy", default=1)

    # --- batching and threads
    batching: bool = _doc("queue concurrent requests and run them together in one model call", default=True)
    max_batch_size: int = _doc("most images in one model call", default=8)
    batch_timeout_ms: float = _doc(
        "while another batch runs, longest wait for more requests after the oldest queued one, in"
        " milliseconds (a request reaching an idle model runs at once)",
        default=2.0,
    )
    max_queued_images: int = _doc(
        "images waiting per model version before new requests get RESOURCE_EXHAUSTED", default=512
    )
    model_threads: int = _doc("threads running model calls (concurrent batches)", default=2)
    memory_budget: int | None = _doc(
        "bytes the loaded versions may hold (unset: no limit); beyond it the least recently used idle ones"
        " are unloaded and load again on their next request (docs/server.md#memory-budget)",
        default=None,
    )
    tf_intra_op_threads: int = _doc("TensorFlow threads inside one op; 0 lets TensorFlow choose", default=0)
    tf_inter_op_threads: int = _doc(
        "TensorFlow threads running independent ops; 0 lets TensorFlow choose", default=0
    )

    # --- network runtime (server/runtime.py)
    runtime: str = _doc(
        "what runs the network after TensorFlow decodes: auto (the fastest on the warm-up batch of"
        " TensorFlow and the checked twin on ONNX Runtime, and on OpenVINO at a reduced precision when"
        " asked), tensorflow, onnxruntime or openvino (the same twin, at the precision set)",
        default="auto",
    )
    precision: str = _doc(
        "fp32 (answers as the SavedModel's); bf16 where the CPU has it, int8 where the version has"
        " calibration images, each only past the gate against fp32 (features cosine >= 0.999, top-1"
        " agreement >= 0.99), else fp32 with the reason in status; auto: the fastest that passes."
        " Reduced precisions run on OpenVINO (runtime openvino or auto)",
        default="fp32",
    )
    onnx_threads: int = _doc(
        "ONNX Runtime (or OpenVINO) threads per model call; 0: cores / model_threads, so concurrent calls "
        "fill the cores "
        "once",
        default=0,
    )

    # --- lifecycle and logs
    shutdown_grace_s: float = _doc("on SIGTERM, how long in-flight requests may take to finish", default=10.0)
    log_level: str = _doc("DEBUG logs every request; INFO logs model loads, unloads and jobs", default="INFO")
    log_format: str = _doc("text or json", default="text")

    # --- fine-tuning
    finetune_workers: int = _doc("training jobs run at the same time (each in its own process)", default=1)
    finetune_threads: int = _doc("CPU threads of each training worker process", default=2)
    max_upload_bytes: int = _doc("largest dataset upload, in bytes", default=512 * MiB)
    max_upload_images: int = _doc("most images in one dataset", default=50_000)
    finetune_store: str = _doc(
        "where jobs, events and datasets are recorded: empty for SQLite in state_dir (one server), or a"
        " postgresql://user@host/db URL shared by replicas (state_dir must then be a shared volume)",
        default="",
        repr=False,  # the URL may hold a password
    )
    finetune_min_margin_over_chance: float = _doc(
        "a job without min_val_accuracy publishes only if its validation accuracy beats chance (always"
        " answering the commonest class) by this much",
        default=0.05,
    )
    finetune_max_attempts: int = _doc(
        "with a shared finetune_store: runs of a job whose replica died (taken over by a survivor and run"
        " again) before it FAILS",
        default=3,
    )
    finetune_lease_s: float = _doc(
        "with a shared finetune_store: a running job's lease, renewed every third of it; a replica"
        " silent this long has its job FAILED by another",
        default=30.0,
    )

    # --- security
    tls_cert: Path | None = _doc("PEM server certificate; with tls_key, the server speaks TLS", default=None)
    tls_key: Path | None = _doc("PEM private key of tls_cert", default=None)
    tls_client_ca: Path | None = _doc(
        "PEM CA bundle; when set, clients must present a certificate it signed", default=None
    )
    auth_tokens_file: Path | None = _doc(
        "file of '<token> <scope>[,<scope>]' lines (scopes: read, finetune); when set, calls need a token",
        default=None,
    )
    auth_tokens: str | None = _doc(
        "the same entries separated by ';' (e.g. from an environment variable); never logged", default=None
    )

    # Per-model tables from the config file; not a flag or environment variable.
    models: Mapping[str, ModelConfig] = field(default_factory=dict, metadata={"help": "", "file_only": True})

    def __post_init__(self) -> None:
        checks = [
            (self.port >= 0, "port must be >= 0"),
            (self.rest_port is None or self.rest_port >= 0, "rest_port must be >= 0, or off"),
            (self.metrics_port is None or self.metrics_port >= 0, "metrics_port must be >= 0, or off"),
            (
                not self.rest_port or self.rest_port not in (self.port, self.metrics_port),
                f"rest_port {self.rest_port} is already the gRPC port or metrics_port: give each its own port"
                " (TF Serving's REST port 8501 is free with the default metrics_port 8510)",
            ),
            (self.http_max_connections >= 1, "http_max_connections must be >= 1"),
            (
                min(self.http_header_timeout_s, self.http_keepalive_timeout_s, self.http_body_timeout_s) > 0,
                "http_header_timeout_s, http_keepalive_timeout_s and http_body_timeout_s must be > 0",
            ),
            (self.max_images_per_request >= 1, "max_images_per_request must be >= 1"),
            (self.max_image_pixels >= 1, "max_image_pixels must be >= 1"),
            (self.poll_interval_s > 0, "poll_interval_s must be > 0"),
            (self.max_batch_size >= 1, "max_batch_size must be >= 1"),
            (self.batch_timeout_ms >= 0, "batch_timeout_ms must be >= 0"),
            (self.max_queued_images >= self.max_batch_size, "max_queued_images must be >= max_batch_size"),
            (self.model_threads >= 1, "model_threads must be >= 1"),
            (self.memory_budget is None or self.memory_budget > 0, "memory_budget must be > 0 bytes"),
            (self.runtime in RUNTIMES, f"runtime must be one of {', '.join(RUNTIMES)}"),
            (self.precision in PRECISIONS, f"precision must be one of {', '.join(PRECISIONS)}"),
            (self.onnx_threads >= 0, "onnx_threads must be >= 0"),
            (self.version_policy in ("latest", "all"), "the default version_policy must be latest or all"),
            (self.latest_versions >= 1, "latest_versions must be >= 1"),
            (self.log_format in ("text", "json"), "log_format must be text or json"),
            ((self.tls_cert is None) == (self.tls_key is None), "tls_cert and tls_key go together"),
            (
                self.tls_client_ca is None or self.tls_cert is not None,
                "tls_client_ca needs tls_cert and tls_key",
            ),
            (self.finetune_workers >= 1, "finetune_workers must be >= 1"),
            (
                not self.finetune_store or self.finetune_store.startswith(("postgresql://", "postgres://")),
                "finetune_store must be empty (SQLite in state_dir) or a "
                "postgresql://user@host:port/database URL",
            ),
            (self.finetune_lease_s >= 1, "finetune_lease_s must be >= 1 (seconds)"),
            (self.finetune_max_attempts >= 1, "finetune_max_attempts must be >= 1"),
            (
                0 <= self.finetune_min_margin_over_chance < 1,
                "finetune_min_margin_over_chance must be in [0, 1)",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise SettingsError(message)
        if is_url(self.model_root) and (problem := storage_problem(self.model_root)):
            raise SettingsError(f"model_root {problem}")

    def model_config(self, name: str) -> ModelConfig:
        """The model's own table, or the server-wide defaults."""
        if name in self.models:
            return self.models[name]
        return ModelConfig(version_policy=self.version_policy, latest=self.latest_versions)

    def runtime_for(self, name: str) -> str:
        """The model's runtime: its ``[models.<name>]`` override, else the server's."""
        override = self.models[name].runtime if name in self.models else None
        return override or self.runtime

    def precision_for(self, name: str) -> str:
        """The model's precision (runtime = openvino): its ``[models.<name>]`` override, else the server's."""
        override = self.models[name].precision if name in self.models else None
        return override or self.precision

    @property
    def batch_timeout_s(self) -> float:
        return self.batch_timeout_ms / 1000.0


def _settable_fields() -> list[dataclasses.Field]:
    return [f for f in dataclasses.fields(ServerSettings) if not f.metadata.get("file_only")]


def _field_types() -> dict[str, Any]:
    return typing.get_type_hints(ServerSettings)


def _base_type(annotation: Any) -> Any:
    """``Path | None`` -> ``Path``; ``Path | str`` (a directory or a URL) -> ``Path``."""
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return args[0]
    return annotation


def _convert(name: str, raw: Any, source: str) -> Any:
    annotation = _field_types()[name]
    target = _base_type(annotation)
    optional = type(None) in typing.get_args(annotation)
    try:
        if optional and (raw is None or (isinstance(raw, str) and raw.strip().lower() in ("", "off"))):
            return None  # e.g. rest_port = "off"
        if target is Path and str in typing.get_args(annotation):  # a directory or a URL (model_root)
            return as_root(raw)
        if target is bool:
            if isinstance(raw, bool):
                return raw
            lowered = str(raw).strip().lower()
            if lowered in ("1", "true", "yes", "on"):
                return True
            if lowered in ("0", "false", "no", "off"):
                return False
            raise ValueError(f"not a boolean: {raw!r}")
        if target is Path:
            return Path(raw)
        return target(raw)
    except (TypeError, ValueError) as exc:
        raise SettingsError(f"{name} (from {source}): {exc}") from None


def _model_configs(table: Mapping[str, Any], source: str) -> dict[str, ModelConfig]:
    known = {f.name for f in dataclasses.fields(ModelConfig)}
    configs = {}
    for name, values in table.items():
        unknown = set(values) - known
        if unknown:
            raise SettingsError(
                f"[models.{name}] in {source}: unknown keys {sorted(unknown)}; known: {sorted(known)}"
            )
        values = dict(values)
        if "versions" in values:
            values["versions"] = tuple(values["versions"])
        try:
            configs[name] = ModelConfig(**values)
        except SettingsError as exc:
            raise SettingsError(f"[models.{name}] in {source}: {exc}") from None
    return configs


def read_config_file(path: Path) -> tuple[dict[str, Any], dict[str, ModelConfig]]:
    """Parse a TOML config file into (setting values, per-model configs)."""
    try:
        data = tomllib.loads(Path(path).read_text())
    except OSError as exc:
        raise SettingsError(f"config file {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(f"config file {path}: {exc}") from None
    models = _model_configs(data.pop("models", {}), str(path))
    names = {f.name for f in _settable_fields()}
    unknown = set(data) - names
    if unknown:
        raise SettingsError(f"config file {path}: unknown settings {sorted(unknown)}")
    return {key: _convert(key, value, str(path)) for key, value in data.items()}, models


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m server",
        description="Serve every SavedModel under the model root over gRPC.",
        epilog=(
            f"Every flag can also be set as an environment variable {ENV_PREFIX}<NAME> or in the config file."
        ),
        argument_default=argparse.SUPPRESS,
    )
    types_ = _field_types()
    for f in _settable_fields():
        flag = "--" + f.name.replace("_", "-")
        default = f.default if f.default is not dataclasses.MISSING else None
        if _base_type(types_[f.name]) is bool:
            parser.add_argument(
                flag, action=argparse.BooleanOptionalAction, help=f"{f.metadata['help']} (default: {default})"
            )
        else:
            parser.add_argument(flag, dest=f.name, help=f"{f.metadata['help']} (default: {default})")
    return parser


def load_settings(argv: list[str] | None = None, environ: Mapping[str, str] | None = None) -> ServerSettings:
    """Merge defaults, config file, environment and flags into one validated :class:`ServerSettings`."""
    environ = os.environ if environ is None else environ
    flags = vars(build_parser().parse_args([] if argv is None else argv))
    env_values = {
        f.name: environ[ENV_PREFIX + f.name.upper()]
        for f in _settable_fields()
        if ENV_PREFIX + f.name.upper() in environ
    }
    config_path = flags.get("config") or env_values.get("config")
    values: dict[str, Any] = {}
    models: dict[str, ModelConfig] = {}
    if config_path:
        values, models = read_config_file(Path(config_path))
    for source, layer in (("environment", env_values), ("command line", flags)):
        for name, raw in layer.items():
            values[name] = _convert(name, raw, source)
    return ServerSettings(**values, models=models)


def reload_model_configs(settings: ServerSettings) -> ServerSettings:
    """Re-read the ``[models.*]`` tables of the config file (version labels, policies)."""
    if settings.config is None:
        return settings
    _values, models = read_config_file(settings.config)
    return dataclasses.replace(settings, models=models)
