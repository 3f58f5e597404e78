"""Evaluate ONNX restorers on the 512 px validation faces at three degradation tiers.

    python -m training.evaluate --model assets/models/restora-lite-int8.onnx [--model ...] [--bench]

Scores on the central 80 % of each face: PSNR (RGB), SSIM (RGB, skimage) and a detail ratio (mean
Sobel gradient magnitude of the output's luminance / that of the sharp original), for the degraded
input, a classical baseline (non-local means + unsharp mask) and each model. Writes JSON and prints a
markdown table; --bench adds ms per face (batch 1, --threads threads, onnxruntime CPU).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path

import cv2
import numpy as np
import onnxruntime as ort
from skimage.metrics import structural_similarity

from engine.faces import content_crop_size, resize_aligned
from engine.models import ModelStore
from engine.pipeline import DEFAULT_RESTORER
from engine.resample import resize

from .data import DEFAULT_DATA_DIR, eval_face_files, load_rgb
from .degrade import TIERS, apply_degradation, seed_for

REPO = Path(__file__).resolve().parents[1]
Restorer = Callable[[np.ndarray], np.ndarray]


def central(img: np.ndarray, fraction: float = 0.8) -> np.ndarray:
    h, w = img.shape[:2]
    dy, dx = round(h * (1 - fraction) / 2), round(w * (1 - fraction) / 2)
    return img[dy : h - dy, dx : w - dx]


def luminance(img: np.ndarray) -> np.ndarray:
    return (img @ np.array([0.299, 0.587, 0.114], dtype=np.float32)).astype(np.float32)


def sobel_energy(img: np.ndarray) -> float:
    y = luminance(img)
    gx = cv2.Sobel(y, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(y, cv2.CV_32F, 0, 1, ksize=3)
    return float(np.mean(np.sqrt(gx * gx + gy * gy)))


def colour_shift(out: np.ndarray, clean: np.ndarray) -> float:
    """CIE76 ΔE between the mean CIELAB colours of two RGB [0, 1] images: a cast a person sees
    (about 2 is just noticeable side by side), independent of noise and blur, which average out."""
    means = [
        cv2.cvtColor(np.ascontiguousarray(img, dtype=np.float32), cv2.COLOR_RGB2Lab).reshape(-1, 3).mean(0)
        for img in (out, clean)
    ]
    return float(np.linalg.norm(means[0] - means[1]))


def central_ssim(out: np.ndarray, clean: np.ndarray) -> float:
    """SSIM (skimage, RGB) of ``out`` clipped to [0, 1] against ``clean``, on the central 80 %."""
    return float(structural_similarity(central(np.clip(out, 0, 1)), central(clean), channel_axis=2, data_range=1.0))


def scores(out: np.ndarray, clean: np.ndarray) -> dict[str, float]:
    o, c = central(np.clip(out, 0, 1)), central(clean)
    mse = float(np.mean((o - c) ** 2))
    return {
        "psnr": 10 * math.log10(1.0 / max(mse, 1e-12)),
        "ssim": central_ssim(out, clean),
        "detail": sobel_energy(o) / max(sobel_energy(c), 1e-8),
        "colour_shift": colour_shift(o, c),
    }


def classical(img: np.ndarray) -> np.ndarray:
    """Non-local-means denoise, then unsharp mask: the no-learning baseline, one fixed setting."""
    bgr = np.clip(img[..., ::-1] * 255 + 0.5, 0, 255).astype(np.uint8)
    den = cv2.fastNlMeansDenoisingColored(bgr, None, 7, 7, 7, 21)[..., ::-1].astype(np.float32) / 255
    blur = cv2.GaussianBlur(den, (0, 0), 2.0)
    return np.clip(den + 1.0 * (den - blur), 0, 1)


def make_session(path: Path, threads: int, spin: bool = True) -> ort.InferenceSession:
    """A CPU session; ``spin=False`` lets idle worker threads sleep (for sessions timed in turn)."""
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def onnx_restorer(session: ort.InferenceSession) -> Restorer:
    name = session.get_inputs()[0].name

    def run(img: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(img.transpose(2, 0, 1)[None], dtype=np.float32)
        out: np.ndarray = session.run(None, {name: x})[0][0].transpose(1, 2, 0)
        return out

    return run


def checkpoint_restorer(path: Path, scale: int = 0) -> Restorer:
    """A PyTorch checkpoint as a restorer (EMA weights when stored): compare runs before exporting.
    ``scale`` > 0 overrides the scale the net runs at (512 px input average-pooled by it)."""
    import torch  # the [train] extra; only needed for --checkpoint

    from .checkpoint import load_model

    model = load_model(path)
    if scale > 0:
        model.config = replace(model.config, scale=scale)

    def run(img: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            out: np.ndarray = model(torch.from_numpy(img.transpose(2, 0, 1)[None].copy()))[0].numpy()
        return out.transpose(1, 2, 0)

    return run


def remembering_last(restore: Restorer) -> Restorer:
    """``restore`` that returns its last output again when called on the same array object: ``evaluate``
    hands every method one degraded face, so a content-sized copy of a method that leaves the face at
    full size reuses that method's output instead of running the net on it a second time."""
    last: list[tuple[np.ndarray, np.ndarray]] = []

    def run(img: np.ndarray) -> np.ndarray:
        if last and last[0][0] is img:
            return last[0][1]
        out = restore(img)
        last[:] = [(img, out)]
        return out

    return run


