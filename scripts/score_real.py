"""What the default engine does to the faces of real old photos, which have no clean original to
score against: JPEG blockiness, noise level and detail before and after, per face and per source.

Not part of the test suite (``../shared/data/real`` is not in the repository). The figures go in
assets/models/MODEL_CARD.md. Each face is scored in its photo's own pixels, on the central 80 % of
its detected box, in luminance:

- blockiness: the mean step across the 8 px JPEG grid over the mean step inside it (1 = no grid);
- noise: Immerkaer's estimate (1996), from the mean absolute 3x3 Laplacian difference, in levels;
- detail: the mean Sobel gradient magnitude, as the output's over the input's.

    python scripts/score_real.py [--data ../shared/data/real]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.imageio import SUPPORTED_EXTENSIONS, load_image, to_uint8
from engine.pipeline import Enhancer, EnhanceSettings


def luminance(rgb: np.ndarray) -> np.ndarray:
    return rgb[..., :3].astype(np.float64) @ np.array([0.299, 0.587, 0.114])


def blockiness(y: np.ndarray) -> float:
    """Steps across the 8 px grid over steps inside it; ``y`` must start on the grid."""
    dx, dy = np.abs(np.diff(y, axis=1)), np.abs(np.diff(y, axis=0))
    across_x, across_y = (np.arange(dx.shape[1]) % 8) == 7, (np.arange(dy.shape[0]) % 8) == 7
    across = dx[:, across_x].mean() + dy[across_y].mean()
    inside = dx[:, ~across_x].mean() + dy[~across_y].mean()
    return float(across / inside)


def noise_level(y: np.ndarray) -> float:
    """Immerkaer's fast noise estimate: sqrt(pi / 2) / 6 times the mean |3x3 Laplacian difference|."""
    laplacian = (y[:-2, :-2] - 2 * y[:-2, 1:-1] + y[:-2, 2:] - 2 * y[1:-1, :-2] + 4 * y[1:-1, 1:-1]
                 - 2 * y[1:-1, 2:] + y[2:, :-2] - 2 * y[2:, 1:-1] + y[2:, 2:])
    return float(np.sqrt(np.pi / 2) * np.abs(laplacian).mean() / 6)


def sobel_detail(y: np.ndarray) -> float:
    gx = y[1:-1, 2:] - y[1:-1, :-2]
    gy = y[2:, 1:-1] - y[:-2, 1:-1]
    return float(np.hypot(gx, gy).mean())


def spread(values: list[float]) -> str:
    return f"median {np.median(values):.3f} [p10 {np.percentile(values, 10):.3f}, p90 {np.percentile(values, 90):.3f}]"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data" / "real")
    args = parser.parse_args(argv)
    files = [p for p in sorted(args.data.rglob("*")) if p.suffix.lower() in SUPPORTED_EXTENSIONS]
    if not files:
        print(f"no photos under {args.data}", file=sys.stderr)
        return 2
    enhancer = Enhancer(EnhanceSettings())
    rows: list[dict[str, float | str | bool]] = []
    for path in files:
        image = load_image(path)
        before = to_uint8(image.pixels)
        restoration = enhancer.enhance(image)
        after = to_uint8(restoration.output.pixels)
        for record in restoration.faces:
            x1, y1, x2, y2 = (round(v) for v in record.face.box)
            width, height = x2 - x1, y2 - y1
            # The central 80 % of the box, its corner moved onto the photo's 8 px grid.
            left, top = max(0, (x1 + width // 10) // 8 * 8), max(0, (y1 + height // 10) // 8 * 8)
            right, bottom = min(before.shape[1], x2 - width // 10), min(before.shape[0], y2 - height // 10)
            a, b = luminance(before[top:bottom, left:right]), luminance(after[top:bottom, left:right])
            if min(a.shape) < 16:
                continue
            rows.append({"source": path.parent.name, "width": width, "jpeg": path.suffix.lower() in (".jpg", ".jpeg"),
                         "block_in": blockiness(a), "block_out": blockiness(b),
                         "noise_in": noise_level(a), "noise_out": noise_level(b),
                         "detail": sobel_detail(b) / max(sobel_detail(a), 1e-9)})
    print(f"{len(files)} photos, {len(rows)} faces (face width {spread([float(r['width']) for r in rows])} px)")
    jpeg = [r for r in rows if r["jpeg"]]
    for label, chosen in (("JPEG faces", jpeg), ("all faces", rows)):
        print(f"{label} ({len(chosen)}): blockiness {spread([float(r['block_in']) for r in chosen])} -> "
              f"{spread([float(r['block_out']) for r in chosen])}")
    print(f"noise (levels): {spread([float(r['noise_in']) for r in rows])} -> "
          f"{spread([float(r['noise_out']) for r in rows])}")
    print(f"detail, out / in: {spread([float(r['detail']) for r in rows])}")
    for source in sorted({str(r["source"]) for r in rows}):
        part = [r for r in rows if r["source"] == source]
        print(f"  {source:44} {len(part):2d} faces, width {np.median([float(r['width']) for r in part]):5.0f}, "
              f"blockiness {np.median([float(r['block_in']) for r in part]):.3f} -> "
              f"{np.median([float(r['block_out']) for r in part]):.3f}, "
              f"noise {np.median([float(r['noise_in']) for r in part]):.2f} -> "
              f"{np.median([float(r['noise_out']) for r in part]):.2f}, "
              f"detail x{np.median([float(r['detail']) for r in part]):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
