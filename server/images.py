"""Checks on encoded images before they reach the model, from their headers only.

The SavedModel signature decodes images in the graph. Before that, the server reads each header
with Pillow (no pixel decoding) to refuse, with a message naming the image, what the graph should
never see: empty or unknown data, unsupported formats and decompression bombs (a small file that
declares a huge image). Truncated data passes this check; the model call catches it per image.

EXIF orientation is the one thing the graph cannot do (TensorFlow's decoders ignore EXIF): a JPEG
whose orientation tag is not "normal" is decoded, turned upright and re-encoded as PNG here, so a
phone photo is classified the way it is displayed.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

from PIL import Image, ImageOps, UnidentifiedImageError

from server.errors import InvalidImage

#: Formats both Pillow (for the header check) and the in-graph TensorFlow decoder read.
SUPPORTED_FORMATS = {"JPEG": "JPEG", "PNG": "PNG", "GIF": "GIF", "BMP": "BMP", "WEBP": "WebP", "MPO": "JPEG"}
_EXIF_ORIENTATION = 0x0112

# NOTE: Pillow's own decompression-bomb guard (a fixed ~179 MP, raised from Image.open) is replaced by
# the server's configurable max_image_pixels, checked from the header below before any decoding.
Image.MAX_IMAGE_PIXELS = None

# Well-known magic numbers, to name what a refused file is.
_MAGIC = (
    (b"%PDF", "a PDF document"),
    (b"II*\x00", "a TIFF image"),
    (b"MM\x00*", "a TIFF image"),
    (b"\x00\x00\x00\x0cjP", "a JPEG 2000 image"),
    (b"PK\x03\x04", "a ZIP archive"),
    (b"<svg", "an SVG document"),
    (b"<?xml", "an XML document"),
)


@dataclass(frozen=True)
class ImageInfo:
    format: str
    width: int
    height: int
    #: EXIF orientation tag (1: upright; 2-8: flipped or rotated); 1 when absent or not a JPEG.
    orientation: int = 1

    @property
    def needs_orientation(self) -> bool:
        """True for a JPEG whose EXIF orientation asks for a flip or rotation (see
        :func:`apply_orientation`)."""
        return self.orientation not in (1, None)


def _describe_unknown(data: bytes) -> str:
    head = data[:16]
    for magic, what in _MAGIC:
        if head.startswith(magic):
            return what
    if head[4:12] in (b"ftypheic", b"ftypheix", b"ftypmif1", b"ftypavif"):
        return "an HEIF/AVIF image"
    try:
        sample = data[:512].decode("utf-8")
    except UnicodeDecodeError:
        return "not a recognised image"
    if all(ch.isprintable() or ch in "\t\r\n" for ch in sample):
        return "text, not an image"
    return "not a recognised image"


def inspect_image(index: int, data: bytes, max_pixels: int) -> ImageInfo:
    """Read the header of image ``index`` (and a JPEG's EXIF orientation, from the same parse); raise
    :class:`InvalidImage` saying why it cannot be used."""
    if not data:
        raise InvalidImage(index, "empty image (0 bytes)")
    try:
        with Image.open(io.BytesIO(data)) as image:
            fmt, (width, height) = image.format, image.size
            orientation = _exif_orientation(image) if SUPPORTED_FORMATS.get(fmt) == "JPEG" else 1
    except UnidentifiedImageError:
        raise InvalidImage(
            index, f"{_describe_unknown(data)}; supported formats: JPEG, PNG, GIF, BMP, WebP"
        ) from None
    except (OSError, SyntaxError, ValueError) as exc:  # Pillow's errors for corrupt headers
        raise InvalidImage(index, f"corrupt image header: {exc}") from None
    if fmt not in SUPPORTED_FORMATS:
        raise InvalidImage(
            index, f"{fmt} images are not supported; supported formats: JPEG, PNG, GIF, BMP, WebP"
        )
    if width < 1 or height < 1:
        raise InvalidImage(index, f"image has no pixels ({width}x{height})")
    if width * height > max_pixels:
        raise InvalidImage(
            index,
            f"{width}x{height} is {width * height:,} pixels; the server decodes at most {max_pixels:,} "
            "(a small file declaring a huge image is refused unread)",
        )
    return ImageInfo(SUPPORTED_FORMATS[fmt], width, height, orientation)


def _exif_orientation(image: Image.Image) -> int:
    if "exif" not in image.info:  # Pillow keeps the raw EXIF block it met while reading the header
        return 1
    try:
        return image.getexif().get(_EXIF_ORIENTATION, 1)
    except Exception:  # noqa: BLE001 - unreadable EXIF: the pixels still decode; show them as stored
        return 1


def apply_orientation(index: int, data: bytes) -> bytes:
    """Decode, rotate upright per EXIF and re-encode losslessly as PNG."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            upright = ImageOps.exif_transpose(image).convert("RGB")
            buffer = io.BytesIO()
            upright.save(buffer, format="PNG", compress_level=1)
    except (OSError, SyntaxError, ValueError) as exc:
        raise InvalidImage(index, f"could not decode: {exc}") from None
    return buffer.getvalue()
