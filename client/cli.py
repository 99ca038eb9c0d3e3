"""``python -m client``: classify images, extract features, list models and fine-tune from the shell.

::

    python -m client classify cat.jpg dog.png --model mobilenet_v2 --top-k 3 [--json]
    python -m client features cat.jpg dog.png --model vgg16 --out features.npy [--json]
    python -m client models [--json]
    python -m client status MODEL [--json]
    python -m client info [--json]
    python -m client fine-tune DIR --base vgg16 --output digits [--epochs N ...] [--no-wait] [--json]
    python -m client jobs [--state FAILED ...] [--json]
    python -m client job JOB_ID [--wait] [--json]
    python -m client cancel JOB_ID [--json]

The fine-tuning commands are in :mod:`client.cli_jobs`.

Common options (before or after the command): ``--address`` (default ``localhost:8500``, or the
``IMAGESERVE_ADDRESS`` environment variable), ``--timeout``, ``--token`` (or ``IMAGESERVE_TOKEN``),
``--tls``, ``--ca-cert``, ``--cert``/``--key`` (mutual TLS), ``--tls-server-name``, ``-v``.

Exit codes (:data:`EXIT_CODES`): 0 success; 1 the server answered with an error (unknown model,
invalid image, ...); 2 a usage error (bad flag, unreadable file; nothing was sent); 3 no answer
(server unreachable or unavailable after the retries, or the timeout passed); 4 the fine-tuning job
that was waited for ended FAILED or CANCELLED; 130 interrupted.
Errors are one line on stderr, with the server's message and no traceback.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from api_types.results import ClassifyResult, FeaturesResult, ModelStatus, ServerInfo
from client import cli_jobs
from client.base import DEFAULT_CLASSIFIER, DEFAULT_FEATURE_MODEL, DEFAULT_TOP_K
from client.cli_output import print_json, table
from client.errors import DeadlineExceeded, ImageServeError, InvalidImage, Unavailable
from client.options import DEFAULT_ADDRESS
from client.sync import ModelClient

EXIT_OK, EXIT_SERVER_ERROR, EXIT_USAGE, EXIT_NO_ANSWER, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
EXIT_JOB_FAILED = cli_jobs.EXIT_JOB_FAILED

#: Exit code -> meaning (shown by ``--help``).
EXIT_CODES = {
    EXIT_OK: "success",
    EXIT_SERVER_ERROR: "the server answered with an error (unknown model, invalid image, ...)",
    EXIT_USAGE: "usage error: bad arguments or an unreadable image file (nothing was sent)",
    EXIT_NO_ANSWER: "no answer: server unreachable or unavailable after retries, or timeout",
    EXIT_JOB_FAILED: "the fine-tuning job waited for ended FAILED or CANCELLED (fine-tune, job --wait)",
    EXIT_INTERRUPTED: "interrupted",
}

ADDRESS_ENV = "IMAGESERVE_ADDRESS"
TOKEN_ENV = "IMAGESERVE_TOKEN"
DEFAULT_TIMEOUT_S = 30.0


def _common_options(parser: argparse.ArgumentParser) -> None:
    # SUPPRESS: a value given before the command is not overwritten by the command's default.
    group = parser.add_argument_group("connection")
    group.add_argument(
        "--address",
        default=argparse.SUPPRESS,
        help=f"server host:port (default: ${ADDRESS_ENV} or {DEFAULT_ADDRESS})",
    )
    group.add_argument(
        "--timeout",
        type=float,
        default=argparse.SUPPRESS,
        help=f"seconds for the whole call, retries included (default: {DEFAULT_TIMEOUT_S:g})",
    )
    group.add_argument("--token", default=argparse.SUPPRESS, help=f"bearer token (default: ${TOKEN_ENV})")
    group.add_argument(
        "--tls", action="store_true", default=argparse.SUPPRESS, help="speak TLS (system trusted roots)"
    )
    group.add_argument(
        "--ca-cert",
        type=Path,
        default=argparse.SUPPRESS,
        help="PEM CA bundle of the server certificate (implies --tls)",
    )
    group.add_argument(
        "--cert",
        type=Path,
        default=argparse.SUPPRESS,
        help="PEM client certificate, for mutual TLS (with --key)",
    )
    group.add_argument("--key", type=Path, default=argparse.SUPPRESS, help="PEM private key of --cert")
    group.add_argument(
        "--tls-server-name", default=argparse.SUPPRESS, help="name to check the server certificate against"
    )
    group.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="log retries")


def _model_options(parser: argparse.ArgumentParser, default_model: str) -> None:
    parser.add_argument(
        "images", nargs="+", metavar="IMAGE", help="image files (JPEG, PNG, GIF, BMP, WebP); - reads stdin"
    )
    parser.add_argument("--model", default=default_model, help=f"model name (default: {default_model})")
    which = parser.add_mutually_exclusive_group()
    which.add_argument(
        "--version", type=int, help="an explicit model version (default: the model's default version)"
    )
    which.add_argument("--label", help="a version label, e.g. stable")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def build_parser() -> argparse.ArgumentParser:
    epilog = "exit codes:\n" + "\n".join(f"  {code:<4} {meaning}" for code, meaning in EXIT_CODES.items())
    parser = argparse.ArgumentParser(
        prog="python -m client",
        description="Call an imageserve server: classify images, extract features, list models, fine-tune.",
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _common_options(parser)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    classify = commands.add_parser(
        "classify",
        help="top-k classes of each image",
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _model_options(classify, DEFAULT_CLASSIFIER)
    classify.add_argument(
        "--top-k", type=int, default=DEFAULT_TOP_K, help=f"classes per image (default: {DEFAULT_TOP_K})"
    )
    _common_options(classify)

    features = commands.add_parser(
        "features",
        help="a feature vector per image",
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _model_options(features, DEFAULT_FEATURE_MODEL)
    features.add_argument("--out", type=Path, help="save the float32 [N, D] array to this .npy file")
    _common_options(features)

    models = commands.add_parser("models", help="every model, its versions and their states")
    models.add_argument("--json", action="store_true", help="print JSON instead of a table")
    _common_options(models)

    status = commands.add_parser("status", help="one model's versions, labels and metadata")
    status.add_argument("name", help="model name")
    status.add_argument("--json", action="store_true", help="print JSON instead of text")
    _common_options(status)

    info = commands.add_parser("info", help="the server's version and limits")
    info.add_argument("--json", action="store_true", help="print JSON instead of text")
    _common_options(info)

    cli_jobs.add_commands(commands, _common_options, epilog)
    return parser


def _client(args: argparse.Namespace) -> ModelClient:
    return ModelClient(
        getattr(args, "address", None) or os.environ.get(ADDRESS_ENV) or DEFAULT_ADDRESS,
        timeout=getattr(args, "timeout", DEFAULT_TIMEOUT_S),
        token=getattr(args, "token", None) or os.environ.get(TOKEN_ENV) or None,
        tls=getattr(args, "tls", False),
        root_certificates=getattr(args, "ca_cert", None),
        client_certificate=getattr(args, "cert", None),
        client_key=getattr(args, "key", None),
        tls_server_name=getattr(args, "tls_server_name", None),
    )


def _read_images(paths: Sequence[str]) -> list[bytes]:
    return [sys.stdin.buffer.read() if path == "-" else Path(path).read_bytes() for path in paths]


# --- commands ------------------------------------------------------------------------------------


def _classify(client: ModelClient, args: argparse.Namespace, out: TextIO) -> None:
    result: ClassifyResult = client.classify(
        _read_images(args.images), args.model, version=args.version, label=args.label, top_k=args.top_k
    )
    if args.json:
        print_json(
            {
                "model": result.model,
                "version": result.version,
                "results": [
                    {
                        "image": name,
                        "predictions": [
                            {"class_id": p.class_id, "label": p.label, "score": p.score} for p in predictions
                        ],
                    }
                    for name, predictions in zip(args.images, result, strict=True)
                ],
            },
            out,
        )
        return
    rows = [
        (name if rank == 1 else "", rank, p.class_id, f"{p.score:.4f}", p.label)
        for name, predictions in zip(args.images, result, strict=True)
        for rank, p in enumerate(predictions, 1)
    ]
    table(("image", "rank", "class", "score", "label"), rows, out)
    print(f"answered by {result.model} v{result.version}", file=out)


def _features(client: ModelClient, args: argparse.Namespace, out: TextIO) -> None:
    result: FeaturesResult = client.extract_features(
        _read_images(args.images), args.model, version=args.version, label=args.label
    )
    if args.out is not None:
        np.save(args.out, result.features)
    if args.json:
        print_json(
            {
                "model": result.model,
                "version": result.version,
                "shape": list(result.features.shape),
                "out": str(args.out) if args.out is not None else None,
            },
            out,
        )
        return
    rows, dimension = len(result), result.dimension
    print(f"features: {rows} x {dimension} float32, answered by {result.model} v{result.version}", file=out)
    if args.out is not None:
        print(f"saved to {args.out}", file=out)


def _status_json(status: ModelStatus) -> dict[str, Any]:
    versions = []
    for version in status.versions:
        entry: dict[str, Any] = {
            "version": version.version,
            "state": version.state.name,
            "error": version.error,
        }
        if version.metadata is not None:
            metadata = version.metadata
            entry["metadata"] = {
                "input_size": metadata.input_size,
                "num_classes": metadata.num_classes,
                "feature_dim": metadata.feature_dim,
                "signature_names": metadata.signature_names,
                "preprocessing": metadata.preprocessing,
                "source": metadata.source,
                "created_at": metadata.created_at.isoformat() if metadata.created_at else None,
            }
        entry["stats"] = vars(version.stats)
        versions.append(entry)
    return {
        "name": status.name,
        "default_version": status.default_version,
        "version_labels": status.version_labels,
        "versions": versions,
    }


def _models_table(models: Sequence[ModelStatus], out: TextIO) -> None:
    rows = []
    for model in models:
        labels_of: dict[int, list[str]] = {}
        for label, number in sorted(model.version_labels.items()):
            labels_of.setdefault(number, []).append(label)
        for version in model.versions or []:
            metadata = version.metadata
            rows.append(
                (
                    model.name,
                    version.version,
                    version.state.name,
                    "*" if version.version == model.default_version else "",
                    ",".join(labels_of.get(version.version, [])),
                    metadata.input_size if metadata else "",
                    metadata.num_classes if metadata else "",
                    metadata.feature_dim if metadata else "",
                    version.error,
                )
            )
    if not rows:
        print("no models", file=out)
        return
    table(
        ("model", "version", "state", "default", "labels", "input", "classes", "features", "error"), rows, out
    )


def _models(client: ModelClient, args: argparse.Namespace, out: TextIO) -> None:
    models = client.list_models()
    if args.json:
        print_json([_status_json(model) for model in models], out)
    else:
        _models_table(models, out)


def _status(client: ModelClient, args: argparse.Namespace, out: TextIO) -> None:
    status = client.model_status(args.name)
    if args.json:
        print_json(_status_json(status), out)
        return
    _models_table([status], out)
    for version in status.versions:
        if version.metadata is not None:
            metadata, stats = version.metadata, version.stats
            print(
                f"v{version.version}: {metadata.source or 'unknown source'}; "
                f"preprocessing {metadata.preprocessing}; signatures {', '.join(metadata.signature_names)}; "
                f"{stats.requests} requests, {stats.images} images, {stats.batches} batches",
                file=out,
            )


def _info(client: ModelClient, args: argparse.Namespace, out: TextIO) -> None:
    info: ServerInfo = client.server_info()
    if args.json:
        print_json(vars(info), out)
        return
    for key, value in vars(info).items():
        print(f"{key}: {value}", file=out)


#: Command -> handler; a handler may return an exit code (None: success).
COMMANDS: dict[str, Callable[[ModelClient, argparse.Namespace, TextIO], int | None]] = {
    "classify": _classify,
    "features": _features,
    "models": _models,
    "status": _status,
    "info": _info,
    **cli_jobs.COMMANDS,
}


def _describe(error: ImageServeError, args: argparse.Namespace, address: str) -> str:
    if isinstance(error, InvalidImage) and 0 <= error.index < len(getattr(args, "images", [])):
        return f"{args.images[error.index]} (image {error.index}): {error.reason}"
    message = f"{error.code.name}: {error}"
    if isinstance(error, Unavailable):
        message += f"\nhint: is the server running at {address}? (--address or ${ADDRESS_ENV})"
    return message


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    """Run the CLI; returns the exit code (see :data:`EXIT_CODES`)."""
    out = sys.stdout if out is None else out
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if getattr(args, "verbose", False) else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        client = _client(args)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        with client:
            code = COMMANDS[args.command](client, args, out)
    except (Unavailable, DeadlineExceeded) as exc:
        print(f"error: {_describe(exc, args, client.address)}", file=sys.stderr)
        return EXIT_NO_ANSWER
    except ImageServeError as exc:
        print(f"error: {_describe(exc, args, client.address)}", file=sys.stderr)
        return EXIT_SERVER_ERROR
    except OSError as exc:
        print(f"error: {exc.filename or 'input'}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_USAGE
    except (TypeError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    return EXIT_OK if code is None else code
