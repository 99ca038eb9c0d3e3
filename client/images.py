"""The images a caller passes, turned into the encoded bytes the API carries.

Accepted, per image:

- ``str`` or ``os.PathLike`` (``pathlib.Path``): a file, sent as it is (JPEG, PNG, GIF, BMP, WebP);
- ``bytes``, ``bytearray`` or ``memoryview``: an encoded image, sent as it is;
- a PIL image: its pixels, PNG-encoded (lossless). RGB, RGBA and L are kept; other modes are
  converted to RGB (RGBA when they have transparency). EXIF orientation is not applied: the pixels
  are sent as they are in memory;
- a ``uint8`` numpy array: H×W (grayscale), H×W×1, H×W×3 (RGB) or H×W×4 (RGBA), PNG-encoded. A
  four-dimensional N×H×W×C array is N images.

The server turns grayscale into RGB and ignores alpha, as it does for image files.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterable, Iterator

import numpy as np
from PIL import Image

__all__ = [
    "ImageInput",
    "Images",
    "as_image_list",
    "each_image",
    "check_image",
    "encode_image",
    "iter_encoded",
]

#: One image, in any of the accepted forms.
ImageInput = str | os.PathLike[str] | bytes | bytearray | memoryview | Image.Image | np.ndarray
#: One image, or a list (any iterable) of them, or an N×H×W×C array.
Images = ImageInput | Iterable[ImageInput]

_ENCODED = (bytes, bytearray, memoryview)
_SINGLE = (str, os.PathLike, *_ENCODED, Image.Image)
_CHANNELS_TO_MODE = {1: "L", 3: "RGB", 4: "RGBA"}
_KEPT_MODES = ("RGB", "RGBA", "L")
# zlib level 1: lossless like any level, several times faster than the default on photos.
_PNG_COMPRESS_LEVEL = 1


def _check_array(index: int, array: np.ndarray) -> None:
    if array.dtype != np.uint8:
        raise ValueError(
            f"image {index}: a {array.dtype} array; pass uint8 pixels (0-255), "
            "e.g. (x * 255).round().astype(np.uint8) for floats in [0, 1]"
        )
    shape = array.shape
    if not (array.ndim == 2 or (array.ndim == 3 and shape[2] in _CHANNELS_TO_MODE)):
        raise ValueError(f"image {index}: an array of shape {shape}; expected H×W, H×W×1, H×W×3 or H×W×4")
    if shape[0] == 0 or shape[1] == 0:
        raise ValueError(f"image {index}: an array of shape {shape} has no pixels")


def check_image(index: int, image: object) -> None:
    """TypeError or ValueError naming image ``index`` when it is not an accepted input."""
    if isinstance(image, np.ndarray):
        _check_array(index, image)
    elif not isinstance(image, _SINGLE):
        raise TypeError(
            f"image {index}: got {type(image).__name__}; expected a file path, encoded bytes, "
            "a PIL image or a uint8 numpy array"
        )


def as_image_list(images: Images) -> list[ImageInput]:
    """One image or many, as a list of single images, each checked for its type (not read yet).

    Raises ``TypeError`` for an unsupported type, ``ValueError`` for an array that is not uint8
    pixels or for an empty list.
    """
    if isinstance(images, _SINGLE):
        items: list[ImageInput] = [images]
    elif isinstance(images, np.ndarray):
        items = list(images) if images.ndim == 4 else [images]
    else:
        try:
            items = list(images)
        except TypeError:
            raise TypeError(
                f"got {type(images).__name__}; expected an image (path, bytes, PIL image, uint8 array) "
                "or a list of them"
            ) from None
    if not items:
        raise ValueError("no images: pass one image or a non-empty list")
    for index, item in enumerate(items):
        check_image(index, item)
    return items


def each_image(images: Images) -> Iterator[ImageInput]:
    """The single images of ``images``, lazily (an N×H×W×C array is N images); not checked or read."""
    if isinstance(images, _SINGLE) or (isinstance(images, np.ndarray) and images.ndim != 4):
        yield images  # type: ignore[misc]
        return
    try:
        iterator = iter(images)  # type: ignore[arg-type]
    except TypeError:
        raise TypeError(
            f"got {type(images).__name__}; expected an image (path, bytes, PIL image, uint8 array) "
            "or a list of them"
        ) from None
    yield from iterator


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=_PNG_COMPRESS_LEVEL)
    return buffer.getvalue()


def _pil_png(image: Image.Image) -> bytes:
    if image.mode not in _KEPT_MODES:
        has_alpha = "A" in image.mode or "a" in image.mode or "transparency" in image.info
        image = image.convert("RGBA" if has_alpha else "RGB")
    return _png(image)


def _array_png(array: np.ndarray) -> bytes:
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    # uint8 H×W, H×W×3 and H×W×4 arrays become L, RGB and RGBA images.
    return _png(Image.fromarray(np.ascontiguousarray(array)))


def reads_or_encodes(images: Images) -> bool:
    """Whether :func:`encode_image` would read files or encode pixels for ``images`` (work worth a
    thread off an event loop); encoded bytes are sent as they are. Any other iterable counts as work."""
    if isinstance(images, _ENCODED):
        return False
    if isinstance(images, (list, tuple)):
        return not all(isinstance(image, _ENCODED) for image in images)
    return True


def encode_image(image: ImageInput) -> bytes:
    """The encoded bytes to send for one image: files and bytes as they are, pixels as PNG.

    A file that cannot be read raises ``OSError`` (e.g. ``FileNotFoundError``) naming the path.
    """
    if isinstance(image, _ENCODED):
        return bytes(image)
    if isinstance(image, (str, os.PathLike)):
        with open(image, "rb") as file:
            return file.read()
    if isinstance(image, Image.Image):
        return _pil_png(image)
    return _array_png(image)


def iter_encoded(images: list[ImageInput]) -> Iterator[bytes]:
    """Encode lazily, one image at a time, so a long list is never all in memory at once."""
    for image in images:
        yield encode_image(image)
