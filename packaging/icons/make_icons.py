"""Draw Restora's app icon and write it in each platform's format.

    python packaging/icons/make_icons.py OUT_DIR   ->  restora.png (512 px), restora.ico, restora.icns

Drawn from code (no binary source to keep in sync): a rounded blue tile, a face outline and a
restoration sparkle. build.spec calls this at build time; the Linux .desktop file uses the PNG.
"""

from __future__ import annotations

import sys
from pathlib import Path

from PIL import Image, ImageDraw

SIZE = 1024  # drawn large, scaled down with a good filter


def draw_icon(size: int = SIZE) -> Image.Image:
    tile = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    draw = ImageDraw.Draw(tile)
    s = size / 1024
    # vertical blue gradient clipped to a rounded square
    gradient = Image.new("RGBA", (size, size))
    top, bottom = (77, 150, 255), (30, 72, 170)
    for y in range(size):
        t = y / (size - 1)
        colour = tuple(round(a + (b - a) * t) for a, b in zip(top, bottom, strict=True))
        ImageDraw.Draw(gradient).line([(0, y), (size, y)], fill=(*colour, 255))
    mask = Image.new("L", (size, size), 0)
    ImageDraw.Draw(mask).rounded_rectangle([40 * s, 40 * s, 984 * s, 984 * s], radius=200 * s, fill=255)
    tile.paste(gradient, (0, 0), mask)
    white = (255, 255, 255, 255)
    width = round(44 * s)
    # the face: head, eyes, smile
    draw.ellipse([262 * s, 232 * s, 702 * s, 752 * s], outline=white, width=width)
    draw.ellipse([372 * s, 418 * s, 424 * s, 470 * s], fill=white)
    draw.ellipse([540 * s, 418 * s, 592 * s, 470 * s], fill=white)
    draw.arc([382 * s, 470 * s, 582 * s, 640 * s], start=20, end=160, fill=white, width=width)
    # the sparkle: a four-pointed star at the top right
    cx, cy, r, w = 772 * s, 262 * s, 130 * s, 34 * s
    draw.polygon([(cx, cy - r), (cx + w, cy - w), (cx + r, cy), (cx + w, cy + w),
                  (cx, cy + r), (cx - w, cy + w), (cx - r, cy), (cx - w, cy - w)], fill=white)
    return tile


def write_icons(out_dir: Path) -> dict[str, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    icon = draw_icon()
    paths = {"png": out_dir / "restora.png", "ico": out_dir / "restora.ico", "icns": out_dir / "restora.icns"}
    icon.resize((512, 512), Image.Resampling.LANCZOS).save(paths["png"])
    icon.save(paths["ico"], sizes=[(16, 16), (24, 24), (32, 32), (48, 48), (64, 64), (128, 128), (256, 256)])
    icon.resize((512, 512), Image.Resampling.LANCZOS).save(paths["icns"])
    return paths


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: make_icons.py OUT_DIR")
    for path in write_icons(Path(sys.argv[1])).values():
        print(path)
