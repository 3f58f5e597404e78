"""A before/after grid of validation faces across the three tiers, at 100 % (no resampling).

    python -m training.grid --model assets/models/restora-lite-int8.onnx --out runs/model_grid.png
    python -m training.grid --model assets/models/restora-lite-int8.onnx --astronaut --crop 256 \
        --out docs/model-grid-astronaut.png

``--astronaut`` draws one row from scikit-image's public-domain astronaut, found and aligned to the
512 px FFHQ template by the engine (MTCNN): that grid may be committed; the validation faces' terms
forbid copying them, so the ten-face grid stays under runs/.

Each row is one validation face; columns: for mild, medium and severe the degraded input and the
model's output, then the sharp original. Each cell is the same crop around the eyes and nose, so
lashes, iris and skin texture can be judged pixel for pixel.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

from .data import DEFAULT_DATA_DIR, eval_face_files, load_rgb
from .degrade import TIERS, apply_degradation, seed_for
from .evaluate import make_session, onnx_restorer

TIER_NAMES = ("mild", "medium", "severe")


def face_crop(img: np.ndarray, size: int) -> np.ndarray:
    """A size x size crop centred on the eyes and nose of an FFHQ-aligned 512 px face."""
    h, w = img.shape[:2]
    cy, cx = int(h * 0.47), w // 2
    return img[cy - size // 2 : cy + size // 2, cx - size // 2 : cx + size // 2]


def label(cell: np.ndarray, text: str) -> np.ndarray:
    """uint8 RGB cell with a small caption in its top-left corner (cv2 draws on 8-bit images only)."""
    out = np.ascontiguousarray(np.clip(cell * 255 + 0.5, 0, 255).astype(np.uint8))
    cv2.rectangle(out, (0, 0), (len(text) * 7 + 6, 15), (0, 0, 0), -1)
    cv2.putText(out, text, (3, 11), cv2.FONT_HERSHEY_SIMPLEX, 0.36, (255, 255, 255), 1, cv2.LINE_AA)
    return out


def astronaut_face() -> tuple[str, np.ndarray]:
    """scikit-image's astronaut as the engine aligns her for a 512 px FFHQ-template restorer."""
    from engine.bench import aligned_test_crops
    from engine.models import ModelStore

    crop = aligned_test_crops(ModelStore.default(), 512, 1, "auto")[0]
    return "astronaut.png", crop.astype(np.float32) / 255.0


def build_grid(model: Path, data_dir: Path, faces: int, crop: int, threads: int, astronaut: bool = False) -> np.ndarray:
    restore = onnx_restorer(make_session(model, threads))
    if astronaut:
        sources = [astronaut_face()]
    else:
        files = eval_face_files(data_dir)
        step = max(1, len(files) // faces)
        sources = [(path.name, load_rgb(path)) for path in files[::step][:faces]]
    rows = []
    for name, clean in sources:
        cells = []
        for tier in TIER_NAMES:
            degraded = apply_degradation(clean, TIERS[tier], np.random.default_rng(seed_for(name, tier)))
            restored = np.clip(restore(degraded), 0, 1)
            cells += [label(face_crop(degraded, crop), f"{tier} in"), label(face_crop(restored, crop), f"{tier} out")]
        cells.append(label(face_crop(clean, crop), "sharp"))
        rows.append(np.concatenate(cells, axis=1))
    return np.concatenate(rows, axis=0)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.grid", description=__doc__.split("\n")[0])
    p.add_argument("--model", type=Path, required=True, help="an ONNX restorer")
    p.add_argument("--out", type=Path, default=Path("runs/model_grid.png"))
    p.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    p.add_argument("--faces", type=int, default=10)
    p.add_argument("--crop", type=int, default=192, help="crop side in pixels (shown at 100 %%)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--astronaut", action="store_true", help="one row from scikit-image's astronaut (committable)")
    args = p.parse_args(argv)
    cv2.setNumThreads(1)
    grid = build_grid(args.model, args.data_dir, args.faces, args.crop, args.threads, args.astronaut)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    bgr = np.ascontiguousarray(grid[..., ::-1])
    if not cv2.imwrite(str(args.out), bgr, [cv2.IMWRITE_PNG_COMPRESSION, 9]):
        raise OSError(f"cannot write {args.out}")
    print(args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
