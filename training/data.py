"""Training and validation faces from ../shared/data (never copied into the repository).

- train/utkface: 200 px aligned faces. Used at their native scale or below (random crops, optional
  downscale), never upscaled: an upscaled face as ground truth teaches the net to produce blur.
  The manifest's ``laplacian_var`` picks the sharper ones; ``near_gray`` faces are skipped.
- train_hq: 256-512 px aligned faces, downscaled at random before cropping.
- eval: 512 px aligned faces for validation and evaluation (the 256 px ones are left out, for the
  same reason: they would have to be upscaled to serve at 512).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

cv2.setNumThreads(1)

DEFAULT_DATA_DIR = Path(__file__).resolve().parents[2] / "shared" / "data"


def load_rgb(path: Path) -> np.ndarray:
    """float32 RGB H x W x 3 in [0, 1]."""
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise OSError(f"cannot read image {path}")
    return bgr[..., ::-1].astype(np.float32) / 255.0


def read_manifest(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def sharp_face_files(data_dir: Path, keep_fraction: float = 0.6) -> list[Path]:
    """UTKFace files, sharpest ``keep_fraction`` by Laplacian variance, grayish ones skipped."""
    rows = [r for r in read_manifest(data_dir / "train" / "manifest.csv") if r["near_gray"] != "1"]
    rows.sort(key=lambda r: float(r["laplacian_var"]), reverse=True)
    rows = rows[: max(1, int(len(rows) * keep_fraction))]
    return sorted(data_dir / "train" / r["file"] for r in rows)


def hq_face_files(data_dir: Path) -> list[Path]:
    manifest = data_dir / "train_hq" / "manifest.csv"
    if not manifest.exists():
        return []
    return sorted(data_dir / "train_hq" / r["file"] for r in read_manifest(manifest) if r["near_gray"] != "1")


def eval_face_files(data_dir: Path, size: int = 512) -> list[Path]:
    """The validation faces that are natively ``size`` px (sorted, so the set is stable)."""
    out = []
    for p in sorted((data_dir / "eval").glob("*.png")):
        img = cv2.imread(str(p), cv2.IMREAD_UNCHANGED)
        if img is not None and img.shape[:2] == (size, size):
            out.append(p)
    return out


@dataclass
class PatchSampler:
    """Random clean patches at native scale or below, from in-memory HQ faces and on-disk UTKFace."""

    face_files: list[Path]
    hq_images: list[np.ndarray]
    patch: int = 128
    hq_fraction: float = 0.15
    shrink_probability: float = 0.3  # how often a UTKFace face is downscaled (sharper per pixel) first
    min_shrink: float = 0.7
    max_shrink: float = 1.0  # < 1: every shrunk UTKFace face is at most this fraction of its size

    @staticmethod
    def from_dir(
        data_dir: Path,
        patch: int = 128,
        keep_fraction: float = 0.6,
        hq_fraction: float = 0.15,
        shrink_probability: float = 0.3,
        min_shrink: float = 0.7,
        max_shrink: float = 1.0,
    ) -> PatchSampler:
        return PatchSampler(
            face_files=sharp_face_files(data_dir, keep_fraction),
            hq_images=[load_rgb(p) for p in hq_face_files(data_dir)],
            patch=patch,
            hq_fraction=hq_fraction,
            shrink_probability=shrink_probability,
            min_shrink=min_shrink,
            max_shrink=max_shrink,
        )

    def sample(self, rng: np.random.Generator) -> np.ndarray:
        if self.hq_images and (not self.face_files or rng.random() < self.hq_fraction):
            img = self.hq_images[int(rng.integers(len(self.hq_images)))]
            # Downscale HQ faces to a random size between the patch and their own size.
            side = int(rng.uniform(max(self.patch, img.shape[0] * 0.4), img.shape[0]))
            if side < img.shape[0]:
                img = cv2.resize(img, (side, side), interpolation=cv2.INTER_AREA)
        else:
            img = load_rgb(self.face_files[int(rng.integers(len(self.face_files)))])
            if rng.random() < self.shrink_probability:
                lo = max(self.patch / min(img.shape[:2]), self.min_shrink)
                f = rng.uniform(lo, max(lo, self.max_shrink))
                if f < 1.0:
                    img = cv2.resize(img, None, fx=f, fy=f, interpolation=cv2.INTER_AREA)
        return random_crop(img, self.patch, rng)


def random_crop(img: np.ndarray, patch: int, rng: np.random.Generator) -> np.ndarray:
    h, w = img.shape[:2]
    if h < patch or w < patch:
        # Only for tiny test images: pad by reflection rather than upscale.
        img = cv2.copyMakeBorder(img, 0, max(0, patch - h), 0, max(0, patch - w), cv2.BORDER_REFLECT_101)
        h, w = img.shape[:2]
    y = int(rng.integers(0, h - patch + 1))
    x = int(rng.integers(0, w - patch + 1))
    crop = img[y : y + patch, x : x + patch]
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    return np.ascontiguousarray(crop, dtype=np.float32)
