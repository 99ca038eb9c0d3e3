"""Real photos and encodings shared by the test suites (scikit-image ships the photos)."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image


def photo(name: str) -> np.ndarray:
    """A real RGB photo from scikit-image: ``chelsea``, ``coffee``, ``astronaut``, ..."""
    import skimage.data

    return np.ascontiguousarray(getattr(skimage.data, name)()[..., :3])


def encode(pixels: np.ndarray | Image.Image, fmt: str = "PNG", **options) -> bytes:
    image = pixels if isinstance(pixels, Image.Image) else Image.fromarray(pixels)
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def decode_rgb(data: bytes) -> np.ndarray:
    """The reference decoder of the fidelity tests: PIL, converted to RGB."""
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def png_claiming_size(width: int, height: int) -> bytes:
    """A ~100-byte PNG whose header declares ``width`` x ``height`` pixels (a decompression bomb)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data))
            + kind
            + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + chunk(b"IEND", b"")
    )


#: Real photos bundled with installed packages and the ImageNet classes (Keras index order) each may be
#: given: any class of the right kind counts. Measured top-1 of EfficientNet-Lite0 in docs/models.md.
LABELLED_PHOTOS = {
    "chelsea": set(range(281, 286)),  # tabby, tiger cat, Persian, Siamese, Egyptian cat
    "coffee": {967, 968, 504},  # espresso, cup, coffee mug
    "china": {442, 832, 663, 698, 497, 668},  # bell cote, stupa, monastery, palace, church, mosque
    "flower": {985},  # daisy
}


def labelled_photo(name: str) -> np.ndarray:
    """A photo of :data:`LABELLED_PHOTOS`: scikit-image's (``chelsea``, ``coffee``) or scikit-learn's."""
    if name in ("china", "flower"):
        from sklearn.datasets import load_sample_image

        return load_sample_image(f"{name}.jpg")
    return photo(name)
