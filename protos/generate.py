"""Regenerate the Python code (``*_pb2.py``, ``*_pb2_grpc.py``, ``*.pyi``) from ``protos/**/*.proto``.

Run ``python -m protos.generate`` after editing a ``.proto`` file. The proto import root is this
directory, so other languages use the same paths (``imageserve/v1/image_service.proto``); only the
Python import of the generated grpc module is rewritten to live under the ``protos`` package.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

PROTO_ROOT = Path(__file__).resolve().parent
GENERATED_SUFFIXES = ("_pb2.py", "_pb2_grpc.py", "_pb2.pyi")
#: Top-level proto packages under this directory (imports of their modules move under ``protos.``).
PACKAGES = ("imageserve", "inference")
#: Packages whose descriptors go to a pool of their own instead of protobuf's default pool.
# NOTE: the Open Inference Protocol's `inference` package is also compiled into tritonclient and
# other V2 clients; two files defining `inference.ModelInferRequest` in one default pool make the
# second import fail ("duplicate symbol"), e.g. a process holding this server and tritonclient.
PRIVATE_POOL_PACKAGES = ("inference",)


def proto_files(root: Path = PROTO_ROOT) -> list[Path]:
    return sorted(root.rglob("*.proto"))


def generate(output_root: Path = PROTO_ROOT) -> list[Path]:
    """Compile every ``.proto`` under :data:`PROTO_ROOT` into ``output_root``; return the files written."""
    import grpc_tools
    from grpc_tools import protoc

    well_known = Path(grpc_tools.__file__).parent / "_proto"
    sources = [str(p.relative_to(PROTO_ROOT)) for p in proto_files()]
    output_root.mkdir(parents=True, exist_ok=True)
    args = [
        "grpc_tools.protoc",
        f"-I{PROTO_ROOT}",
        f"-I{well_known}",
        f"--python_out={output_root}",
        f"--pyi_out={output_root}",
        f"--grpc_python_out={output_root}",
        *sources,
    ]
    if protoc.main(args) != 0:
        raise RuntimeError(f"protoc failed: {' '.join(args)}")
    written = []
    for source in sources:
        stem = Path(source).with_suffix("")
        package_dir = output_root / stem.parent
        for parent in stem.parents:
            if str(parent) != ".":
                (output_root / parent / "__init__.py").touch(exist_ok=True)
        for suffix in GENERATED_SUFFIXES:
            path = package_dir / f"{stem.name}{suffix}"
            text = path.read_text()
            # `from imageserve.v1 import x_pb2` -> `from protos.imageserve.v1 import x_pb2`
            packages = "|".join(PACKAGES)
            text = re.sub(
                rf"^from ((?:{packages})(?:\.\S+)?) import",
                r"from protos.\1 import",
                text,
                flags=re.MULTILINE,
            )
            if stem.parts[0] in PRIVATE_POOL_PACKAGES and suffix == "_pb2.py":
                text = text.replace(
                    "_descriptor_pool.Default().AddSerializedFile",
                    "_descriptor_pool.DescriptorPool().AddSerializedFile",
                )
            path.write_text(text)
            written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m protos.generate", description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=PROTO_ROOT, help="output root (default: protos/)")
    args = parser.parse_args(argv)
    for path in generate(args.output):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
