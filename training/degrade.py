"""Blind-face-restoration degradation: blur, downsample, noise, JPEG, back up to the input size.

Everything is drawn from a ``numpy.random.Generator`` passed in, so a sample seeded by its index (or by
its file name and tier) degrades to the same bytes in every run: the validation set is fixed.

Images are float32 RGB H x W x 3 in [0, 1]. cv2 is asked for one thread: training runs beside other
people's work on a 2-core machine.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace

import cv2
import numpy as np

cv2.setNumThreads(1)

RESIZE_MODES = (cv2.INTER_AREA, cv2.INTER_LINEAR, cv2.INTER_CUBIC)


@dataclass(frozen=True)
class Degradation:
    """One concrete degradation. Blur sizes are in pixels of the image it is applied to."""

    blur_sigma: float = 0.0  # Gaussian blur; 0: none
    motion_length: int = 0  # motion blur kernel length in pixels; 0: none
    motion_angle: float = 0.0  # degrees
    downscale: float = 1.0  # factor >= 1: shrink by it, then resize back up
    noise_sigma: float = 0.0  # Gaussian noise std, in [0, 1] units
    poisson_peak: float = 0.0  # photon count at white for Poisson noise; 0: none
    jpeg_quality: int = 0  # 0: no JPEG
    grayscale: bool = False  # convert to gray (the target as well: no invented colour)


# Fixed tiers for evaluation, in pixels of a 512 x 512 FFHQ-aligned face.
TIERS: dict[str, Degradation] = {
    "mild": Degradation(blur_sigma=1.0, downscale=2.0, noise_sigma=3 / 255, jpeg_quality=85),
    "medium": Degradation(blur_sigma=2.0, downscale=4.0, noise_sigma=8 / 255, jpeg_quality=60),
    "severe": Degradation(blur_sigma=3.0, motion_length=5, downscale=8.0, noise_sigma=12 / 255, jpeg_quality=40),
}


def seed_for(name: str, salt: str = "") -> int:
    """A stable 64-bit seed from a file name (Python's hash() is salted per process)."""
    return int.from_bytes(hashlib.sha256(f"{name}|{salt}".encode()).digest()[:8], "little")


def sample_light_degradation(rng: np.random.Generator) -> Degradation:
    """A mild degradation: teaches the net to leave nearly clean faces alone instead of smoothing them."""
    return Degradation(
        blur_sigma=float(rng.uniform(0.0, 1.0)),
        downscale=float(rng.uniform(1.0, 2.0)),
        noise_sigma=float(rng.uniform(0.0, 4 / 255)),
        jpeg_quality=int(rng.integers(70, 96)),
        grayscale=bool(rng.random() < 0.05),
    )


def sample_tier_degradation(rng: np.random.Generator) -> Degradation:
    """A degradation around the evaluation tiers (mild, medium, severe are severity 0, 0.5, 1): blur,
    downscale, noise and JPEG grow together with one severity draw, each jittered, so the net learns
    the combinations it is scored on rather than e.g. x8 downscaling without blur."""
    t = float(rng.uniform(-0.15, 1.15))
    blur_sigma = max(0.0, 1.0 + 2.0 * t + float(rng.uniform(-0.5, 0.5)))
    downscale = max(1.0, 2.0 ** (1.0 + 2.0 * t + float(rng.uniform(-0.3, 0.3))))
    motion_length = int(rng.integers(3, 8)) if rng.random() < 0.6 * max(t - 0.4, 0.0) / 0.75 else 0
    noise_sigma = max(0.0, (3.0 + 9.0 * t + float(rng.uniform(-2.0, 2.0))) / 255)
    jpeg_quality = int(np.clip(85 - 45 * t + rng.uniform(-8, 8), 30, 95))
    return Degradation(
        blur_sigma=blur_sigma,
        motion_length=motion_length,
        motion_angle=float(rng.uniform(0.0, 180.0)),
        downscale=downscale,
        noise_sigma=noise_sigma,
        jpeg_quality=jpeg_quality,
        grayscale=bool(rng.random() < 0.05),
    )


def sample_degradation(rng: np.random.Generator, light_fraction: float = 0.0) -> Degradation:
    """A random degradation for training, in the GFPGAN / Real-ESRGAN style ranges; a
    ``light_fraction`` share of them comes from the mild ranges instead."""
    if light_fraction > 0 and rng.random() < light_fraction:
        return sample_light_degradation(rng)
    blur_sigma = float(rng.uniform(0.2, 3.0)) if rng.random() < 0.8 else 0.0
    motion_length = int(rng.integers(3, 12)) if rng.random() < 0.2 else 0
    # Log-uniform downscale in [1, 8]: as many mild cases as severe ones.
    downscale = float(np.exp(rng.uniform(0.0, np.log(8.0))))
    noise_sigma = float(rng.uniform(0.0, 15 / 255)) if rng.random() < 0.7 else 0.0
    poisson_peak = float(10 ** rng.uniform(1.5, 3.0)) if rng.random() < 0.2 else 0.0
    jpeg_quality = int(rng.integers(30, 96)) if rng.random() < 0.9 else 0
    return Degradation(
        blur_sigma=blur_sigma,
        motion_length=motion_length,
        motion_angle=float(rng.uniform(0.0, 180.0)),
        downscale=downscale,
        noise_sigma=noise_sigma,
        poisson_peak=poisson_peak,
        jpeg_quality=jpeg_quality,
        grayscale=bool(rng.random() < 0.08),
    )


def scaled(d: Degradation, factor: float) -> Degradation:
    """The same degradation for an image ``factor`` times larger (blur and downscale grow with it)."""
    return replace(
        d,
        blur_sigma=d.blur_sigma * factor,
        motion_length=round(d.motion_length * factor),
        downscale=max(1.0, d.downscale * factor),
    )


def to_gray(img: np.ndarray) -> np.ndarray:
    y = img @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    return np.repeat(y[..., None], 3, axis=2).astype(np.float32)


def color_jitter(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Brightness, contrast and saturation jitter of a clean face (applied to input and target alike)."""
    brightness = rng.uniform(-0.08, 0.08)
    contrast = rng.uniform(0.85, 1.15)
    saturation = rng.uniform(0.8, 1.2)
    mean = img.mean()
    out = (img - mean) * contrast + mean + brightness
    gray = to_gray(out)
    out = gray + (out - gray) * saturation
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def motion_kernel(length: int, angle: float) -> np.ndarray:
    k = np.zeros((length, length), np.float32)
    c = (length - 1) / 2
    rad = np.deg2rad(angle)
    dx, dy = np.cos(rad), np.sin(rad)
    for t in np.linspace(-c, c, 2 * length):
        k[round(c + t * dy), round(c + t * dx)] = 1.0
    return k / k.sum()


def apply_degradation(img: np.ndarray, d: Degradation, rng: np.random.Generator) -> np.ndarray:
    """Degrade a clean float32 RGB image in [0, 1]; returns float32 of the same size, quantized to 8 bits."""
    h, w = img.shape[:2]
    out: np.ndarray = img.astype(np.float32, copy=True)
    if d.grayscale:
        out = to_gray(out)
    if d.blur_sigma > 0:
        out = cv2.GaussianBlur(out, (0, 0), d.blur_sigma, borderType=cv2.BORDER_REFLECT)
    if d.motion_length >= 2:
        out = cv2.filter2D(out, -1, motion_kernel(d.motion_length, d.motion_angle), borderType=cv2.BORDER_REFLECT)
    if d.downscale > 1.0:
        sw, sh = max(4, round(w / d.downscale)), max(4, round(h / d.downscale))
        out = cv2.resize(out, (sw, sh), interpolation=RESIZE_MODES[int(rng.integers(len(RESIZE_MODES)))])
    if d.poisson_peak > 0:
        out = rng.poisson(np.clip(out, 0, 1) * d.poisson_peak).astype(np.float32) / d.poisson_peak
    if d.noise_sigma > 0:
        shape = (*out.shape[:2], 1) if d.grayscale else out.shape
        out = out + rng.normal(0.0, d.noise_sigma, size=shape).astype(np.float32)
    out8: np.ndarray = np.clip(out * 255.0 + 0.5, 0, 255).astype(np.uint8)
    if d.jpeg_quality > 0:
        ok, buf = cv2.imencode(".jpg", out8[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, d.jpeg_quality])
        decoded = cv2.imdecode(buf, cv2.IMREAD_COLOR) if ok else None
        if decoded is not None:
            out8 = decoded[..., ::-1]
    if out8.shape[:2] != (h, w):
        up = (cv2.INTER_LINEAR, cv2.INTER_CUBIC)[int(rng.integers(2))]
        out8 = cv2.resize(np.ascontiguousarray(out8), (w, h), interpolation=up)
    return out8.astype(np.float32) / 255.0


def sample_engine_tier_degradation(rng: np.random.Generator) -> Degradation:
    """A tier degradation as the net meets it in the engine, which restores a face that holds nothing
    finer than a crop half its size at 256 px (``engine.faces.content_crop_size``): there the blur and
    the downscale are half as big. The share so routed grows with the downscale as measured on the
    validation faces (240 tier draws: x5-6 48 %, x6-7 59 %, x7-8 80 %, x8-10 88 %, none below x4)."""
    d = sample_tier_degradation(rng)
    routed = rng.random() < float(np.clip((d.downscale - 4.0) / 4.5, 0.0, 1.0))
    return scaled(d, 0.5) if routed else d


def draw_degradation(rng: np.random.Generator, light_fraction: float = 0.0, degradations: str = "broad") -> Degradation:
    """One training degradation: "broad" (GFPGAN-style ranges), "tiers" (around the evaluation tiers)
    or "engine-tiers" (the tiers as the engine's crop sizes present them), with a ``light_fraction``
    share of mild ones."""
    if degradations in ("tiers", "engine-tiers"):
        light = light_fraction > 0 and rng.random() < light_fraction
        if light:
            return sample_light_degradation(rng)
        return sample_tier_degradation(rng) if degradations == "tiers" else sample_engine_tier_degradation(rng)
    return sample_degradation(rng, light_fraction)


def make_pair(
    clean: np.ndarray,
    rng: np.random.Generator,
    jitter: bool = True,
    light_fraction: float = 0.0,
    degradations: str = "broad",
    degradation: Degradation | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """A training pair (degraded input, target) from a clean float32 RGB patch.

    ``degradations``: "broad" (GFPGAN-style ranges) or "tiers" (around the evaluation tiers);
    ``degradation``: use this one instead of drawing one (drawn by the caller, e.g. to choose the
    ground truth's scale from it)."""
    target = color_jitter(clean, rng) if jitter and rng.random() < 0.5 else clean.astype(np.float32)
    d = degradation if degradation is not None else draw_degradation(rng, light_fraction, degradations)
    degraded = apply_degradation(target, d, rng)
    if d.grayscale:
        target = to_gray(target)
    return degraded, target
