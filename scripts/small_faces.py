"""Faces small in a photo, restored at the crop size ``faces.crop_size_for`` picks against always at
the restorer's full size: PSNR against the clean photo, and the time each takes.

Not part of the test suite (``../shared/data/eval`` is not in the repository); the figures are quoted
in ``engine/faces.py`` and docs/BENCHMARKS.md. Each sharp validation face (a 512 px FFHQ-aligned crop)
is shrunk so its crop covers ``s`` photo pixels, framed by a reflected border (so the detector sees
a face in a photo), degraded as a whole photo, then restored by the default engine (INT8, default
fidelity and colour correction). PSNR is taken on the central 80 % of the face's square.

    python scripts/small_faces.py [--sizes 48,64,96,128,160] [--every 4]
"""

from __future__ import annotations

import argparse
import io
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image as PILImage
from PIL import ImageFilter

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.imageio import Image
from engine.models import ModelStore
from engine.pipeline import Enhancer, EnhanceSettings
from training.data import DEFAULT_DATA_DIR, eval_face_files, load_rgb

# blur sigma (px), Gaussian noise sigma (levels), JPEG quality: applied to the small photo itself.
LEVELS = {"jpeg90": (0.0, 0, 90), "mild": (0.0, 3, 75), "medium": (0.8, 6, 50), "heavy": (1.2, 8, 35)}


def degrade(pixels: np.ndarray, level: str, rng: np.random.Generator) -> np.ndarray:
    blur, noise, quality = LEVELS[level]
    image = PILImage.fromarray(pixels)
    if blur:
        image = image.filter(ImageFilter.GaussianBlur(blur))
    values = np.asarray(image, np.float32)
    if noise:
        values = values + rng.normal(0, noise, values.shape)
    buffer = io.BytesIO()
    PILImage.fromarray(np.clip(values + 0.5, 0, 255).astype(np.uint8)).save(buffer, "JPEG", quality=quality)
    return np.asarray(PILImage.open(buffer).convert("RGB"))


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(255.0**2 / np.mean((a.astype(np.float64) - b) ** 2)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA_DIR)
    parser.add_argument("--sizes", default="48,64,80,96,112,128,144,160,176",
                        help="photo pixels a face's crop covers along a side")
    parser.add_argument("--every", type=int, default=4, help="every n-th validation face")
    args = parser.parse_args(argv)

    store = ModelStore.default()
    full_size = store.at_full_size()
    engines = {"auto": Enhancer(EnhanceSettings(), store), "full": Enhancer(EnhanceSettings(), full_size)}
    files = eval_face_files(args.data)[:: args.every]
    sizes = [int(s) for s in args.sizes.split(",")]
    gains: dict[tuple[int, str, str], list[float]] = {}
    seconds = dict.fromkeys(engines, 0.0)
    crop_sizes: dict[int, set[int]] = {}
    for file in files:
        face = PILImage.fromarray(np.clip(load_rgb(file) * 255 + 0.5, 0, 255).astype(np.uint8))
        for s in sizes:
            pad = max(s, 160)
            small = np.asarray(face.resize((s, s), PILImage.Resampling.BOX))
            clean = np.pad(small, ((pad, pad), (pad, pad), (0, 0)), mode="reflect")
            inner = slice(pad + s // 10, pad + s - s // 10)
            for level in LEVELS:
                rng = np.random.default_rng([s, sizes.index(s), list(LEVELS).index(level), files.index(file)])
                degraded = degrade(clean, level, rng)
                before = psnr(degraded[inner, inner], clean[inner, inner])
                for name, engine in engines.items():
                    start = time.perf_counter()
                    result = engine.enhance(Image(pixels=degraded))
                    seconds[name] += time.perf_counter() - start
                    if name == "auto" and result.faces:
                        # The face in the middle; the reflected border may hold mirrored ones.
                        middle = min(result.faces, key=lambda r: abs(r.face.box[0] + r.face.box[2] - len(clean)))
                        crop_sizes.setdefault(s, set()).add(len(middle.crop))
                    after = psnr(result.output.pixels[inner, inner], clean[inner, inner])
                    gains.setdefault((s, level, name), []).append(after - before)
    print(f"{len(files)} faces; seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in seconds.items()))
    print("PSNR gain over the degraded photo, dB: at the chosen crop / always at the full size")
    print("| face's crop in the photo | crop | " + " | ".join(LEVELS) + " |")
    print("|---:|---:|" + "---:|" * len(LEVELS))
    for s in sizes:
        cells = [f"{np.mean(gains[(s, lv, 'auto')]):+.2f} / {np.mean(gains[(s, lv, 'full')]):+.2f}" for lv in LEVELS]
        chosen = "/".join(map(str, sorted(crop_sizes.get(s, ()))))
        print(f"| {s} px | {chosen} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
