"""Where a restorer's error is: the MSE of (output - sharp original) per radial frequency band.

    python scripts/error_bands.py --model assets/models/restora-lite-fp32.onnx --tier medium

Scores the central 80 % of every 4th validation face (16 faces), as training.evaluate crops them.
Error above a tier's Nyquist limit (1/8 cycle per pixel for medium's x4 downscale) cannot be removed
without inventing detail; error below it is what a better denoiser and de-blocker could still take.
Needs the [train] extra and ../shared/data.
"""

from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from training.data import DEFAULT_DATA_DIR, eval_face_files, load_rgb
from training.degrade import TIERS, apply_degradation, seed_for
from training.evaluate import central, make_session, onnx_restorer

BAND_EDGES = (0.0, 1 / 32, 1 / 16, 1 / 8, 1 / 4, 0.71)  # cycles per pixel; 0.71 > the corner's radius


def band_mse(error: np.ndarray) -> np.ndarray:
    """Per-band share of the mean squared error of an H x W x 3 error image (sums to its MSE)."""
    h, w = error.shape[:2]
    radius = np.hypot(np.fft.fftfreq(h)[:, None], np.fft.fftfreq(w)[None, :])
    power = sum(np.abs(np.fft.fft2(error[..., c])) ** 2 for c in range(3)) / (h * w) ** 2 / 3
    return np.array([power[(radius >= lo) & (radius < hi)].sum() for lo, hi in itertools.pairwise(BAND_EDGES)])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", type=Path, required=True, help="an ONNX restorer")
    p.add_argument("--tier", choices=sorted(TIERS), default="medium")
    p.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    p.add_argument("--every", type=int, default=4, help="use every Nth validation face")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    restore = onnx_restorer(make_session(args.model, args.threads))
    faces = eval_face_files(args.data_dir)[:: args.every]
    totals = {"input": np.zeros(len(BAND_EDGES) - 1), "output": np.zeros(len(BAND_EDGES) - 1)}
    for path in faces:
        clean = load_rgb(path)
        degraded = apply_degradation(clean, TIERS[args.tier], np.random.default_rng(seed_for(path.name, args.tier)))
        for name, img in {"input": degraded, "output": np.clip(restore(degraded), 0, 1)}.items():
            totals[name] += band_mse(central(img) - central(clean))
    bands = " | ".join(f"{lo:.3f}-{hi:.3f}" for lo, hi in itertools.pairwise(BAND_EDGES))
    print(f"{args.tier}, {len(faces)} faces, MSE in 1e-4 per band (cycles/px): | {bands} | total")
    for name, total in totals.items():
        mean = total / len(faces) * 1e4
        print(f"{name:6s} | " + " | ".join(f"{x:.2f}" for x in mean) + f" | {mean.sum():.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
