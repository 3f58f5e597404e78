"""Small builders for test photos written to disk (real JPEG/PNG files, made by the tests)."""

from __future__ import annotations

import functools
import io
from pathlib import Path

import numpy as np
from PIL import Image as PILImage
from PIL import ImageCms


@functools.cache  # the profile header holds its creation time: make it once
def srgb_icc() -> bytes:
    profile = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))
    return bytes(profile.tobytes())


def write_jpeg(path: Path, pixels: np.ndarray, *, orientation: int = 1, quality: int = 95,
               icc: bytes | None = None, make: str = "RestoraTestCam") -> Path:
    image = PILImage.fromarray(pixels)
    exif = PILImage.Exif()
    exif[0x010F] = make  # Make
    exif[0x0112] = orientation  # Orientation
    kwargs: dict[str, object] = {"quality": quality, "exif": exif.tobytes()}
    if icc is not None:
        kwargs["icc_profile"] = icc
    image.save(path, "JPEG", **kwargs)
    return path


def jpeg_bytes(pixels: np.ndarray, quality: int = 95) -> bytes:
    buffer = io.BytesIO()
    PILImage.fromarray(pixels).save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def decoded_jpeg(pixels: np.ndarray, quality: int) -> np.ndarray:
    """``pixels`` after a round trip through a JPEG of that quality."""
    return np.asarray(PILImage.open(io.BytesIO(jpeg_bytes(pixels, quality))).convert("RGB"))


def far_from_face_mask(shape: tuple[int, ...], box: tuple[float, float, float, float], margin: float) -> np.ndarray:
    """True where a pixel is more than ``margin`` face-sizes away from the face box."""
    height, width = shape[:2]
    x1, y1, x2, y2 = box
    pad = max(x2 - x1, y2 - y1) * margin
    mask = np.ones((height, width), bool)
    mask[max(int(y1 - pad), 0) : int(y2 + pad), max(int(x1 - pad), 0) : int(x2 + pad)] = False
    return mask
