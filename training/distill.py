"""Cache a teacher's outputs on a fixed pool of degraded training patches, for distillation.

    python -m training.distill --teacher runs/teacher1/ckpt-0004300.safetensors --out runs/cache-t1 --patches 6144

The teacher is a bigger net of the same family (``training.train --widen ... --add-blocks ...`` from
the student, so it starts as the student and grows from there). Running it inside every student step
would cost about half a student step again on this CPU; cached once, its outputs cost a disk read.

The cache is a folder of ``.npy`` arrays (float16, read memory-mapped, ``allow_pickle=False``):
``inputs`` (the degraded patches), ``targets`` (the clean ones), ``outputs`` (the teacher's
restorations) and ``body`` (the teacher's 1/8-resolution body features, the target of feature
distillation), plus ``cache.json`` naming the teacher and the draw. It is written under a ``.part``
name and renamed when complete, so a half-written cache is never read.

Patches are not flipped or rotated when read back: the stride-2 convs make the body features depend
on the pixel grid's phase, so a flipped patch's features are not the flipped features.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .checkpoint import load_meta, load_model
from .data import DEFAULT_DATA_DIR, PatchSampler
from .train import make_batch

ARRAYS = ("inputs", "targets", "outputs", "body")


@dataclass(frozen=True)
class TeacherCache:
    """Memory-mapped arrays, N x C x H x W float16 each (``body`` at 1/8 of the patch size)."""

    inputs: np.ndarray
    targets: np.ndarray
    outputs: np.ndarray
    body: np.ndarray
    meta: dict[str, object]

    def __len__(self) -> int:
        return int(self.inputs.shape[0])

    @property
    def body_channels(self) -> int:
        return int(self.body.shape[1])

    def batch(self, rng: np.random.Generator, size: int) -> tuple[torch.Tensor, ...]:
        """``size`` patches drawn without replacement: (input, target, teacher output, teacher body)."""
        idx = np.sort(rng.choice(len(self), size=min(size, len(self)), replace=False))
        return tuple(
            torch.from_numpy(np.asarray(a[idx], dtype=np.float32))
            for a in (self.inputs, self.targets, self.outputs, self.body)
        )


def open_cache(folder: Path) -> TeacherCache:
    if not (folder / "cache.json").exists():
        raise FileNotFoundError(f"{folder} is not a complete teacher cache (no cache.json)")
    meta = json.loads((folder / "cache.json").read_text())
    arrays = {name: np.load(folder / f"{name}.npy", mmap_mode="r", allow_pickle=False) for name in ARRAYS}
    counts = {a.shape[0] for a in arrays.values()}
    if len(counts) != 1:
        raise ValueError(f"{folder}: arrays of different lengths {sorted(counts)}")
    return TeacherCache(meta=meta, **arrays)


@torch.no_grad()
def build_cache(
    teacher_path: Path,
    sampler: PatchSampler,
    out_dir: Path,
    count: int,
    seed: int = 1,
    light_fraction: float = 0.25,
    degradations: str = "tiers",
    batch: int = 16,
) -> TeacherCache:
    """Draws ``count`` (degraded, clean) patches, seeded by ``seed`` and the batch index, and stores
    them with the teacher's (EMA weights') output and body features."""
    teacher = load_model(teacher_path)
    part = out_dir.with_name(out_dir.name + ".part")
    shutil.rmtree(part, ignore_errors=True)
    part.mkdir(parents=True)
    p = sampler.patch
    c3 = teacher.config.widths[3]
    shapes = {"inputs": (3, p, p), "targets": (3, p, p), "outputs": (3, p, p), "body": (c3, p // 8, p // 8)}
    arrays = {
        name: np.lib.format.open_memmap(part / f"{name}.npy", mode="w+", dtype=np.float16, shape=(count, *shape))
        for name, shape in shapes.items()
    }
    for start in range(0, count, batch):
        n = min(batch, count - start)
        rng = np.random.default_rng([seed, 7, start])
        x, y = make_batch(sampler, rng, n, light_fraction, degradations)
        out, body = teacher.native_with_body(x)
        for name, t in (("inputs", x), ("targets", y), ("outputs", out.clamp(0, 1)), ("body", body)):
            arrays[name][start : start + n] = t.numpy().astype(np.float16)
    for a in arrays.values():
        a.flush()
    del arrays
    teacher_meta = load_meta(teacher_path)
    meta = {
        "teacher": str(teacher_path),
        "teacher_net": teacher_meta["net"],
        "teacher_total_steps": teacher_meta.get("total_steps"),
        "patches": count,
        "patch": p,
        "seed": seed,
        "light_fraction": light_fraction,
        "degradations": degradations,
    }
    (part / "cache.json").write_text(json.dumps(meta, indent=1))
    if out_dir.exists():
        shutil.rmtree(out_dir)
    os.replace(part, out_dir)
    return open_cache(out_dir)


def feature_adapter(student_channels: int, teacher_channels: int) -> nn.Conv2d:
    """1x1 conv from the student's body features to the teacher's; trained with the student, not exported."""
    return nn.Conv2d(student_channels, teacher_channels, 1)


def feature_loss(adapted: torch.Tensor, teacher_body: torch.Tensor) -> torch.Tensor:
    """MSE relative to the teacher features' energy, so its weight does not depend on their scale."""
    return ((adapted - teacher_body) ** 2).mean() / (teacher_body**2).mean().clamp_min(1e-8)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m training.distill", description=__doc__.split("\n")[0])
    p.add_argument("--teacher", type=Path, required=True, help="teacher checkpoint (.safetensors)")
    p.add_argument("--out", type=Path, required=True, help="cache folder to write")
    p.add_argument("--patches", type=int, default=6144)
    p.add_argument("--patch", type=int, default=192)
    p.add_argument("--seed", type=int, default=1, help="distinct from training's seed 0: different patches")
    p.add_argument("--light-fraction", type=float, default=0.25)
    p.add_argument("--degradations", default="tiers", choices=["broad", "tiers"])
    p.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    p.add_argument("--keep-fraction", type=float, default=0.6, help="sharpest fraction of UTKFace kept")
    p.add_argument("--hq-fraction", type=float, default=0.15)
    p.add_argument("--threads", type=int, default=2)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    sampler = PatchSampler.from_dir(args.data_dir, args.patch, args.keep_fraction, args.hq_fraction)
    cache = build_cache(
        args.teacher, sampler, args.out, args.patches, args.seed, args.light_fraction, args.degradations
    )
    print(f"{args.out}: {len(cache)} patches, teacher body {cache.body_channels} channels")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