def content_sized(restore: Restorer, sizes: tuple[int, ...]) -> Restorer:
    """``restore`` as the engine runs it on an aligned crop (``restora enhance --aligned``, fidelity 0,
    no colour match): at the smaller size ``engine.faces.content_crop_size`` picks for a face that holds
    no finer detail, restored as itself and mirrored and averaged (``Enhancer.restore_aligned``), the
    result enlarged (bicubic), as ``engine.pipeline.compose`` does."""
    def run(img: np.ndarray) -> np.ndarray:
        pixels = np.clip(np.rint(img * 255.0), 0, 255).astype(np.uint8)
        size = content_crop_size(pixels, sizes)
        if size == img.shape[0]:
            return restore(img)
        small = resize_aligned(pixels, size).astype(np.float32) / 255.0
        both = 0.5 * (restore(small) + restore(np.ascontiguousarray(small[:, ::-1]))[:, ::-1])
        return resize(np.ascontiguousarray(both), (img.shape[1], img.shape[0]), "cubic")

    return run


def bench(session: ort.InferenceSession, runs: int = 20, size: int = 512) -> float:
    """Median ms per face at batch 1 (after warm-up)."""
    x = np.random.default_rng(0).random((1, 3, size, size), dtype=np.float32)
    name = session.get_inputs()[0].name
    for _ in range(3):
        session.run(None, {name: x})
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        session.run(None, {name: x})
        times.append(time.perf_counter() - t)
    return float(np.median(times) * 1000)


def evaluate(
    methods: dict[str, Restorer], faces: list[Path], tiers: list[str]
) -> dict[str, dict[str, dict[str, float]]]:
    """{tier: {method: {metric: mean}}}; "input" is the degraded face itself."""
    result: dict[str, dict[str, dict[str, float]]] = {}
    for tier in tiers:
        sums: dict[str, dict[str, float]] = {}
        for path in faces:
            clean = load_rgb(path)
            degraded = apply_degradation(clean, TIERS[tier], np.random.default_rng(seed_for(path.name, tier)))
            for method, restore in {"input": lambda x: x, **methods}.items():
                for k, v in scores(restore(degraded), clean).items():
                    sums.setdefault(method, {}).setdefault(k, 0.0)
                    sums[method][k] += v
        result[tier] = {m: {k: v / len(faces) for k, v in s.items()} for m, s in sums.items()}
    return result


