"""Big faces in over-compressed JPEGs: keep the photo's own detail, or paste the whole restored crop?

Not part of the test suite. Where a face is bigger in the photo than the restorer's crop, the engine
pastes only the restorer's change, so the photo keeps the detail finer than the crop can hold
(``engine.faces.keeps_photo_detail``). In a heavily compressed JPEG that finer "detail" is the 8 px
block grid, which the crop cannot see and so cannot remove. This script measures the three choices,
face by face, on photos shrunk so their biggest face is ``--faces`` px, then saved at each JPEG
``--qualities``:

- detail: always keep the photo's finer detail (the engine before ``BLOCKY_FACE``);
- whole: always paste the whole restored crop;
- engine: what ``compose`` does now (``face_detail_worth_keeping``).

Scores on the central 60 % of the biggest face, against the photo before compression: PSNR (dB),
``jpeg_blockiness`` (about 1 with no blocks) and the detail ratio (mean Sobel magnitude of the
luminance over the uncompressed photo's). The photos: ``skimage.data.astronaut()`` enlarged 14x
(cubic, so without fine detail of its own) and, when present, the three big selfies of
``../shared/data/real``.

    python scripts/blocky_faces.py [--faces 800,1150] [--qualities 10,15,20,30,50,90]
"""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

import numpy as np
from PIL import Image as PILImage

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import engine.faces as facelib
from engine.imageio import Image, load_image
from engine.pipeline import ComposeOptions, Enhancer, EnhanceSettings, FaceRestoration, compose, finish_face
from engine.resample import resize

SELFIES = (
    "yangxy_GPEN/selfie_2020-12-10_175750.jpg",
    "yangxy_GPEN/selfie_20200320.101220.jpg",
    "yangxy_GPEN/selfie_2021-03-10_160843_29.jpg",
)


def luminance(rgb: np.ndarray) -> np.ndarray:
    return rgb[..., :3].astype(np.float64) @ np.array([0.299, 0.587, 0.114])


def sobel_mean(y: np.ndarray) -> float:
    gx, gy = np.abs(np.diff(y, axis=1))[:-1], np.abs(np.diff(y, axis=0))[:, :-1]
    return float(np.hypot(gx, gy).mean())


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(255.0**2 / np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)))


def jpeg(pixels: np.ndarray, quality: int) -> np.ndarray:
    buffer = io.BytesIO()
    PILImage.fromarray(pixels).save(buffer, "JPEG", quality=quality)
    return np.asarray(PILImage.open(io.BytesIO(buffer.getvalue())).convert("RGB"))


def photos(data: Path) -> list[tuple[str, np.ndarray]]:
    from skimage import data as skdata

    astronaut = skdata.astronaut()
    found = [("astronaut x14", resize(astronaut, (astronaut.shape[1] * 14, astronaut.shape[0] * 14), "cubic"))]
    for name in SELFIES:
        if (data / name).is_file():
            found.append((Path(name).stem, load_image(data / name).pixels))
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data" / "real")
    parser.add_argument("--faces", default="800,1150", help="sizes of the biggest face, px")
    parser.add_argument("--qualities", default="10,15,20,30,50,90")
    args = parser.parse_args(argv)
    sides = [int(v) for v in args.faces.split(",")]
    qualities = [int(v) for v in args.qualities.split(",")]
    enhancer = Enhancer(EnhanceSettings())
    options = ComposeOptions(enhancer.fidelity)

    print(f"restora-lite {enhancer.precision}, fidelity {enhancer.fidelity}; BLOCKY_FACE = {facelib.BLOCKY_FACE}")
    print("| photo | face px | JPEG q | input PSNR / blockiness | detail kept | whole crop | engine |")
    print("|---|---:|---:|---|---|---|---|")
    for name, full in photos(args.data):
        first = enhancer.enhance(Image(pixels=full)).faces
        if not first:
            print(f"| {name} | no face found |")
            continue
        biggest = max(first, key=lambda r: r.face.width)
        for side in sides:
            scale = side / biggest.face.width
            if scale > 1.0:
                continue
            height, width = full.shape[:2]
            clean = resize(full, (round(width * scale), round(height * scale)), "area")
            for quality in qualities:
                degraded = jpeg(clean, quality)
                restoration = enhancer.enhance(Image(pixels=degraded))
                if not restoration.faces:
                    continue
                record: FaceRestoration = max(restoration.faces, key=lambda r: r.face.width)
                x1, y1, x2, y2 = record.face.box
                inset_x, inset_y = (x2 - x1) * 0.2, (y2 - y1) * 0.2
                region = (slice(int(y1 + inset_y), int(y2 - inset_y)), slice(int(x1 + inset_x), int(x2 - inset_x)))
                reference = sobel_mean(luminance(clean[region]))
                cells = []
                finished, strength = finish_face(record, enhancer.fidelity, True)
                for keep in (True, False, None):  # detail kept, whole crop, the engine's choice
                    if keep is None:
                        out = compose(Image(pixels=degraded), (record,), options).pixels[region]
                    else:
                        out = facelib.paste_back(degraded, finished, record.matrix, strength=strength,
                                                 original_crop=record.crop if keep else None)[region]
                    cells.append(f"{psnr(out, clean[region]):.2f} / {facelib.jpeg_blockiness(out):.2f} / "
                                 f"{sobel_mean(luminance(out)) / reference:.2f}")
                blocks = facelib.jpeg_blockiness(degraded, record.face.box)
                print(f"| {name} | {round(x2 - x1)} | {quality} | {psnr(degraded[region], clean[region]):.2f} / "
                      f"{blocks:.2f} | " + " | ".join(cells) + " |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
