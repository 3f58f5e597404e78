"""numpy <-> QImage and thumbnails. Safe to call from pool threads (QImage, unlike QPixmap, is)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import PIL.Image
import PIL.ImageOps
from PySide6.QtGui import QImage

from engine.imageio import to_uint8
from engine.resample import resize

THUMBNAIL_SIZE = 96


def to_qimage(pixels: np.ndarray) -> QImage:
    """An RGB888 QImage owning a copy of (H, W, 3) uint8 or uint16 pixels."""
    rgb = np.ascontiguousarray(to_uint8(pixels))
    height, width = rgb.shape[:2]
    image = QImage(rgb.data, width, height, rgb.strides[0], QImage.Format.Format_RGB888)
    return image.copy()  # the QImage above borrows numpy's buffer; the copy owns its pixels


def from_qimage(image: QImage) -> np.ndarray:
    """(H, W, 3) uint8 RGB copy of any QImage (for pasted clipboard images)."""
    rgb = image.convertToFormat(QImage.Format.Format_RGB888)
    height, width = rgb.height(), rgb.width()
    buffer = np.frombuffer(rgb.constBits(), np.uint8, count=rgb.bytesPerLine() * height)
    return buffer.reshape(height, rgb.bytesPerLine())[:, : width * 3].reshape(height, width, 3).copy()


def shrink(pixels: np.ndarray, longest: int) -> np.ndarray:
    """A copy no larger than ``longest`` on its longer side (area averaging)."""
    height, width = pixels.shape[:2]
    factor = longest / max(height, width)
    if factor >= 1:
        return pixels
    size = (max(1, round(width * factor)), max(1, round(height * factor)))
    return resize(pixels, size, "area")


def file_thumbnail(path: Path, longest: int = THUMBNAIL_SIZE) -> QImage:
    """A small upright preview of a photo file, without decoding it at full size where possible.

    JPEG's DCT scaling (Pillow ``draft``) makes this fast on 12-50 MP photos. Raises whatever
    Pillow raises for a file that is not an image; the caller shows a placeholder instead.
    """
    with PIL.Image.open(path) as opened:
        opened.draft("RGB", (longest * 2, longest * 2))
        upright = PIL.ImageOps.exif_transpose(opened)
        upright.thumbnail((longest, longest), PIL.Image.Resampling.LANCZOS)
        rgb = np.asarray(upright.convert("RGB"))
    return to_qimage(rgb)
