"""Load and save photos: EXIF orientation, ICC + EXIF passthrough, alpha, 16-bit, atomic writes."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

DEFAULT_MAX_PIXELS = 178_956_970  # Pillow's own decompression-bomb threshold (about 178 MP)


@dataclass(frozen=True, eq=False)
class Image:
    """A decoded photo, upright (EXIF orientation applied).

    pixels: (H, W, 3) RGB, uint8 or uint16 (16-bit sources stay 16-bit).
    alpha:  (H, W) of the same dtype, or None; never modified by restoration.
    exif:   raw EXIF bytes with orientation reset to 1, or None.
    icc:    ICC profile bytes, or None.
    format: the source format as Pillow names it ("JPEG", "PNG", "WEBP", "TIFF", "BMP", "GIF"...).
    mode:   the source colour mode ("L", "RGB", "RGBA", "CMYK", "I;16"...), so a grayscale photo
            can be saved back as grayscale.
    warnings: notes for the report (e.g. "animated GIF: only the first of 12 frames was restored").
    """

    pixels: np.ndarray
    alpha: np.ndarray | None = None
    exif: bytes | None = None
    icc: bytes | None = None
    format: str = "PNG"
    mode: str = "RGB"
    warnings: tuple[str, ...] = field(default_factory=tuple)

    @property
    def width(self) -> int:
        return int(self.pixels.shape[1])

    @property
    def height(self) -> int:
        return int(self.pixels.shape[0])
