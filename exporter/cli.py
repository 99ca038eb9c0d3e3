"""``python -m exporter NAME [options]``: export a catalog or TF Hub model as a new SavedModel version."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from exporter.catalog import DEFAULT_MODELS, format_catalog
from exporter.errors import UserError, WeightsUnavailable
from exporter.spec import ExportSpec, resolve_entry, validate_spec
from graphs import calibration
from graphs.errors import VerificationFailed
from graphs.progress import Progress
from graphs.tensorflow_import import import_tensorflow_quietly
from storage.errors import PublishFailed, StorageError
from storage.roots import as_root, is_url, join, storage_problem

#: Exit codes: 0 published; 1 verification failed (nothing published); 2 a user error;
#: 3 weights or a Hub handle could not be downloaded (no network); 4 writing failed (disk full,
#: permission denied; nothing published).
EXIT_VERIFICATION_FAILED, EXIT_USER_ERROR, EXIT_OFFLINE, EXIT_WRITE_FAILED = 1, 2, 3, 4


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m exporter",
        description=(
            "Export pretrained image models as versioned SavedModels with preprocessing in the signature."
        ),
        epilog="Examples:\n"
        "  python -m exporter vgg16\n"
        "  python -m exporter mobilenet_v2_keras --weights random --input-size 96\n"
        "  python -m exporter my_model --hub-handle https://tfhub.dev/... --input-size 224\n"
        "  python -m exporter --defaults          export the default models if absent\n",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("name", nargs="?", help="catalog name (see --list) or a new name with --hub-handle")
    parser.add_argument("--list", action="store_true", help="print the catalog and exit")
    parser.add_argument(
        "--defaults",
        action="store_true",
        help=f"export the default models ({', '.join(DEFAULT_MODELS)}) unless a version already exists",
    )
    parser.add_argument(
        "--weights",
        default="imagenet",
        help="imagenet (download, default), random (with --seed) or a path to a weights file",
    )
    parser.add_argument(
        "--output",
        type=as_root,
        default=Path("models"),
        help="model root: a directory, or an object store URL such as s3://bucket/prefix (default: models/)",
    )
    parser.add_argument(
        "--version", type=int, help="version number (default: next after the highest existing)"
    )
    parser.add_argument(
        "--input-size", type=int, help="square input side in pixels (default: the model's own)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed for --weights random (default: 0)")
    parser.add_argument(
        "--no-top", action="store_true", help="export without the classification head (features only)"
    )
    parser.add_argument(
        "--no-onnx",
        action="store_true",
        help="do not write the ONNX twin of the network (the server then converts it on first load)",
    )
    parser.add_argument(
        "--calibration",
        metavar="DIR",
        help=f"images (up to {calibration.MAX_IMAGES}, spread over DIR and its subdirectories) kept in the"
        " version for the server's int8 precision: quantization measures on them, its gate compares on them",
    )
    parser.add_argument("--hub-handle", help="TF Hub classifier URL or local SavedModel directory")
    parser.add_argument("--hub-feature-handle", help="TF Hub feature-vector twin (URL or local directory)")
    parser.add_argument(
        "--hub-outputs-probabilities",
        action="store_true",
        help="the Hub classifier already returns probabilities (default: logits, softmax is applied)",
    )
    parser.add_argument("--labels", help="class names, one per line (default: ImageNet by output count)")
    parser.add_argument("-q", "--quiet", action="store_true", help="print only errors and the published path")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.list:
        print(format_catalog())
        return 0
    if not args.name and not args.defaults:
        build_parser().print_usage(sys.stderr)
        print("error: give a model NAME, --defaults or --list", file=sys.stderr)
        return EXIT_USER_ERROR
    if is_url(args.output) and (problem := storage_problem(args.output)):
        print(f"error: --output {problem}", file=sys.stderr)
        return EXIT_USER_ERROR
    names = list(DEFAULT_MODELS) if args.defaults else [args.name]
    specs = [
        ExportSpec(
            name=name,
            weights=args.weights,
            output_dir=args.output,
            version=args.version,
            input_size=args.input_size,
            seed=args.seed,
            include_top=not args.no_top,
            hub_handle=args.hub_handle,
            hub_feature_handle=args.hub_feature_handle,
            hub_outputs_probabilities=args.hub_outputs_probabilities,
            labels_file=args.labels,
            onnx=not args.no_onnx,
            calibration=args.calibration,
        )
        for name in names
    ]
    try:
        for spec in specs:  # every user mistake is reported before TensorFlow loads (seconds)
            validate_spec(resolve_entry(spec), spec)
        if is_url(args.output):
            from storage.object_store import check_writable_root

            check_writable_root(args.output)  # a missing bucket, before building anything
    except (UserError, StorageError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR

    # TensorFlow's C++ logs (CUDA probing on a CPU machine) are noise here; set 0 to see them.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    logging.getLogger("absl").setLevel(logging.ERROR)
    import_tensorflow_quietly()
    from exporter.export import export_model
    from storage.object_store import existing_versions_at

    progress = Progress("exporter", stream=None if args.quiet else sys.stderr)
    try:
        for spec in specs:
            if args.defaults and existing_versions_at(args.output, spec.name):
                progress.note(
                    f"{spec.name}: a version already exists under {join(args.output, spec.name)}, skipping"
                )
                continue
            result = export_model(spec, progress)
            print(result.path)
    except WeightsUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_OFFLINE
    except PublishFailed as exc:
        print(f"error: {exc}; nothing was published", file=sys.stderr)
        return EXIT_WRITE_FAILED
    except (UserError, StorageError) as exc:  # a taken version number, a root this install cannot read
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except VerificationFailed as exc:
        print(f"error: verification failed, nothing was published: {exc}", file=sys.stderr)
        return EXIT_VERIFICATION_FAILED
    return 0
