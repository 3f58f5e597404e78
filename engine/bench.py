"""``restora bench``: how fast Restora is on this machine, measured side by side in one run.

Stages: restorer latency per model and precision (batch 1 and the best batch), detection time per
detector at 0.3/1/12/48 MP, end-to-end folders of generated photos through the real batch engine
and through a naive one-photo-at-a-time FP32 loop in the same process, and the peak RSS of a
48 MP photo in a fresh child process (``python -m engine.bench --worker ...``) so that figure is
that photo's own. Figures are ratios wherever possible: absolute times on a shared 2-core machine
move with the load, ratios taken side by side in one run much less.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import onnxruntime as ort
import PIL.Image

from engine.batch import BatchOptions, collect_inputs, run_batch
from engine.errors import RestoraError
from engine.faces import align_face
from engine.imageio import atomic_write_bytes, load_image, save_image
from engine.models import ModelStore
from engine.pipeline import (
    DEFAULT_DETECTOR,
    DEFAULT_RESTORER,
    Enhancer,
    EnhanceSettings,
    detect_faces,
    detection_scale,
    effective_min_face,
    load_detector,
)
from engine.resample import resize
from engine.restorers import load_restorer

if TYPE_CHECKING:
    from engine.cli import Environment

FLAG_NAMES = ("sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni",
              "avx512_bf16", "amx_int8")
MEGAPIXELS = (0.3, 1.0, 12.0, 48.0)
ASPECT = 4 / 3
NAIVE_DETECT_SIDE = 1 << 20  # "no downscaling": public tools detect at full resolution
SMALL_DETECT_SIDE = 640
MB = 1024 * 1024


@dataclass(frozen=True)
class Plan:
    """How much to measure: ``full`` for figures, ``quick`` (< 60 s), ``smoke`` (each stage once)."""

    name: str
    runs: int  # timed runs per latency figure, after warm-up
    warmup: int
    batches: tuple[int, ...]  # batch sizes tried for the "best batch"
    batch_runs: int
    detect_runs: int
    photos: dict[str, int]  # photo set -> photo count
    megapixels: tuple[float, ...] = MEGAPIXELS
    folder_rounds: int = 1  # passes over the photo sets; each set's figure is its median pass
    # 1 MP group photos (GROUP_SET: 12 faces, crops covering 100-150 photo pixels), timed like the sets
    # above but kept out of the folder ratio, which issue 9 defines on the 1- and 5-face sets.
    group_photos: int = 0


PLANS = {
    "full": Plan("full", runs=10, warmup=2, batches=(2, 4, 8), batch_runs=10, detect_runs=10,
                 photos={"1mp-1face": 24, "1mp-5faces": 8, "12mp-1face": 4, "12mp-5faces": 4}, folder_rounds=3,
                 group_photos=8),
    "quick": Plan("quick", runs=10, warmup=1, batches=(4,), batch_runs=3, detect_runs=3,
                  photos={"1mp-1face": 8, "1mp-5faces": 2, "12mp-1face": 1, "12mp-5faces": 1}, group_photos=2),
    "smoke": Plan("smoke", runs=1, warmup=0, batches=(2,), batch_runs=1, detect_runs=1,
                  photos={"1mp-1face": 2, "1mp-5faces": 1}, megapixels=(0.3, 1.0), group_photos=1),
}


@dataclass(frozen=True)
class Timing:
    median_ms: float
    min_ms: float
    max_ms: float
    runs: int


def measure(call: Callable[[], object], runs: int, warmup: int, per: int = 1) -> Timing:
    """Median/min/max milliseconds of ``call`` (divided by ``per`` items) after ``warmup`` calls."""
    for _ in range(warmup):
        call()
    samples = []
    for _ in range(max(1, runs)):
        start = time.perf_counter()
        call()
        samples.append((time.perf_counter() - start) * 1000.0 / per)
    return Timing(round(statistics.median(samples), 2), round(min(samples), 2), round(max(samples), 2),
                  len(samples))


# -- machine and memory ----------------------------------------------------------------------------


def machine_info() -> dict[str, Any]:
    """CPU model, logical cores and the instruction-set flags that decide INT8/FP32 speed."""
    cpu, flags = platform.processor() or platform.machine(), set[str]()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                key, _, value = line.partition(":")
                if key.strip() == "model name" and cpu in ("", platform.machine(), platform.processor()):
                    cpu = value.strip()
                elif key.strip() == "flags" and not flags:
                    flags = set(value.split())
    except OSError:
        pass  # not Linux: the model name from platform is all there is
    return {"cpu": cpu, "cores": os.cpu_count() or 1, "flags": [f for f in FLAG_NAMES if f in flags]}


def load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def _status_kb(field: str) -> int | None:
    try:
        with open("/proc/self/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


def reset_peak_rss() -> bool:
    """Restart the kernel's peak-RSS counter (VmHWM) so the next reading covers one measurement."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def peak_rss_mb() -> float | None:
    kb = _status_kb("VmHWM")
    return round(kb / 1024, 1) if kb is not None else None


