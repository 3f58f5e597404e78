"""Compare the detectors on a folder of photos without ground truth.

``python -m engine.detectors.evaluate --images ../shared/data/real --models ../shared/models``
runs every manifest detector whose files are present over every image, at full resolution and on
a copy whose long side is at most 1024 px, and prints a Markdown table: images with at least one
face, faces found, agreement with the consensus of the detectors, and mean milliseconds per image.

With no ground truth, "recall" is approximated by a consensus: all detections (both resolutions,
in full-image coordinates) are clustered by IoU; a cluster found by at least ``min_support``
different detectors counts as a real face. A detector's recall is the share of consensus faces it
found, and its "extra" count is faces nobody else confirms (likely false positives, or faces
only it can see).
"""

from __future__ import annotations

import argparse
import importlib.util
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnxruntime as ort

from engine.detectors import build_detector
from engine.detectors.base import Detector, MakeSession, box_iou, resize_to_side
from engine.faces import Face
from engine.imageio import load_image, to_uint8
from engine.models import ModelSpec, load_manifests

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}
MATCH_IOU = 0.4


@dataclass
class Run:
    """One detector at one resolution over the whole folder."""

    detector: str
    max_side: int | None
    faces: dict[Path, list[Face]] = field(default_factory=dict)  # in full-image coordinates
    seconds: list[float] = field(default_factory=list)


@dataclass(frozen=True)
class Row:
    detector: str
    max_side: int | None
    images_with_face: int
    faces: int
    consensus_found: int
    extra: int
    ms_mean: float


def find_images(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def load_rgb(path: Path) -> np.ndarray:
    """The image upright as RGB uint8 (alpha dropped, 16-bit scaled down)."""
    return to_uint8(load_image(path).pixels)


def package_dir(package: str) -> Path | None:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def available_paths(spec: ModelSpec, models_dir: Path) -> dict[str, Path] | None:
    """Every role's file, or None when one is missing."""
    paths = {}
    for model_file in spec.files:
        folder = package_dir(model_file.package) if model_file.package else models_dir
        if folder is None or not (folder / model_file.file).is_file():
            return None
        paths[model_file.role] = folder / model_file.file
    return paths


def build_available(specs: Sequence[ModelSpec], models_dir: Path, make_session: MakeSession) -> dict[str, Detector]:
    detectors = {}
    for spec in specs:
        if spec.family != "detector":
            continue
        paths = available_paths(spec, models_dir)
        if paths is not None:
            detectors[spec.name] = build_detector(spec, paths, make_session)
    return detectors


def run_detector(name: str, detector: Detector, images: Mapping[Path, np.ndarray], max_side: int | None) -> Run:
    run = Run(name, max_side)
    first = next(iter(images.values()), None)
    if first is not None:
        detector.detect(resize_to_side(first, max_side)[0])  # warm-up, not timed
    for path, image in images.items():
        small, factor = resize_to_side(image, max_side)
        start = time.perf_counter()
        faces = detector.detect(small)
        run.seconds.append(time.perf_counter() - start)
        run.faces[path] = [f.scaled(1 / factor) for f in faces] if factor != 1.0 else faces
    return run


def consensus(runs: Sequence[Run], min_support: int) -> dict[Path, list[np.ndarray]]:
    """Per image, boxes of face clusters found by at least ``min_support`` different detectors."""
    out: dict[Path, list[np.ndarray]] = {}
    paths = {p for r in runs for p in r.faces}
    for path in paths:
        clusters: list[tuple[np.ndarray, set[str]]] = []
        detections = [(np.array(f.box), r.detector) for r in runs for f in r.faces.get(path, [])]
        for box, name in detections:
            for centre, names in clusters:
                if box_iou(centre, box[None])[0] >= MATCH_IOU:
                    names.add(name)
                    break
            else:
                clusters.append((box, {name}))
        out[path] = [centre for centre, names in clusters if len(names) >= min_support]
    return out


def summarise(run: Run, truth: Mapping[Path, list[np.ndarray]]) -> Row:
    found = extra = 0
    for path, faces in run.faces.items():
        real = truth.get(path, [])
        boxes = np.array([f.box for f in faces]).reshape(-1, 4)
        for centre in real:
            if len(boxes) and box_iou(centre, boxes).max() >= MATCH_IOU:
                found += 1
        for box in boxes:
            if not real or box_iou(box, np.array(real)).max() < MATCH_IOU:
                extra += 1
    return Row(
        detector=run.detector,
        max_side=run.max_side,
        images_with_face=sum(1 for faces in run.faces.values() if faces),
        faces=sum(len(faces) for faces in run.faces.values()),
        consensus_found=found,
        extra=extra,
        ms_mean=1000.0 * float(np.mean(run.seconds)) if run.seconds else 0.0,
    )


def evaluate(
    detectors: Mapping[str, Detector],
    image_paths: Sequence[Path],
    max_sides: Sequence[int | None] = (None, 1024),
    min_support: int = 3,
) -> tuple[list[Row], int, int]:
    """Rows per detector and resolution, the number of consensus faces and of images holding one."""
    images = {p: load_rgb(p) for p in image_paths}
    runs = [run_detector(n, d, images, s) for n, d in detectors.items() for s in max_sides]
    truth = consensus(runs, min_support)
    rows = [summarise(r, truth) for r in runs]
    return rows, sum(len(v) for v in truth.values()), sum(1 for v in truth.values() if v)


def markdown_table(rows: Sequence[Row], consensus_faces: int, consensus_images: int, images: int) -> str:
    lines = [
        f"| detector | input | images with a face (of {images}) | faces found |"
        f" consensus faces found (of {consensus_faces}) | extra faces | ms / image |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        side = "full" if r.max_side is None else f"long side <= {r.max_side}"
        lines.append(
            f"| {r.detector} | {side} | {r.images_with_face} | {r.faces} | {r.consensus_found} |"
            f" {r.extra} | {r.ms_mean:.1f} |"
        )
    lines.append("")
    lines.append(f"Consensus: {consensus_faces} faces in {consensus_images} images.")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    here = Path(__file__).resolve().parents[2]
    parser = argparse.ArgumentParser(prog="python -m engine.detectors.evaluate", description=__doc__)
    parser.add_argument("--images", type=Path, default=here.parent / "shared" / "data" / "real")
    parser.add_argument("--models", type=Path, default=here.parent / "shared" / "models")
    parser.add_argument("--manifest", type=Path, default=here / "assets" / "models" / "detectors.json")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--min-support", type=int, default=3)
    parser.add_argument("--only", nargs="*", default=None, help="detector names to run")
    args = parser.parse_args(argv)

    from engine.runtime import create_session

    def make_session(path: Path | bytes) -> ort.InferenceSession:
        return create_session(path, provider="cpu", threads=args.threads)

    specs = [s for s in load_manifests([args.manifest]) if args.only is None or s.name in args.only]
    detectors = build_available(specs, args.models, make_session)
    image_paths = find_images(args.images)
    rows, faces, with_face = evaluate(detectors, image_paths, min_support=args.min_support)
    print(markdown_table(rows, faces, with_face, len(image_paths)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
