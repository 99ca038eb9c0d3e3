"""Labelled images to upload as a fine-tuning dataset: a local directory, a mapping, or pairs.

:meth:`~client.ModelClient.upload_dataset` and :meth:`~client.ModelClient.fine_tune` take:

- a **local directory** (``str`` or ``os.PathLike``) in the Keras ``image_dataset_from_directory``
  layout: one sub-directory per class, named after the class, holding its images (deeper
  sub-directories are read too). Files whose extension is not ``.jpg .jpeg .png .gif .bmp .webp``
  are skipped (the server's rule for ``data_dir``), as are hidden files and directories. Files are
  sent as they are, with their path relative to the directory as the name the server's messages use;
- a **mapping** ``{label: images}``, each value one image or a list of them in any form
  :mod:`client.images` accepts (path, bytes, PIL image, uint8 array; an N×H×W×C array is N images);
- an **iterable of** ``(label, image)`` **pairs**, e.g. a generator.

Images are read and encoded one at a time, right before their message is sent. A directory, a list
of pairs and a mapping of lists can be read again, so an upload of them is retried after UNAVAILABLE;
a generator can be read once, so its upload is retried only if it failed before the first image.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

import numpy as np

from client.images import ImageInput, Images, check_image, each_image

__all__ = ["DatasetImages", "DatasetSource", "LabeledImage", "IMAGE_EXTENSIONS", "scan_directory"]

log = logging.getLogger("client")

#: File name extensions read from a directory, as the server reads a ``data_dir``.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".gif", ".bmp", ".webp")

#: What can be uploaded: a directory, ``{label: images}``, or ``(label, image)`` pairs.
DatasetImages = Union[str, "os.PathLike[str]", Mapping[str, Images], Iterable[tuple[str, ImageInput]]]


@dataclass(frozen=True)
class LabeledImage:
    """One image to upload, with its class label and the name the server's messages will use."""

    label: str
    image: ImageInput
    filename: str


def _one_pass(values: object) -> bool:
    """Whether iterating ``values`` consumes it (a generator or another iterator)."""
    return isinstance(values, Iterator)


def scan_directory(directory: Path) -> list[LabeledImage]:
    """The images of a local ``directory/<class>/...`` tree, sorted by class then path.

    ``ValueError`` (nothing is sent) when the directory is missing, has no class sub-directories or
    no images at all.
    """
    if not directory.is_dir():
        raise ValueError(
            f"{directory} is not a directory: pass a local directory with one sub-directory per class "
            "(it is uploaded), or data_dir='...' for a directory under the server's data root"
        )
    class_dirs = sorted(p for p in directory.iterdir() if not p.name.startswith(".") and p.is_dir())
    if not class_dirs:
        raise ValueError(
            f"{directory} has no class sub-directories: expected one directory per class, "
            f"e.g. {directory / 'cat' / '1.jpg'} and {directory / 'dog' / '2.jpg'}"
        )
    images: list[LabeledImage] = []
    skipped = 0
    for class_dir in class_dirs:
        found = 0
        for dirpath, dirnames, filenames in os.walk(class_dir):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for filename in sorted(filenames):
                path = Path(dirpath) / filename
                if filename.startswith(".") or path.suffix.lower() not in IMAGE_EXTENSIONS:
                    skipped += 1
                    continue
                shown = path.relative_to(directory).as_posix()
                images.append(LabeledImage(class_dir.name, path, shown))
                found += 1
        if not found:
            log.warning(
                "%s: no images in class directory %r; that class is left out", directory, class_dir.name
            )
    if skipped:
        log.info(
            "%s: skipped %d files that are not images (%s)", directory, skipped, " ".join(IMAGE_EXTENSIONS)
        )
    if not images:
        raise ValueError(f"{directory} has no images ({' '.join(IMAGE_EXTENSIONS)}) in its class directories")
    return images


class DatasetSource:
    """Labelled images to upload, checked for their types up front where that costs nothing, and
    iterated lazily (see the module's docstring for what is accepted)."""

    def __init__(self, images: DatasetImages, name: str | None = None) -> None:
        self._files: list[LabeledImage] | None = None
        self._mapping: Mapping[str, Images] | None = None
        self._pairs: Iterable[Any] | None = None
        #: Sent as the dataset's name (None: the server names it).
        self.name: str | None = name
        #: Whether the images can be read again, for a retry of the upload.
        self.replayable: bool
        if isinstance(images, (str, os.PathLike)):
            directory = Path(images)
            self._files = scan_directory(directory)
            self.name = name if name is not None else directory.resolve().name
            self.replayable = True
        elif isinstance(images, Mapping):
            if not images:
                raise ValueError("no images: the mapping of label -> images is empty")
            for label in images:
                _check_label(label, f"key {label!r}")
            self._mapping = images
            self.replayable = not any(_one_pass(values) for values in images.values())
        elif isinstance(images, Iterable) and not isinstance(
            images, (bytes, bytearray, memoryview, np.ndarray)
        ):
            if isinstance(images, Sequence) and not images:
                raise ValueError("no images: the list of (label, image) pairs is empty")
            self._pairs = images
            self.replayable = not _one_pass(images)
        else:
            raise TypeError(
                f"got {type(images).__name__}; expected a local directory, a mapping of label -> images, "
                "or an iterable of (label, image) pairs"
            )

    @property
    def size(self) -> int | None:
        """Number of images, when known without reading them (a directory)."""
        return len(self._files) if self._files is not None else None

    def __iter__(self) -> Iterator[LabeledImage]:
        if self._files is not None:
            yield from self._files
        elif self._mapping is not None:
            index = 0
            for label, values in self._mapping.items():
                for image in each_image(values):
                    yield _labeled(index, label, image)
                    index += 1
        else:
            assert self._pairs is not None
            for index, pair in enumerate(self._pairs):
                if not (isinstance(pair, tuple) and len(pair) == 2):
                    raise TypeError(
                        f"item {index}: expected a (label, image) pair, got {type(pair).__name__}"
                    )
                label, image = pair
                _check_label(label, f"item {index}")
                yield _labeled(index, label, image)


def _check_label(label: object, where: str) -> None:
    if not isinstance(label, str):
        raise TypeError(f"{where}: a label must be a str (the class name), got {type(label).__name__}")


def _labeled(index: int, label: str, image: ImageInput) -> LabeledImage:
    check_image(index, image)
    filename = Path(image).name if isinstance(image, (str, os.PathLike)) else ""
    return LabeledImage(label, image, filename)
