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