def markdown_table(result: dict[str, dict[str, dict[str, float]]]) -> str:
    lines = [
        "| tier | method | PSNR (dB) | ΔPSNR vs input | SSIM | ΔSSIM | detail ratio | colour ΔE |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for tier, methods in result.items():
        base = methods["input"]
        for method, s in methods.items():
            lines.append(
                f"| {tier} | {method} | {s['psnr']:.2f} | {s['psnr'] - base['psnr']:+.2f} | "
                f"{s['ssim']:.3f} | {s['ssim'] - base['ssim']:+.3f} | {s['detail']:.2f} | "
                f"{s.get('colour_shift', float('nan')):.2f} |"
            )
    return "\n".join(lines)


def model_labels(paths: list[Path]) -> dict[str, Path]:
    """A table label per model: its file stem, or ``folder/stem`` where stems repeat, so that two
    versions of one model compared in one run (``assets/models/x.onnx`` vs ``/tmp/v7/x.onnx``) do not
    overwrite each other's rows."""
    stems = [p.stem for p in paths]
    labels = {(p.stem if stems.count(p.stem) == 1 else f"{p.parent.name}/{p.stem}"): p for p in paths}
    if len(labels) != len(paths):
        raise ValueError("two --model paths share both folder and file name; give each a distinct one")
    return labels


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.evaluate", description=__doc__.split("\n")[0])
    p.add_argument("--model", type=Path, action="append", default=[], help="an ONNX restorer (repeatable)")
    p.add_argument("--checkpoint", type=Path, action="append", default=[], help="a training checkpoint (repeatable)")
    p.add_argument("--scale", type=int, default=0, help="with --checkpoint: run the net on 512/scale px")
    p.add_argument(
        "--content-sizes",
        action="store_true",
        help="also score each model as the engine runs it: at 256 px where a face holds no finer detail",
    )
    p.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    p.add_argument("--tiers", default="mild,medium,severe")
    p.add_argument("--limit", type=int, default=0, help="use only the first N faces (0: all)")
    p.add_argument("--no-classical", action="store_true")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--bench", action="store_true", help="also time each model (ms per 512 px face, batch 1)")
    p.add_argument("--out", type=Path, default=REPO / "runs" / "eval" / "eval.json")
    args = p.parse_args(argv)
    cv2.setNumThreads(1)

    faces = eval_face_files(args.data_dir)
    if args.limit:
        faces = faces[: args.limit]
    try:
        labelled = model_labels(args.model)
    except ValueError as exc:
        p.error(str(exc))
    sessions = {label: make_session(path, args.threads) for label, path in labelled.items()}
    methods: dict[str, Restorer] = {} if args.no_classical else {"classical": classical}
    methods.update({name: onnx_restorer(s) for name, s in sessions.items()})
    if args.checkpoint:
        import torch

        torch.set_num_threads(args.threads)
        for ckpt in args.checkpoint:
            label = f"{ckpt.parent.name}/{ckpt.stem}" + (f"@scale{args.scale}" if args.scale else "")
            methods[label] = checkpoint_restorer(ckpt, args.scale)
    if args.content_sizes:
        # The sizes the engine restores restora-lite at: its manifest's crop sizes and its full size.
        lite = ModelStore.default().get(DEFAULT_RESTORER, "fp32")
        engine_sizes = (*lite.crop_sizes, lite.size or 512)  # its manifest entry gives a size
        for label in [m for m in methods if m != "classical"]:
            methods[label] = remembering_last(methods[label])
            methods[f"{label} (engine sizes)"] = content_sized(methods[label], engine_sizes)
    result = evaluate(methods, faces, args.tiers.split(","))
    report: dict[str, object] = {
        "faces": len(faces),
        "size": 512,
        "crop": "central 80%",
        "tiers": {t: asdict(TIERS[t]) for t in args.tiers.split(",")},
        "models": [str(m) for m in args.model] + [str(c) for c in args.checkpoint],
        "scores": result,
    }
    table = markdown_table(result)
    if args.bench:
        ms = {name: bench(s) for name, s in sessions.items()}
        report["ms_per_face"] = {"threads": args.threads, "batch": 1, **ms}
        table += f"\n\n| model | ms per 512 px face (batch 1, {args.threads} threads) |\n|---|---:|\n"
        table += "\n".join(f"| {k} | {v:.1f} |" for k, v in ms.items())
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    args.out.with_suffix(".md").write_text(table + "\n")
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
