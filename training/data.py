"""Training and validation faces from ../shared/data (never copied into the repository).

- train/utkface: 200 px aligned faces. Used at their native scale or below (random crops, optional
  downscale): an upscaled face as ground truth teaches the net to produce blur. ``sample_face_scale``
  enlarges them for heavy degradations only, opt-in; measured, it too taught blur (docs/TRAINING.md).
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
# Derived from the training data, so it lives under runs/ (not in git), never in the data folder.
DEFAULT_BLOCKINESS_CACHE = Path(__file__).resolve().parents[1] / "runs" / "utkface-blockiness.csv"


def load_rgb(path: Path) -> np.ndarray:
    """float32 RGB H x W x 3 in [0, 1]."""
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise OSError(f"cannot read image {path}")
    return bgr[..., ::-1].astype(np.float32) / 255.0


def read_manifest(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def jpeg_blockiness(gray: np.ndarray) -> float:
    """Mean absolute step across the 8 x 8 JPEG block edges / that inside blocks (1: no visible
    blocks; UTKFace's median is 1.28). The manifest's Laplacian variance rises with block edges and
    noise as much as with detail, so it alone picks many blocky faces as "sharp"."""
    g = gray.astype(np.float32)
    steps = []
    for d in (np.abs(np.diff(g, axis=1)).mean(axis=0), np.abs(np.diff(g, axis=0)).mean(axis=1)):
        inside = np.delete(d, np.s_[7::8]).mean()
        steps.append(float(d[7::8].mean() / max(float(inside), 1e-3)))
    return float(np.mean(steps))


def blockiness_table(data_dir: Path, cache: Path) -> dict[str, float]:
    """{manifest file: jpeg_blockiness} for UTKFace, computed once (about a minute) and cached in
    ``cache`` (a CSV under runs/, never in git: it is derived from the training data)."""
    if cache.exists():
        with cache.open(newline="") as f:
            return {r["file"]: float(r["blockiness"]) for r in csv.DictReader(f)}
    table = {}
    for r in read_manifest(data_dir / "train" / "manifest.csv"):
        gray = cv2.imread(str(data_dir / "train" / r["file"]), cv2.IMREAD_GRAYSCALE)
        table[r["file"]] = jpeg_blockiness(gray) if gray is not None else float("inf")
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(".tmp")
    with tmp.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["file", "blockiness"])
        w.writerows(table.items())
    tmp.replace(cache)
    return table


def sharp_face_files(
    data_dir: Path,
    keep_fraction: float = 0.6,
    max_blockiness: float = 0.0,
    blockiness_cache: Path | None = None,
) -> list[Path]:
    """UTKFace files, sharpest ``keep_fraction`` by Laplacian variance, grayish ones skipped; with
    ``max_blockiness`` > 0, of those only the ones whose JPEG blocks are at most that visible."""
    rows = [r for r in read_manifest(data_dir / "train" / "manifest.csv") if r["near_gray"] != "1"]
    rows.sort(key=lambda r: float(r["laplacian_var"]), reverse=True)
    rows = rows[: max(1, int(len(rows) * keep_fraction))]
    if max_blockiness > 0:
        table = blockiness_table(data_dir, blockiness_cache or DEFAULT_BLOCKINESS_CACHE)
        rows = [r for r in rows if table.get(r["file"], float("inf")) <= max_blockiness]
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
        max_blockiness: float = 0.0,
        blockiness_cache: Path | None = None,
    ) -> PatchSampler:
        return PatchSampler(
            face_files=sharp_face_files(data_dir, keep_fraction, max_blockiness, blockiness_cache),
            hq_images=[load_rgb(p) for p in hq_face_files(data_dir)],
            patch=patch,
            hq_fraction=hq_fraction,
            shrink_probability=shrink_probability,
            min_shrink=min_shrink,
            max_shrink=max_shrink,
        )

    def sample_face_scale(self, rng: np.random.Generator, upscale: tuple[float, float]) -> np.ndarray:
        """A patch at the scale of a 512 px aligned face: an HQ face at its own size (512 px ones) or
        a UTKFace face enlarged by a factor drawn from ``upscale`` (200 px x 2.56 = 512).

        Meant for heavy degradations (a x3 or stronger downscale of the 512 face), whose input holds
        less detail than the 200 px face, so that the net sees faces, noise grain and JPEG blocks at
        the sizes it meets at 512. Measured from v4 it cost 0.11 dB on medium in 800 steps: the net
        learns the enlarged face's softness anyway (docs/TRAINING.md), so it is off by default."""
        if self.hq_images and (not self.face_files or rng.random() < self.hq_fraction):
            img = self.hq_images[int(rng.integers(len(self.hq_images)))]
            f = 512 / img.shape[0]
            if f > 1.0:  # the 256 px HQ faces are enlarged like UTKFace ones
                img = cv2.resize(img, None, fx=f, fy=f, interpolation=cv2.INTER_CUBIC)
        else:
            img = load_rgb(self.face_files[int(rng.integers(len(self.face_files)))])
            f = float(rng.uniform(*upscale))
            img = cv2.resize(img, None, fx=f, fy=f, interpolation=cv2.INTER_CUBIC)
        return np.clip(random_crop(img, self.patch, rng), 0.0, 1.0)

    def sample(self, rng: np.random.Generator) -> np.ndarray:
        if self.hq_images and (not self.face_files or rng.random() < self.hq_fraction):
            img = self.hq_images[int(rng.integers(len(self.hq_images)))]
            # Downscale HQ faces to a random size between the patch and their own size (none that
            # is smaller than the patch: random_crop pads it like a 200 px face).
            side = int(rng.uniform(min(max(self.patch, img.shape[0] * 0.4), img.shape[0]), img.shape[0]))
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
