"""Versioned, atomic publication of SavedModels into ``<root>/<name>/<version>/``.

A version is written into a hidden staging directory next to its final place (same filesystem),
flushed to disk, reloaded and exercised through every signature, and only then renamed into place
with ``renameat2(RENAME_NOREPLACE)``. A watcher polling the root therefore sees either no version or
a complete one, and an existing version is never overwritten. The exporter and the fine-tuning
worker both publish through :func:`save_and_publish`.

To an object-store root (``s3://...``) the version is staged and verified locally the same way, then
uploaded with its :data:`PUBLISHED_MARKER` last (:mod:`exporter.object_store`).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import io
import json
import os
import re
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from PIL import Image

from exporter.errors import UserError, VerificationFailed
from exporter.progress import Progress
from exporter.roots import is_url
from model_format.layout import PUBLISHED_MARKER, STAGING_PREFIX, existing_versions
from model_format.manifest import MANIFEST_FILE


class VersionExists(UserError):
    """The requested version directory already exists; versions are immutable."""


class PublishFailed(Exception):
    """Writing a version failed (disk full, permission denied, ...); nothing was published."""


def _write_error(exc: Exception) -> str:
    """ "No space left on device" out of an OSError or a TensorFlow SaveV2 error."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    message = (getattr(exc, "message", None) or str(exc)).strip().splitlines()[-1]
    message = re.sub(r"\s*\[Op:[^\]]*\]$", "", message)
    return message.rsplit("; ", 1)[-1]


def choose_version(model_dir: Path, requested: int | None) -> int:
    """The requested version if it is free, else the next integer after the highest existing one."""
    if requested is None:
        versions = existing_versions(model_dir)
        return versions[-1] + 1 if versions else 1
    if requested < 1:
        raise UserError(f"--version must be a positive integer, got {requested}")
    if (model_dir / str(requested)).exists():
        raise VersionExists(f"{model_dir / str(requested)} already exists; versions are never overwritten")
    return requested


def _fsync_tree(root: Path) -> None:
    for dirpath, _dirnames, filenames in os.walk(root):
        for filename in filenames:
            fd = os.open(os.path.join(dirpath, filename), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        _fsync_dir(Path(dirpath))


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


_RENAME_NOREPLACE = 1
_AT_FDCWD = -100
_libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
_renameat2 = getattr(_libc, "renameat2", None)


def rename_no_replace(src: Path, dst: Path) -> None:
    """Atomically rename ``src`` to ``dst``; fail with :class:`VersionExists` if ``dst`` exists."""
    if _renameat2 is not None:
        result = _renameat2(_AT_FDCWD, os.fsencode(src), _AT_FDCWD, os.fsencode(dst), _RENAME_NOREPLACE)
        if result == 0:
            return
        err = ctypes.get_errno()
        if err == errno.EEXIST:
            raise VersionExists(f"{dst} already exists; versions are never overwritten")
        if err not in (errno.ENOSYS, errno.EINVAL):  # filesystems without RENAME_NOREPLACE fall through
            raise OSError(err, os.strerror(err), str(dst))
    if dst.exists():
        raise VersionExists(f"{dst} already exists; versions are never overwritten")
    os.rename(src, dst)


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

    from exporter import signatures as sig

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
    from exporter.labels import read_labels_file

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
    count = len(read_labels_file(written))
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

    ``model_dir`` may be a URL (``s3://bucket/prefix/<name>``): see :func:`_publish_to_object_store`.

    ``extra_files`` (plain file name -> content, e.g. a fine-tuned version's metrics.json and plots)
    are written into the version directory before it is verified and renamed into place.
    Returns the published path, its version, the manifest (with ``version`` filled in) and the
    verified reload (its asset paths point into the staging directory: use ``path`` for files).
    Nothing is left behind on failure.
    """
    import tensorflow as tf

    if is_url(model_dir):
        return _publish_to_object_store(
            module, signatures, model_dir, version, manifest, progress, extra_files
        )
    try:
        model_dir.mkdir(parents=True, exist_ok=True)
        version = choose_version(model_dir, version)
        staging = Path(tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{version}-{os.getpid()}-", dir=model_dir))
        os.chmod(
            staging, 0o777 & ~_current_umask()
        )  # mkdtemp makes it 0700; a published version is world-readable
    except OSError as exc:
        raise PublishFailed(f"cannot write under {model_dir}: {exc.strerror}") from None
    manifest = {**manifest, "version": version}
    try:
        with progress.step(f"writing SavedModel to {staging.name}"):
            try:
                tf.saved_model.save(module, str(staging), signatures=signatures)
                (staging / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
                for name, content in (extra_files or {}).items():
                    target = staging / name
                    if "/" in name or name.startswith(".") or target.exists():
                        raise ValueError(f"extra file {name!r}: must be a new plain file name in the version")
                    target.write_bytes(content)
            except (OSError, tf.errors.OpError) as exc:
                raise PublishFailed(
                    f"could not write version {version} under {model_dir}: {_write_error(exc)}"
                ) from None
        with progress.step("verifying: reload and run one image through every signature"):
            shapes, loaded = verify_saved_model(staging, manifest, _labels_source(module))
            try:
                _fsync_tree(staging)
            except OSError as exc:
                raise PublishFailed(f"could not flush version {version} to disk: {exc.strerror}") from None
        for name, shape in sorted(shapes.items()):
            progress.note(f"  {name}: {shape}")
        final = model_dir / str(version)
        rename_no_replace(staging, final)
        _fsync_dir(model_dir)
        if announce:
            progress.note(f"published {final}")
        return Published(final, version, manifest, loaded)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def _publish_to_object_store(
    module: Any,
    signatures: dict[str, Any],
    model_url: str,
    version: int | None,
    manifest: dict[str, Any],
    progress: Progress,
    extra_files: Mapping[str, bytes] | None,
) -> Published:
    """Stage and verify the version in a local scratch directory (as for a local root), then upload
    it and write its completion marker last; the returned path is the version's URL."""
    from exporter import object_store

    root, name = model_url.rsplit("/", 1)
    version = object_store.choose_remote_version(root, name, version)
    with tempfile.TemporaryDirectory(prefix="imageserve-publish-") as scratch:
        staged = save_and_publish(
            module, signatures, Path(scratch) / name, version, manifest, progress, extra_files, announce=False
        )
        with progress.step(f"uploading to {model_url}/{version}, {PUBLISHED_MARKER} last"):
            try:
                url = object_store.upload_version(Path(staged.path), root, name, version)
            except OSError as exc:  # s3fs maps S3 errors (access denied, no such bucket) to OSError
                raise PublishFailed(f"could not upload version {version} to {model_url}: {exc}") from None
    progress.note(f"published {url}")
    return Published(url, version, staged.manifest, staged.loaded)


def _labels_source(module: Any) -> Path | None:
    asset = getattr(module, "labels_file", None)
    return Path(asset.asset_path.numpy().decode()) if asset is not None else None


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
