"""Aligned faces restored at the size ``faces.content_crop_size`` picks (half size for a face that
holds nothing finer: enlarged 8x, or as blurred) against always at the restorer's full size.

Not part of the test suite (``../shared/data/eval`` is not in the repository); the figures are quoted
in ``engine/faces.py`` and docs/TRAINING.md. Each validation face (a sharp 512 px FFHQ-aligned crop)
is degraded as below and restored by the default engine as ``restora enhance --aligned`` does
(INT8, fidelity 0, no colour match), once with restora-lite's smaller crop sizes and once with
them removed. Scores: PSNR gain over the degraded face on its central 80 %.

    python scripts/content_scale.py [--every 1]
    python scripts/content_scale.py --astronaut-grid docs/content-size-astronaut.png

``--astronaut-grid`` draws, instead, scikit-image's public-domain astronaut enlarged 8x from a JPEG
(quality 60; below it quality 75 with 6 levels of grain), at 100 %: the input, always at 512 px, by
content size (256 px), the sharp original.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from PIL import Image as PILImage

from engine import faces as facelib
from engine.imageio import Image
from engine.models import ModelStore
from engine.pipeline import Enhancer, EnhanceSettings
from engine.resample import resize
from training.data import DEFAULT_DATA_DIR, eval_face_files, load_rgb
from training.degrade import TIERS, apply_degradation, seed_for
from training.evaluate import scores

Degrade = Callable[[np.ndarray, np.random.Generator], np.ndarray]


def enlarged(factor: int, grain: float = 0.0) -> Degrade:
    """The face shrunk ``factor`` times and blown up again (bicubic), grain added at the crop's scale."""

    def degrade(clean: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        small = resize(clean, (512 // factor, 512 // factor), "area")
        big = resize(small, (512, 512), "cubic") + rng.normal(0.0, grain / 255, clean.shape).astype(np.float32)
        return np.clip(np.rint(big * 255), 0, 255) / np.float32(255)

    return degrade


def tier(name: str) -> Degrade:
    return lambda clean, rng: apply_degradation(clean, TIERS[name], rng)


CASES: dict[str, Degrade] = {
    "mild": tier("mild"),
    "medium": tier("medium"),
    "severe": tier("severe"),
    "clean, enlarged 4x": enlarged(4),
    "clean, enlarged 8x": enlarged(8),
    "enlarged 4x, grain 6": enlarged(4, 6.0),
    "enlarged 8x, grain 6": enlarged(8, 6.0),
}


def astronaut_grid(by_content: Enhancer, always_full: Enhancer) -> np.ndarray:
    import io

    from engine.bench import aligned_test_crops

    sharp = aligned_test_crops(ModelStore.default(), 512, 1, "auto")[0]  # as the engine aligns her
    rows = []
    for quality, grain in ((60, 0.0), (75, 6.0)):
        buffer = io.BytesIO()
        PILImage.fromarray(resize(sharp, (64, 64), "area")).save(buffer, "JPEG", quality=quality)
        small = np.asarray(PILImage.open(buffer).convert("RGB"))
        big = resize(small, (512, 512), "cubic") + np.random.default_rng(0).normal(0.0, grain, sharp.shape)
        pixels = np.clip(np.rint(big), 0, 255).astype(np.uint8)
        outputs = [e.enhance(Image(pixels=pixels)).output.pixels for e in (always_full, by_content)]
        rows.append(np.concatenate([p[128:384, 128:384] for p in (pixels, *outputs, sharp)], axis=1))
    return np.concatenate(rows, axis=0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--every", type=int, default=1, help="use every N-th validation face")
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    parser.add_argument("--astronaut-grid", type=Path, help="draw the astronaut grid into this PNG instead")
    args = parser.parse_args(argv)
    store = ModelStore.default()
    fixed = store.at_full_size()
    settings = EnhanceSettings(aligned=True, fidelity=0.0, color_correction=False, precision="int8", threads=2)
    by_content, always_full = Enhancer(settings, store), Enhancer(settings, fixed)
    if args.astronaut_grid:
        PILImage.fromarray(astronaut_grid(by_content, always_full)).save(args.astronaut_grid, optimize=True)
        return 0
    faces = eval_face_files(args.data_dir)[:: args.every]
    print(f"{len(faces)} faces; ΔPSNR over the degraded face, central 80 %\n")
    print("| case | fine-detail ratio | at 256 | by content size | always 512 |")
    print("|---|---:|---:|---:|---:|")
    for case, degrade in CASES.items():
        ratios, coarse, gains, full_gains = [], 0, [], []
        for path in faces:
            clean = load_rgb(path)
            degraded = degrade(clean, np.random.default_rng(seed_for(path.name, case)))
            pixels = np.clip(np.rint(degraded * 255), 0, 255).astype(np.uint8)
            ratios.append(facelib.fine_detail_ratio(pixels))
            before = scores(degraded, clean)["psnr"]
            result = by_content.enhance(Image(pixels=pixels))
            coarse += result.faces[0].coarse
            gains.append(scores(result.output.pixels.astype(np.float32) / 255, clean)["psnr"] - before)
            full = always_full.enhance(Image(pixels=pixels)).output.pixels.astype(np.float32) / 255
            full_gains.append(scores(full, clean)["psnr"] - before)
        print(
            f"| {case} | {min(ratios):.2f}-{max(ratios):.2f} | {coarse}/{len(faces)} | "
            f"{np.mean(gains):+.2f} | {np.mean(full_gains):+.2f} |", flush=True,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
