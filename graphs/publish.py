"""Write a module as a SavedModel version, check it, and publish it atomically.

:func:`save_and_publish` writes the module into a staging directory (:func:`storage.publish.staging`),
reloads it and runs one image through every signature (:func:`verify_saved_model`), and only then
publishes it: renamed into ``<root>/<name>/<version>/`` on a local root, uploaded with its completion
marker last to an object store. The exporter and the fine-tuning worker both publish through it.
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from PIL import Image

from graphs.errors import VerificationFailed
from graphs.progress import Progress
from model_format.labels import parse_labels
from model_format.layout import PUBLISHED_MARKER
from model_format.manifest import MANIFEST_FILE
from storage.errors import PublishFailed
from storage.publish import staging
from storage.roots import is_url


def _write_error(exc: Exception) -> str:
    """ "No space left on device" out of an OSError or a TensorFlow SaveV2 error."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    message = (getattr(exc, "message", None) or str(exc)).strip().splitlines()[-1]
    message = re.sub(r"\s*\[Op:[^\]]*\]$", "", message)
    return message.rsplit("; ", 1)[-1]


def sample_png(size: tuple[int, int] = (37, 53)) -> bytes:
    """A small deterministic RGB test image (a colour gradient), PNG-encoded."""
    height, width = size
    y, x = np.mgrid[0:height, 0:width]
    pixels = np.stack([x * 255 // width, y * 255 // height, (x + y) * 255 // (width + height)], axis=-1)
    buffer = io.BytesIO()
    Image.fromarray(pixels.astype(np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def verify_saved_model(
    path: Path, manifest: dict[str, Any], labels_source: Path | None = None
) -> tuple[dict[str, list[int]], Any]:
    """Reload ``path``, run one image through every signature and check its assets (:func:`check_assets`);
    raise VerificationFailed if anything is wrong. ``labels_source``: the labels file the module was given.

    Returns the output shapes by ``signature/output`` and the reloaded SavedModel (already warm).
    """
    import tensorflow as tf

    from graphs import signatures as sig

    try:
        loaded = tf.saved_model.load(str(path))
    except Exception as exc:  # any load failure means "do not publish"; the message says why
        raise VerificationFailed(f"the SavedModel at {path} does not load: {exc}") from exc
    image = sample_png()
    pixels = np.asarray(Image.open(io.BytesIO(image)).convert("RGB"))
    shapes = {}
    for name in manifest["signatures"]:
        if name not in loaded.signatures:
            raise VerificationFailed(f"signature {name!r} is missing from {path}")
        fn = loaded.signatures[name]
        try:
            if sig.PIXELS_INPUT in fn.structured_input_signature[1]:
                outputs = fn(**{sig.PIXELS_INPUT: tf.constant(pixels[None])})
            else:
                outputs = fn(**{sig.IMAGES_INPUT: tf.constant([image, image])})
        except Exception as exc:
            raise VerificationFailed(f"signature {name!r} failed on a test image: {exc}") from exc
        for output_name, tensor in outputs.items():
            values = tensor.numpy()
            if not np.all(np.isfinite(values)):
                raise VerificationFailed(f"signature {name!r} output {output_name!r} is not finite")
            if output_name == sig.PROBABILITIES_OUTPUT:
                sums = values.sum(axis=-1)
                if not np.allclose(sums, 1.0, atol=1e-3):
                    raise VerificationFailed(f"signature {name!r}: probabilities sum to {sums}, not 1")
            shapes[f"{name}/{output_name}"] = list(values.shape)
    check_assets(path, manifest, loaded, shapes, labels_source)
    return shapes, loaded


_COLLIDED_ASSET = re.compile(r"(.+)_\d+")


def check_assets(
    path: Path,
    manifest: dict[str, Any],
    loaded: Any,
    shapes: dict[str, list[int]],
    labels_source: Path | None,
) -> None:
    """The version's assets are its own: the labels file the manifest names is the one the module
    wrote (same bytes, the module's asset points at it), one label per output, and no two assets
    collided (TensorFlow saves a second ``labels.txt``, e.g. a tracked base model's, as ``labels.txt_1``).
    """
    assets_dir = path / "assets"
    names = sorted(p.name for p in assets_dir.iterdir()) if assets_dir.is_dir() else []
    for name in names:
        match = _COLLIDED_ASSET.fullmatch(name)
        if match and match.group(1) in names:
            raise VerificationFailed(
                f"assets {match.group(1)!r} and {name!r} collide: an object tracked by the module (a base "
                "model?) carries an asset of the same name"
            )
    labels_file = manifest.get("labels_file")
    widths = {shape[-1] for key, shape in shapes.items() if key.endswith("/probabilities")}
    if labels_file is None:
        if widths:
            raise VerificationFailed("the version classifies but its manifest names no labels file")
        return
    written = path / labels_file
    if not written.is_file():
        raise VerificationFailed(f"the manifest names {labels_file!r}, which the version does not hold")
    if labels_source is not None and written.read_bytes() != labels_source.read_bytes():
        raise VerificationFailed(f"{labels_file!r} is not the labels file the module was given")
    asset = getattr(loaded, "labels_file", None)
    if asset is not None and Path(asset.asset_path.numpy().decode()).resolve() != written.resolve():
        raise VerificationFailed(
            f"the module's labels asset is {Path(asset.asset_path.numpy().decode()).name!r}, "
            f"not {labels_file!r} as the manifest says"
        )
    count = len(parse_labels(written.read_text(encoding="utf-8")))
    expected = {manifest.get("num_classes"), *widths} - {None}
    if expected != {count}:
        raise VerificationFailed(
            f"{count} labels in {labels_file!r}, but the manifest says {manifest.get('num_classes')} classes "
            f"and the classifier outputs {sorted(widths)}"
        )


class Published(NamedTuple):
    """A published version: where, which number, its manifest, and the verified reload (warm)."""

    path: Path | str  # a URL when published to an object store
    version: int
    manifest: dict[str, Any]
    loaded: Any


def save_and_publish(
    module: Any,
    signatures: dict[str, Any],
    model_dir: Path | str,
    version: int | None,
    manifest: dict[str, Any],
    progress: Progress,
    extra_files: Mapping[str, bytes] | None = None,
    announce: bool = True,
) -> Published:
    """Write ``module`` as version ``version`` (or the next one) of ``model_dir``, atomically.

    ``model_dir`` may be a URL (``s3://bucket/prefix/<name>``): the version is staged and verified
    locally, then uploaded with its completion marker last.

    ``extra_files`` (plain file name -> content, e.g. a fine-tuned version's metrics.json and plots)
    are written into the version directory before it is verified and published.
    Returns the published path (or URL), its version, the manifest (with ``version`` filled in) and
    the verified reload (its asset paths point into the staging directory: use ``path`` for files).
    Nothing is left behind on failure.
    """
    import tensorflow as tf

    with staging(model_dir, version) as staged:
        version = staged.version
        manifest = {**manifest, "version": version}
        where = staged.directory
        with progress.step(f"writing SavedModel to {where.name}"):
            try:
                tf.saved_model.save(module, str(where), signatures=signatures)
                (where / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
                for name, content in (extra_files or {}).items():
                    target = where / name
                    if "/" in name or name.startswith(".") or target.exists():
                        raise ValueError(f"extra file {name!r}: must be a new plain file name in the version")
                    target.write_bytes(content)
            except (OSError, tf.errors.OpError) as exc:
                raise PublishFailed(
                    f"could not write version {version} under {model_dir}: {_write_error(exc)}"
                ) from None
        with progress.step("verifying: reload and run one image through every signature"):
            shapes, loaded = verify_saved_model(where, manifest, _labels_source(module))
        for name, shape in sorted(shapes.items()):
            progress.note(f"  {name}: {shape}")
        if is_url(model_dir):
            with progress.step(f"uploading to {model_dir}/{version}, {PUBLISHED_MARKER} last"):
                final = staged.publish()
        else:
            final = staged.publish()
    if announce:
        progress.note(f"published {final}")
    return Published(final, version, manifest, loaded)


def _labels_source(module: Any) -> Path | None:
    asset = getattr(module, "labels_file", None)
    return Path(asset.asset_path.numpy().decode()) if asset is not None else None