def rss_mb() -> float | None:
    kb = _status_kb("VmRSS")
    return round(kb / 1024, 1) if kb is not None else None


# -- test photos -----------------------------------------------------------------------------------


def astronaut_face() -> np.ndarray:
    """The astronaut's head and shoulders (RGB uint8): the real face every test photo is built from."""
    from skimage import data

    return np.ascontiguousarray(data.astronaut()[10:250, 130:320])


def photo_size(megapixels: float) -> tuple[int, int]:
    width = round((megapixels * 1e6 * ASPECT) ** 0.5)
    return width, round(width / ASPECT)


def make_photo(megapixels: float, faces: int, seed: int = 0) -> np.ndarray:
    """A 4:3 photo with ``faces`` astronaut faces at several sizes on a smooth noisy background."""
    width, height = photo_size(megapixels)
    rng = np.random.default_rng(seed)
    ramp_x = np.linspace(70, 180, width, dtype=np.float32)[None, :, None]
    ramp_y = np.linspace(0, 50, height, dtype=np.float32)[:, None, None]
    tint = np.array([1.0, 0.95, 0.85], np.float32)[None, None, :]
    photo = np.empty((height, width, 3), np.uint8)
    for top in range(0, height, 1024):  # in strips: a 48 MP float copy would be 576 MB
        strip = (ramp_x + ramp_y[top : top + 1024]) * tint
        strip += rng.normal(0, 4, (1, width, 1)).astype(np.float32)
        photo[top : top + 1024] = np.clip(strip, 0, 255).astype(np.uint8)
    head = astronaut_face()
    columns = min(faces, 3)
    rows = -(-faces // columns)
    cell_w, cell_h = width // columns, height // rows
    for index in range(faces):
        # Face heights from about 1/3 of the cell down to about 1/6: several sizes in one photo.
        target_h = int(cell_h * (0.75 - 0.08 * (index % 4)))
        target_w = int(target_h * head.shape[1] / head.shape[0])
        target_w = min(target_w, cell_w - 2)
        patch = resize(head, (target_w, target_h), "area")
        row, column = divmod(index, columns)
        y = row * cell_h + (cell_h - target_h) // 2
        x = column * cell_w + (cell_w - target_w) // 2
        photo[y : y + target_h, x : x + target_w] = patch
    return photo


def write_jpeg(pixels: np.ndarray, path: Path, quality: int = 90) -> None:
    buffer = io.BytesIO()
    PIL.Image.fromarray(pixels).save(buffer, "JPEG", quality=quality)
    path.write_bytes(buffer.getvalue())


GROUP_SET = "1mp-12faces"


def photo_sets(plan: Plan) -> dict[str, int]:
    """Set name -> photo count: the plan's sets, then the group photos."""
    return {**plan.photos, **({GROUP_SET: plan.group_photos} if plan.group_photos else {})}


def write_photo_sets(root: Path, plan: Plan) -> dict[str, Path]:
    """One folder per set (``1mp-1face``...), each with ``count`` JPEGs (faces shifted per photo)."""
    folders: dict[str, Path] = {}
    for name, count in photo_sets(plan).items():
        megapixels = float(name.split("mp")[0])
        faces = int(name.split("-")[1].rstrip("faces").rstrip("face"))
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        base = make_photo(megapixels, faces)
        for index in range(count):
            # Roll a little per photo so no two inputs are identical bytes.
            write_jpeg(np.roll(base, index * 7, axis=1), folder / f"{name}-{index:03d}.jpg")
        folders[name] = folder
    return folders


# -- stages ----------------------------------------------------------------------------------------


def _files_present(store: ModelStore, name: str, precision: str | None = None) -> bool:
    spec = store.get(name, precision)
    return all(store.locate(spec, f.role) is not None for f in spec.files)


def aligned_test_crops(store: ModelStore, size: int, count: int, provider: str) -> np.ndarray:
    """(count, size, size, 3) aligned crops of the astronaut's face, as the pipeline would feed them."""
    from skimage import data

    astronaut = np.ascontiguousarray(data.astronaut())
    detector = load_detector(store, store.get(DEFAULT_DETECTOR), provider)
    faces = detector.detect(astronaut)
    if not faces:
        raise RestoraError("the default detector found no face in the astronaut test photo")
    crop = align_face(astronaut, faces[0], size).crop
    return np.repeat(crop[None], count, axis=0)


def measure_restorers(store: ModelStore, plan: Plan, provider: str, threads: int | None,
                      progress: Callable[[str], None]) -> list[dict[str, Any]]:
    """Per-face milliseconds of every restorer whose files are here, per precision, batch 1 and best."""
    rows: list[dict[str, Any]] = []
    crops_by_size: dict[int, np.ndarray] = {}
    names = sorted(store.names("restorer"), key=lambda n: (n != DEFAULT_RESTORER, n))
    for name in names:
        for precision in store.precisions(name):
            if not _files_present(store, name, precision):
                continue
            spec = store.get(name, precision)
            progress(f"restorer {spec.key}")
            restorer = load_restorer(store, name, precision, provider, threads)
            session = restorer.session
            if restorer.size not in crops_by_size:
                crops_by_size[restorer.size] = aligned_test_crops(store, restorer.size, max(plan.batches), provider)
            crops = crops_by_size[restorer.size]
            single = measure(partial(restorer.restore, crops[:1]), plan.runs, plan.warmup)
            by_batch: dict[int, Timing] = {1: single}
            for batch in plan.batches:
                if restorer.fixed_batch is not None and batch % restorer.fixed_batch:
                    continue
                by_batch[batch] = measure(partial(restorer.restore, crops[:batch]), plan.batch_runs,
                                          min(plan.warmup, 1), per=batch)
            best = min(by_batch, key=lambda b: by_batch[b].median_ms)
            # Batch 1 at each smaller crop size the restorer takes (small faces, faces.crop_size_for).
            by_crop: dict[int, Timing] = {}
            for size in restorer.sizes[:-1]:
                if size not in crops_by_size:
                    crops_by_size[size] = aligned_test_crops(store, size, max(plan.batches), provider)
                by_crop[size] = measure(partial(restorer.restore, crops_by_size[size][:1]), plan.batch_runs,
                                        min(plan.warmup, 1))
            # A face with no detail finer than half its crop: half size, itself and mirrored
            # (faces.content_crop_size, Enhancer.restore_aligned).
            half = restorer.size // 2
            coarse = None
            if half in by_crop:
                coarse = measure(partial(restorer.restore, crops_by_size[half][:1], mirrored=True),
                                 plan.batch_runs, min(plan.warmup, 1))
            rows.append({
                "model": name, "precision": precision, "key": f"{name}/{precision}",
                "provider": session.get_providers()[0].removesuffix("ExecutionProvider").lower(),
                "batch1": asdict(single), "best_batch": best, "best": asdict(by_batch[best]),
                "by_batch": {str(b): asdict(t) for b, t in by_batch.items()},
                "by_crop_size": {str(c): asdict(t) for c, t in by_crop.items()},
                **({"coarse": {"size": half, **asdict(coarse)}} if coarse is not None else {}),
            })
    return rows


def measure_detectors(store: ModelStore, plan: Plan, settings: EnhanceSettings,
                      progress: Callable[[str], None]) -> list[dict[str, Any]]:
    """Milliseconds per photo of every detector here, through the pipeline's downscaled detection."""
    detectors = []
    for name in sorted(store.names("detector"), key=lambda n: (n != DEFAULT_DETECTOR, n)):
        if _files_present(store, name):
            try:
                detectors.append(load_detector(store, store.get(name), settings.provider, settings.threads))
            except RestoraError as error:
                progress(f"detector {name} skipped: {error}")
    rows: list[dict[str, Any]] = []
    for megapixels in plan.megapixels:
        photo = make_photo(megapixels, 5 if megapixels >= 1 else 1, seed=1)
        # Fewer runs on the biggest photos: each costs the same full-size downscale.
        runs = plan.detect_runs if megapixels <= 12 else max(1, plan.detect_runs // 2)
        for detector in detectors:
            progress(f"detect {detector.name} {megapixels:g} MP")
            side, min_face = settings.detect_max_side, settings.min_face
            found = len(detect_faces(detector, photo, side, min_face))
            timing = measure(partial(detect_faces, detector, photo, side, min_face), runs, 0)
            height, width = photo.shape[:2]
            scale = detection_scale(width, height, side, effective_min_face(min_face, width, height))
            row = {"detector": detector.name, "megapixels": megapixels, "faces": found,
                   "detection_scale": round(scale, 4), **asdict(timing)}
            if megapixels == 1.0:
                # The same photo on a 640 px copy: what giving up faces under ~29 px would save.
                small = measure(partial(detect_faces, detector, photo, SMALL_DETECT_SIDE), runs, 0)
                row["copy_640_ms"] = small.median_ms
                row["copy_640_faces"] = len(detect_faces(detector, photo, SMALL_DETECT_SIDE))
            rows.append(row)
    return rows


@dataclass(frozen=True)
class FolderRun:
    photos: int
    faces: int
    seconds: float
    peak_rss_mb: float | None
    failed: int = 0

    @property
    def photos_per_s(self) -> float:
        return self.photos / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "photos_per_s": round(self.photos_per_s, 3),
                "seconds_per_photo": round(self.seconds / max(self.photos, 1), 4)}


def run_real(folder: Path, output: Path, enhancer: Enhancer) -> FolderRun:
    """The real engine: ``engine.batch.run_batch`` with its loaders, cross-photo batching and savers."""
    items = collect_inputs([folder])
    reset_peak_rss()
    start = time.perf_counter()
    report = run_batch(items, enhancer, BatchOptions(output_dir=output, quality=90))
    seconds = time.perf_counter() - start
    return FolderRun(len(items), report.faces, seconds, peak_rss_mb(), report.failed)


def run_naive(folder: Path, output: Path, enhancer: Enhancer) -> FolderRun:
    """The baseline public tools follow: one photo at a time, load -> detect -> each face -> paste -> save."""
    items = collect_inputs([folder])
    output.mkdir(parents=True, exist_ok=True)
    reset_peak_rss()
    start = time.perf_counter()
    faces = 0
    for item in items:
        image = load_image(item.path)
        restoration = enhancer.enhance(image)
        save_image(restoration.output, output / item.path.name, quality=90)
        faces += restoration.face_count
    seconds = time.perf_counter() - start
    return FolderRun(len(items), faces, seconds, peak_rss_mb())


def median_run(runs: Sequence[FolderRun]) -> FolderRun:
    """The pass with the median time (the lower one of an even count), with the highest peak RSS of all."""
    ordered = sorted(runs, key=lambda run: run.seconds)
    peaks = [run.peak_rss_mb for run in runs if run.peak_rss_mb is not None]
    return replace(ordered[(len(ordered) - 1) // 2], peak_rss_mb=max(peaks) if peaks else None)


def naive_settings(settings: EnhanceSettings) -> EnhanceSettings:
    return replace(settings, precision="fp32", batch_size=1, detect_max_side=NAIVE_DETECT_SIDE)


def measure_folders(store: ModelStore, plan: Plan, settings: EnhanceSettings, root: Path,
                    progress: Callable[[str], None]) -> dict[str, Any]:
    folders = write_photo_sets(root / "photos", plan)
    real = Enhancer(settings, store)
    naive = Enhancer(naive_settings(settings), store)
    runs: dict[str, dict[str, list[FolderRun]]] = {name: {"real": [], "naive": []} for name in folders}
    rounds = max(1, plan.folder_rounds)
    for round_index in range(rounds):
        # A single pass over 4 photos of 12 MP moved the folder ratio by +-10 % between two runs on
        # an idle machine (2.76x and 3.23x); the median of several passes, with the engines taking
        # turns to go first, is what a figure can be compared by.
        order = ("real", "naive") if round_index % 2 == 0 else ("naive", "real")
        for name, folder in folders.items():
            for kind in order:
                label = "real engine" if kind == "real" else "naive baseline"
                progress(f"folder {name}: {label}" + (f" (pass {round_index + 1}/{rounds})" if rounds > 1 else ""))
                if kind == "real":
                    runs[name][kind].append(run_real(folder, root / "out-real" / name, real))
                else:
                    runs[name][kind].append(run_naive(folder, root / "out-naive" / name, naive))
    sets: dict[str, Any] = {}
    for name, kinds in runs.items():
        fast, slow = median_run(kinds["real"]), median_run(kinds["naive"])
        sets[name] = {"real": fast.to_dict(), "naive": slow.to_dict(),
                      "ratio": round(fast.photos_per_s / slow.photos_per_s, 3) if slow.photos_per_s else None,
                      "passes": {kind: [round(r.seconds, 3) for r in done] for kind, done in kinds.items()}}
    in_ratio = [sets[name] for name in plan.photos]
    real_photos = sum(s["real"]["photos"] for s in in_ratio)
    real_seconds = sum(s["real"]["seconds"] for s in in_ratio)
    naive_seconds = sum(s["naive"]["seconds"] for s in in_ratio)
    return {
        "real": {"precision": real.precision, "batch_size": real.batch_size,
                 "detect_max_side": settings.detect_max_side},
        "naive": {"precision": naive.precision, "batch_size": 1, "detect_max_side": "full resolution"},
        "sets": sets,
        "outside_ratio": [name for name in sets if name not in plan.photos],
        "passes": rounds,
        "folder": {"photos": real_photos, "real_seconds": round(real_seconds, 3),
                   "naive_seconds": round(naive_seconds, 3),
                   "throughput_ratio": round(naive_seconds / real_seconds, 3) if real_seconds else None},
    }


def measure_big_photo(root: Path, megapixels: float, faces: int, model_dirs: Sequence[Path],
                      progress: Callable[[str], None]) -> dict[str, Any]:
    """Peak RSS of one big photo through the real engine, in a fresh child process."""
    progress(f"peak memory: {megapixels:g} MP photo in a child process")
    folder = root / f"big-{megapixels:g}mp"
    folder.mkdir(parents=True, exist_ok=True)
    write_jpeg(make_photo(megapixels, faces, seed=2), folder / "big.jpg", quality=88)
    if getattr(sys, "frozen", False):
        # A frozen app cannot run ``-m engine.bench``: measure here, after restarting the peak counter.
        reset_peak_rss()
        return {**process_folder(folder, root / "big-out", model_dirs), "megapixels": megapixels,
                "note": "measured in the bench process, not a fresh one"}
    command = [sys.executable, "-m", "engine.bench", "--worker", str(folder), str(root / "big-out")]
    for directory in model_dirs:
        command += ["--model-dir", str(directory)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False,
                          cwd=Path(__file__).resolve().parents[1])
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise RestoraError(f"the {megapixels:g} MP memory worker failed: {last}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    result["megapixels"] = megapixels
    return result


def worker_main(argv: Sequence[str]) -> int:
    """``python -m engine.bench --worker FOLDER OUT [--model-dir D]...``: JSON line with the peak RSS."""
    parser = argparse.ArgumentParser(prog="engine.bench --worker")
    parser.add_argument("--worker", nargs=2, metavar=("FOLDER", "OUT"), required=True)
    parser.add_argument("--model-dir", action="append", default=[])
    args = parser.parse_args(argv)
    try:
        result = process_folder(Path(args.worker[0]), Path(args.worker[1]), [Path(d) for d in args.model_dir])
    except RestoraError as error:
        print(error, file=sys.stderr)
        return 1
    print(json.dumps(result))
    return 0


def process_folder(folder: Path, output: Path, model_dirs: Sequence[Path]) -> dict[str, Any]:
    """Default settings through ``run_batch``; the peak RSS includes the interpreter and models."""
    store = ModelStore.default(extra_dirs=model_dirs)
    enhancer = Enhancer(EnhanceSettings(), store)
    ready = rss_mb()  # interpreter + libraries + models, before the photo
    start = time.perf_counter()
    report = run_batch(collect_inputs([folder]), enhancer, BatchOptions(output_dir=output, quality=90))
    seconds = time.perf_counter() - start
    if report.failed:
        raise RestoraError(report.items[0].error or "the photo failed")
    return {"peak_rss_mb": peak_rss_mb(), "rss_before_photo_mb": ready, "seconds": round(seconds, 3),
            "faces": report.faces}


# -- the whole run ---------------------------------------------------------------------------------


def run_bench(store: ModelStore, plan: Plan, settings: EnhanceSettings, model_dirs: Sequence[Path],
              progress: Callable[[str], None]) -> dict[str, Any]:
    started = time.perf_counter()
    result: dict[str, Any] = {"version": 1, "plan": plan.name, "machine": machine_info(),
                              "onnxruntime": ort.__version__, "load_average_before": load_average()}
    result["restorers"] = measure_restorers(store, plan, settings.provider, settings.threads, progress)
    result["detectors"] = measure_detectors(store, plan, settings, progress)
    with tempfile.TemporaryDirectory(prefix="restora-bench-") as temp:
        root = Path(temp)
        result["folders"] = measure_folders(store, plan, settings, root, progress)
        big_mp = 48.0 if plan.name != "smoke" else 12.0
        result["big_photo"] = measure_big_photo(root, big_mp, 3, model_dirs, progress)
    result["load_average_after"] = load_average()
    result["seconds"] = round(time.perf_counter() - started, 1)
    result["notes"] = precision_notes(result["restorers"])
    result["summary"] = summarise(result)
    return result


def per_face(row: dict[str, Any]) -> float:
    return float(row["best"]["median_ms"])


def precision_notes(rows: list[dict[str, Any]]) -> list[str]:
    """Say when a lower precision is not faster than FP32 (``--precision auto`` must not pick it)."""
    notes = []
    fp32 = {r["model"]: per_face(r) for r in rows if r["precision"] == "fp32"}
    for row in rows:
        base = fp32.get(row["model"])
        if row["precision"] == "fp32" or base is None:
            continue
        ratio = base / per_face(row)
        if ratio < 1.0:
            notes.append(f"{row['key']} is slower than FP32 on this machine ({ratio:.2f}x): "
                         f"--precision auto should not choose it here")
        else:
            notes.append(f"{row['key']} is {ratio:.2f}x as fast as FP32 on this machine")
    return notes


def summarise(result: dict[str, Any]) -> dict[str, Any]:
    """The ``summary`` object of the CLI contract (../shared/docs/CLI.md)."""
    rows = result["restorers"]
    per_face_ms = {r["key"]: round(per_face(r), 2) for r in rows}
    default = {r["precision"]: per_face(r) for r in rows if r["model"] == DEFAULT_RESTORER}
    int8_speedup = round(default["fp32"] / default["int8"], 3) if "fp32" in default and "int8" in default else None
    detect_1mp = next((r["median_ms"] for r in result["detectors"]
                       if r["detector"] == DEFAULT_DETECTOR and r["megapixels"] == 1.0), None)
    one_face = result["folders"]["sets"].get("1mp-1face", {}).get("real", {})
    return {
        "machine": result["machine"],
        "per_face_ms": per_face_ms,
        "int8_speedup": int8_speedup,
        "throughput_ratio": result["folders"]["folder"]["throughput_ratio"],
        "photos_per_s_1mp": one_face.get("photos_per_s"),
        "detect_ms_1mp": detect_1mp,
        "peak_rss_mb_48mp": result["big_photo"]["peak_rss_mb"],
    }


def format_report(result: dict[str, Any]) -> str:
    machine = result["machine"]
    lines = [f"Restora bench ({result['plan']}), {result['seconds']} s; onnxruntime {result['onnxruntime']}",
             f"CPU: {machine['cpu']}, {machine['cores']} logical cores, flags: {', '.join(machine['flags']) or '-'}",
             f"load average before/after: {result['load_average_before']} / {result['load_average_after']}",
             "", "Restorer per-face ms (median [min-max])",
             f"{'model/precision':28} {'batch 1':>24} {'best batch':>30}"]
    for row in result["restorers"]:
        b1, best = row["batch1"], row["best"]
        lines.append(f"{row['key']:28} {_span(b1):>24} {('x' + str(row['best_batch']) + ': ' + _span(best)):>30}")
        if row.get("by_crop_size"):
            crops = ", ".join(f"{size} px {timing['median_ms']:.1f}" for size, timing in row["by_crop_size"].items())
            lines.append(f"{'':28}   smaller crops, batch 1: {crops}")
        if row.get("coarse"):
            coarse = row["coarse"]
            lines.append(f"{'':28}   a coarse face ({coarse['size']} px, itself and mirrored): {_span(coarse)}")
    lines += ["", "Detection ms per photo (median [min-max]) at the pipeline's detection scale (auto minimum face)",
              f"{'detector':22} {'MP':>5} {'scale':>6} {'faces':>5} {'ms':>24} {'640px copy ms (faces)':>22}"]
    for row in result["detectors"]:
        small = row.get("copy_640_ms")
        extra = "" if small is None else f"{small:.1f} ({row['copy_640_faces']})"
        lines.append(f"{row['detector']:22} {row['megapixels']:>5g} {row['detection_scale']:>6.3f} {row['faces']:>5} "
                     f"{_span(row):>24} {extra:>22}")
    folders = result["folders"]
    lines += ["", f"End to end (real: {folders['real']['precision']}, batch {folders['real']['batch_size']}, "
              "pipelined; naive: fp32, one face per call, one photo at a time"
              + (f"; median of {folders['passes']} passes)" if folders.get("passes", 1) > 1 else ")"),
              f"{'set':12} {'photos':>6} {'faces':>5} {'real s/photo':>12} {'photos/s':>9} {'naive s/photo':>13} "
              f"{'photos/s':>9} {'ratio':>6} {'peak MB':>8}"]
    outside = folders.get("outside_ratio", [])
    for name, entry in folders["sets"].items():
        real, naive = entry["real"], entry["naive"]
        lines.append(f"{name + ('*' if name in outside else ''):12} {real['photos']:>6} {real['faces']:>5} "
                     f"{real['seconds_per_photo']:>12.3f} {real['photos_per_s']:>9.2f} "
                     f"{naive['seconds_per_photo']:>13.3f} {naive['photos_per_s']:>9.2f} "
                     f"{entry['ratio'] or 0:>5.2f}x {real['peak_rss_mb'] or 0:>8.0f}")
    total = folders["folder"]
    lines.append(f"{'folder':12} {total['photos']:>6}       real {total['real_seconds']:.2f} s, "
                 f"naive {total['naive_seconds']:.2f} s: {total['throughput_ratio']}x")
    if outside:
        lines.append(f"* {', '.join(outside)}: group photos (small faces), not in the folder figure")
    big = result["big_photo"]
    lines += ["", f"{big['megapixels']:g} MP photo, {big['faces']} faces, fresh process: peak RSS "
              f"{big['peak_rss_mb']} MB (interpreter + models before the photo: {big['rss_before_photo_mb']} MB), "
              f"{big['seconds']} s"]
    if result["notes"]:
        lines += ["", *result["notes"]]
    lines += ["", "summary: " + json.dumps(result["summary"])]
    return "\n".join(lines)


def _span(timing: dict[str, Any]) -> str:
    return f"{timing['median_ms']:.1f} [{timing['min_ms']:.1f}-{timing['max_ms']:.1f}]"


# -- command line ----------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write every figure as JSON")
    parser.add_argument("--quick", action="store_true", help="fewer runs and photos (under a minute)")
    parser.add_argument("--provider", default="auto", choices=("auto", "cpu", "cuda", "directml", "coreml",
                                                                "openvino"))
    parser.add_argument("--threads", type=int, default=None, help="onnxruntime threads (default: all cores)")
    # Each stage once, on small photos: for tests, not figures.
    parser.add_argument("--smoke", action="store_true", help=argparse.SUPPRESS)


def run(args: argparse.Namespace, env: Environment) -> int:
    plan = PLANS["smoke" if args.smoke else "quick" if args.quick else "full"]
    settings = EnhanceSettings(provider=args.provider, threads=args.threads)
    store = env.store()

    def progress(message: str) -> None:
        print(f"bench: {message}", file=env.stderr, flush=True)

    try:
        result = run_bench(store, plan, settings, env.model_dirs, progress)
    except RestoraError as error:
        print(f"restora bench: {error}", file=env.stderr)
        return 1
    print(format_report(result), file=env.stdout)
    if args.json is not None:
        atomic_write_bytes(args.json, json.dumps(result, indent=2).encode("utf-8"))
    return 0


if __name__ == "__main__":
    sys.exit(worker_main(sys.argv[1:]))
