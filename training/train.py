"""Train restora-lite on degraded face patches.

    python -m training.train --name first --minutes 22
    python -m training.train --name long --resume runs/first/ckpt-0001234.safetensors --minutes 600

Checkpoints: runs/<name>/ckpt-<step>.safetensors + .json every --ckpt-minutes (and at the end);
log: runs/<name>/log.jsonl. The learning rate follows a cosine over the --minutes budget (training
time only, carried across resumes) or over --steps when no budget is given.

On a GPU (``--device cuda``, the default where one is present) the degraded patches are made by
``--workers`` processes, since making them on the CPU is then the slow part; ``--amp bf16`` runs the
network's forward pass in bfloat16 (the losses stay in float32). Each batch is seeded by its step, so
a run makes the same batches on any device and with any number of workers (test).
"""

from __future__ import annotations

import argparse
import collections.abc
import json
import math
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .checkpoint import latest_checkpoint, load_checkpoint, load_ema, save_checkpoint
from .data import DEFAULT_DATA_DIR, PatchSampler, eval_face_files, load_rgb
from .degrade import TIERS, apply_degradation, draw_degradation, make_pair, scaled, seed_for
from .evaluate import central_ssim
from .gan import PatchDiscriminator, discriminator_loss, generator_losses
from .losses import restoration_loss
from .model import (
    NetConfig,
    RestoraLite,
    count_macs,
    count_params,
    dead_channel_count,
    deep_path_live,
    drop_blocks,
    grow_blocks,
    revive_dead_channels,
    revive_deep_path,
    widen,
)

REPO = Path(__file__).resolve().parents[1]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m training.train", description=__doc__.split("\n")[0])
    p.add_argument("--name", default="run", help="run folder under --runs-dir")
    p.add_argument("--runs-dir", type=Path, default=REPO / "runs")
    p.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    p.add_argument("--resume", default=None, help="a checkpoint .safetensors, or 'auto' for the run's latest")
    p.add_argument("--weights-only", action="store_true", help="with --resume: fresh optimizer and schedule")
    p.add_argument("--minutes", type=float, default=None, help="training-time budget (cosine LR spans it)")
    p.add_argument("--steps", type=int, default=20000, help="step budget when --minutes is not given")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--patch", type=int, default=128)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--min-lr", type=float, default=2e-5)
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--weight-decay", type=float, default=1e-4)
    p.add_argument("--ssim-weight", type=float, default=0.3)
    p.add_argument("--fft-weight", type=float, default=0.1)
    p.add_argument(
        "--psnr-weight",
        type=float,
        default=0.0,
        help="> 0: the pixel term is this x each image's -PSNR in dB, in place of L1 (0: L1)",
    )
    p.add_argument("--light-fraction", type=float, default=0.0, help="share of mild degradations")
    p.add_argument("--detail-weight", type=float, default=0.0, help="edge-strength (Sobel magnitude) L1")
    p.add_argument("--gan-weight", type=float, default=0.0, help="LSGAN patch-discriminator weight (0: off)")
    p.add_argument("--fm-weight", type=float, default=0.0, help="discriminator feature-matching weight")
    p.add_argument("--d-lr", type=float, default=2e-4, help="discriminator learning rate")
    p.add_argument(
        "--teacher-cache",
        type=Path,
        default=None,
        help="a training.distill cache: every batch is drawn from its patches (with or without the teacher's terms)",
    )
    p.add_argument("--distill-weight", type=float, default=0.0, help="L1 to the cached teacher output")
    p.add_argument(
        "--feature-weight",
        type=float,
        default=0.0,
        help="relative MSE from the body features (through a 1x1 adapter) to the teacher's",
    )
    p.add_argument("--widths", default="16,32,64,96")
    p.add_argument("--blocks", type=int, default=3)
    p.add_argument(
        "--add-blocks",
        type=int,
        default=0,
        help="with --resume --weights-only: grow the parent (its EMA weights when stored) by this many "
        "1/8-resolution residual blocks that start as the identity",
    )
    p.add_argument("--upsample", default="bilinear", choices=["bilinear", "nearest"])
    p.add_argument(
        "--scale",
        type=int,
        default=None,
        help="512 px inputs are pooled by this before the U-Net (default 1, or the resumed net's)",
    )
    p.add_argument(
        "--degradation-scale",
        type=float,
        default=None,
        help="blur and downscale sizes of the drawn degradations times this (default 1/scale: a net "
        "that works on 512 px faces pooled by 2 trains on degradations half as big, as it will see them)",
    )
    p.add_argument("--keep-fraction", type=float, default=0.6, help="sharpest fraction of UTKFace kept")
    p.add_argument(
        "--max-blockiness",
        type=float,
        default=0.0,
        help="keep only UTKFace faces whose JPEG blocks are at most this visible (data.jpeg_blockiness; 0: all)",
    )
    p.add_argument("--hq-fraction", type=float, default=0.15, help="share of patches from train_hq")
    p.add_argument("--shrink-probability", type=float, default=0.3, help="how often UTKFace is downscaled")
    p.add_argument("--min-shrink", type=float, default=0.7, help="smallest UTKFace downscale factor")
    p.add_argument("--max-shrink", type=float, default=1.0, help="largest UTKFace downscale factor")
    p.add_argument("--degradations", default="broad", choices=["broad", "tiers", "engine-tiers"],
                   help="training degradation ranges")
    p.add_argument(
        "--face-scale-from",
        type=float,
        default=0.0,
        help="degradations downscaling by at least this get ground truth at 512 px face scale (0: never)",
    )
    p.add_argument("--face-scale-min", type=float, default=2.2, help="smallest UTKFace enlargement for it")
    p.add_argument("--face-scale-max", type=float, default=2.8, help="largest UTKFace enlargement for it")
    p.add_argument("--ckpt-minutes", type=float, default=5.0)
    p.add_argument("--keep-ckpts", type=int, default=3)
    p.add_argument("--log-every", type=int, default=20)
    p.add_argument("--val-every", type=int, default=250)
    p.add_argument("--val-faces", type=int, default=6)
    p.add_argument("--ema", type=float, default=0.0, help="EMA decay of the weights (0: off); export uses it")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="auto: cuda where present")
    p.add_argument(
        "--workers",
        type=int,
        default=0,
        help="processes that make the degraded batches (0: the training process makes them, as on 2 cores)",
    )
    p.add_argument("--amp", default="none", choices=["none", "bf16"], help="bf16: autocast the forward pass (cuda)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--add-quarter-blocks",
        type=int,
        default=0,
        help="like --add-blocks, for residual blocks on the decoder's 1/4-resolution features",
    )
    p.add_argument(
        "--drop-blocks",
        default="",
        help="with --resume --weights-only: remove these 1/8-resolution residual blocks, e.g. 2 or 1,2 "
        "(0 is the first; training.model.drop_blocks), before any --add-blocks",
    )
    p.add_argument(
        "--revive-deep",
        action="store_true",
        help="with --resume --weights-only: restart the 1/4- and 1/8-resolution path (v1-v4's died; see "
        "training.model.revive_deep_path)",
    )
    p.add_argument(
        "--body-slope",
        type=float,
        default=None,
        help="negative slope of the 1/8-resolution activations (NetConfig.body_slope; 0 = ReLU); on a resumed "
        "net it replaces the checkpoint's, which changes its function a little",
    )
    p.add_argument(
        "--widen",
        default="",
        help="with --resume --weights-only: more channels per level, e.g. 24,48,96,128, computing the same "
        "function at first (training.model.widen); add --revive-dead to start the new channels live",
    )
    p.add_argument(
        "--revive-dead",
        action="store_true",
        help="with --resume --weights-only: fresh input weights for the ReLU channels that are dead on a probe "
        "batch of training patches (see training.model.revive_dead_channels)",
    )
    args = p.parse_args(argv)
    if args.widen and not (args.resume and args.weights_only):
        p.error("--widen grows a trained net: it needs --resume and --weights-only")
    if args.revive_dead and not (args.resume and args.weights_only):
        p.error("--revive-dead changes a trained net: it needs --resume and --weights-only")
    if (args.distill_weight > 0 or args.feature_weight > 0) and args.teacher_cache is None:
        p.error("--distill-weight and --feature-weight need --teacher-cache")
    if args.workers < 0:
        p.error("--workers must be 0 or more")
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: this PyTorch sees no CUDA device")
    if args.amp != "none" and args.device != "cuda":
        p.error("--amp bf16 is for --device cuda (on a CPU it is slower and changes the numbers)")
    if args.revive_deep and not (args.resume and args.weights_only):
        p.error("--revive-deep restarts part of a trained net: it needs --resume and --weights-only")
    if args.drop_blocks and not (args.resume and args.weights_only):
        p.error("--drop-blocks changes a trained net: it needs --resume and --weights-only")
    if (args.add_blocks or args.add_quarter_blocks) and not (args.resume and args.weights_only):
        p.error("--add-blocks and --add-quarter-blocks grow a trained net: they need --resume and --weights-only")
    return args


def lr_at(progress: float, step: int, args: argparse.Namespace) -> float:
    if step < args.warmup:
        return args.lr * (step + 1) / args.warmup
    progress = min(max(progress, 0.0), 1.0)
    return args.min_lr + 0.5 * (args.lr - args.min_lr) * (1 + math.cos(math.pi * progress))


def make_batch(
    sampler: PatchSampler,
    rng: np.random.Generator,
    batch: int,
    light_fraction: float = 0.0,
    degradations: str = "broad",
    face_scale_from: float = 0.0,
    face_scale: tuple[float, float] = (2.2, 2.8),
    degradation_scale: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``face_scale_from`` > 0: degradations that downscale by at least this much get a ground truth
    at the scale of a 512 px face (``PatchSampler.sample_face_scale``, UTKFace enlarged by a factor
    in ``face_scale``); all others, and every one when it is 0, a patch at native scale or below.
    ``degradation_scale`` != 1: each drawn degradation's blur and downscale are multiplied by it
    (``degrade.scaled``), for a net that sees 512 px faces pooled to a smaller size."""
    inputs, targets = [], []
    for _ in range(batch):
        if degradation_scale != 1.0:
            d = scaled(draw_degradation(rng, light_fraction, degradations), degradation_scale)
            degraded, target = make_pair(sampler.sample(rng), rng, degradation=d)
        elif face_scale_from > 0:
            d = draw_degradation(rng, light_fraction, degradations)
            heavy = d.downscale >= face_scale_from
            clean = sampler.sample_face_scale(rng, face_scale) if heavy else sampler.sample(rng)
            degraded, target = make_pair(clean, rng, degradation=d)
        else:
            clean = sampler.sample(rng)
            degraded, target = make_pair(clean, rng, light_fraction=light_fraction, degradations=degradations)
        inputs.append(degraded.transpose(2, 0, 1))
        targets.append(target.transpose(2, 0, 1))
    return torch.from_numpy(np.stack(inputs)), torch.from_numpy(np.stack(targets))


class StepBatches(torch.utils.data.Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """The training batch of each step, made from a generator seeded by (seed, step): the same
    batches whichever process makes them, so ``--workers`` changes the speed, never the run."""

    def __init__(self, sampler: PatchSampler, args: argparse.Namespace) -> None:
        self.sampler, self.args = sampler, args

    def __len__(self) -> int:
        return 2**62  # indexed by step; a time budget knows no last step

    def __getitem__(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        a = self.args
        rng = np.random.default_rng([a.seed, step])
        return make_batch(
            self.sampler, rng, a.batch, a.light_fraction, a.degradations, a.face_scale_from,
            (a.face_scale_min, a.face_scale_max), a.degradation_scale or 1.0,
        )


def _quiet_worker(_worker: int) -> None:
    # One thread per worker process: OpenCV (JPEG, blur) would otherwise start a pool in each.
    import cv2

    cv2.setNumThreads(1)


def step_batches(
    sampler: PatchSampler, args: argparse.Namespace, first_step: int
) -> collections.abc.Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The batches of steps ``first_step``, ``first_step + 1``... made in this process or, with
    ``args.workers``, by a torch DataLoader's worker processes (in step order, a few ahead)."""
    dataset = StepBatches(sampler, args)
    if args.workers == 0:
        step = first_step
        while True:
            yield dataset[step]
            step += 1
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=None,  # each item is already a batch
        sampler=range(first_step, len(dataset)),
        num_workers=args.workers,
        worker_init_fn=_quiet_worker,
        pin_memory=args.device == "cuda",
        prefetch_factor=4,
        persistent_workers=False,
    )
    yield from loader


def validation_set(data_dir: Path, count: int, tier: str = "medium") -> list[tuple[np.ndarray, np.ndarray]]:
    """Fixed (degraded, clean) 512 px pairs: the same bytes in every run."""
    pairs = []
    files = eval_face_files(data_dir)
    step = max(1, len(files) // max(count, 1))
    for path in files[::step][:count]:
        clean = load_rgb(path)
        rng = np.random.default_rng(seed_for(path.name, tier))
        pairs.append((apply_degradation(clean, TIERS[tier], rng), clean))
    return pairs


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((np.clip(a, 0, 1) - b) ** 2))
    return 10 * math.log10(1.0 / max(mse, 1e-12))


@torch.no_grad()
def validate(model: RestoraLite, pairs: list[tuple[np.ndarray, np.ndarray]]) -> dict[str, float]:
    model.eval()
    gains = []
    outs = []
    ssim_gains = []
    device = next(model.parameters()).device
    for degraded, clean in pairs:
        x = torch.from_numpy(degraded.transpose(2, 0, 1)[None].copy()).to(device)
        y = model(x)[0].float().cpu().numpy().transpose(1, 2, 0)
        outs.append(psnr(y, clean))
        gains.append(psnr(y, clean) - psnr(degraded, clean))
        # As training.evaluate scores it, so a run that trades PSNR for SSIM (--ssim-weight) shows it.
        ssim_gains.append(central_ssim(y, clean) - central_ssim(degraded, clean))
    probe = [torch.from_numpy(d.transpose(2, 0, 1)[None].copy()).to(device) for d, _ in pairs[:2]]
    live = [deep_path_live(model, x) for x in probe]
    dead = dead_channel_count(model, torch.cat(probe)) if probe else -1
    model.train()
    # deep_live: share of live up2 units; 0 means the 1/4 and 1/8 levels no longer reach the output.
    # dead_channels: ReLU channels that never pass on the first two faces (dead ones get no gradient).
    return {
        "val_psnr": float(np.mean(outs)),
        "val_gain_db": float(np.mean(gains)),
        "val_ssim_gain": float(np.mean(ssim_gains)),
        "deep_live": float(np.mean(live)) if live else float("nan"),
        "dead_channels": dead,
    }


def train(args: argparse.Namespace, sampler: PatchSampler | None = None) -> Path:
    """Runs until the budget is spent; returns the last checkpoint. ``sampler`` overrides --data-dir."""
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # one patch size all run: let cuDNN pick its kernels
    run_dir = args.runs_dir / args.name
    run_dir.mkdir(parents=True, exist_ok=True)

    net = NetConfig(
        widths=tuple(int(w) for w in args.widths.split(",")),  # type: ignore[arg-type]
        blocks=args.blocks,
        upsample=args.upsample,
        scale=args.scale or 1,
    )
    # base_steps: optimizer steps the starting weights had already had (kept across --weights-only).
    step, train_seconds, base_steps = 0, 0.0, 0
    resume_path: Path | None = None
    if args.resume == "auto":
        resume_path = latest_checkpoint(run_dir)
    elif args.resume:
        resume_path = Path(args.resume)
    if resume_path is not None:
        net = NetConfig.from_dict(json.loads(resume_path.with_suffix(".json").read_text())["net"])
    if args.body_slope is not None:
        net = replace(net, body_slope=args.body_slope)
    if args.scale is not None:
        net = replace(net, scale=args.scale)
    if args.degradation_scale is None:
        args.degradation_scale = 1.0 / net.scale
    model = RestoraLite(net)
    growing = bool(args.add_blocks or args.add_quarter_blocks or args.revive_deep or args.widen or args.drop_blocks)
    if resume_path is not None and growing:
        grown_from = load_checkpoint(resume_path, model)
        parent_ema = load_ema(resume_path)
        if parent_ema is not None:  # the EMA weights are the ones that were scored and shipped
            model.load_state_dict(parent_ema)
        if args.drop_blocks:
            model = drop_blocks(model, [int(i) for i in args.drop_blocks.split(",")])
        model = grow_blocks(model, args.add_blocks, args.add_quarter_blocks)
        if args.revive_deep:
            model = revive_deep_path(model, args.seed)
        if args.widen:
            model = widen(model, tuple(int(w) for w in args.widen.split(",")), args.seed)  # type: ignore[arg-type]
        net = model.config
    model.to(device)  # before the optimizer: its state follows the parameters' device on loading
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    if resume_path is not None:
        optimizer_state = None if args.weights_only else optimizer
        meta = grown_from if growing else load_checkpoint(resume_path, model, optimizer_state)
        base_steps = int(meta.get("base_steps", 0))
        if args.weights_only:
            base_steps += int(meta["step"])
        else:
            step, train_seconds = int(meta["step"]), float(meta["train_seconds"])
    ema: dict[str, torch.Tensor] | None = None
    if args.ema > 0:
        stored = load_ema(resume_path) if resume_path is not None and not args.weights_only else None
        ema = {k: v.to(device) for k, v in stored.items()} if stored else {
            k: v.detach().clone() for k, v in model.state_dict().items()
        }

    disc: PatchDiscriminator | None = None
    d_optimizer: torch.optim.Optimizer | None = None
    if args.gan_weight > 0 or args.fm_weight > 0:
        disc = PatchDiscriminator().to(device)
        d_optimizer = torch.optim.Adam(disc.parameters(), lr=args.d_lr, betas=(0.5, 0.999))
        disc_path = resume_path.with_name(resume_path.stem + ".disc.safetensors") if resume_path else None
        if disc_path is not None and disc_path.exists():
            from safetensors.torch import load_file

            disc.load_state_dict(load_file(str(disc_path)))

    cache = None
    adapter: torch.nn.Module | None = None
    a_optimizer: torch.optim.Optimizer | None = None
    if args.teacher_cache is not None:
        # Imported here: training.distill builds its cache with this module's make_batch.
        from .distill import feature_adapter, open_cache

        cache = open_cache(args.teacher_cache)
        if args.feature_weight > 0:
            adapter = feature_adapter(net.widths[3], cache.body_channels).to(device)
            a_optimizer = torch.optim.AdamW(adapter.parameters(), lr=args.lr, weight_decay=0.0)
            adapter_path = resume_path.with_name(resume_path.stem + ".adapter.safetensors") if resume_path else None
            if adapter_path is not None and adapter_path.exists():
                from safetensors.torch import load_file

                adapter.load_state_dict(load_file(str(adapter_path)))

    if sampler is None:
        sampler = PatchSampler.from_dir(
            args.data_dir,
            args.patch,
            args.keep_fraction,
            args.hq_fraction,
            args.shrink_probability,
            args.min_shrink,
            args.max_shrink,
            args.max_blockiness,
            args.runs_dir / "utkface-blockiness.csv",  # derived from the data: kept beside the runs
        )
    val_pairs = validation_set(args.data_dir, args.val_faces) if args.val_faces > 0 else []
    log = (run_dir / "log.jsonl").open("a")
    revived: dict[str, int] = {}
    if args.revive_dead:
        # 64 training patches, heavy and light: a channel is revived only if it is dead on all of them.
        probe, _ = make_batch(sampler, np.random.default_rng([args.seed, 2**31]), 64, 0.5, args.degradations)
        # On the CPU: the fresh weights come from a seeded CPU generator (the same on any device).
        revived = revive_dead_channels(model.cpu(), probe, args.seed)
        model.to(device)
        if ema is not None:
            ema = {k: v.detach().clone() for k, v in model.state_dict().items()}

    def write(record: dict[str, Any]) -> None:
        log.write(json.dumps(record) + "\n")
        log.flush()

    write(
        {
            "event": "start",
            "step": step,
            "resume": str(resume_path) if resume_path else None,
            "net": net.to_dict(),
            "params": count_params(model),
            "gmacs_512": count_macs(model) / 1e9,
            "device": str(device) + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""),
            "faces": len(sampler.face_files),
            "revived_channels": revived,
            "hq_faces": len(sampler.hq_images),
            "teacher_cache": cache.meta if cache is not None else None,
            "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        }
    )

    def checkpoint() -> Path:
        path = run_dir / f"ckpt-{step:07d}.safetensors"
        save_checkpoint(
            path,
            model,
            optimizer,
            {
                "step": step,
                "base_steps": base_steps,
                "total_steps": base_steps + step,
                "parent": str(resume_path) if resume_path else None,
                "train_seconds": train_seconds,
                "net": net.to_dict(),
                "params": count_params(model),
                "args": {k: str(v) for k, v in vars(args).items()},
            },
            ema,
        )
        if disc is not None:
            from safetensors.torch import save_file

            # Beside the checkpoint, so a resumed GAN run keeps its discriminator.
            save_file(
                {k: v.cpu().contiguous() for k, v in disc.state_dict().items()},
                str(path.with_name(path.stem + ".disc.safetensors")),
            )
        if adapter is not None:
            from safetensors.torch import save_file

            save_file(
                {k: v.cpu().contiguous() for k, v in adapter.state_dict().items()},
                str(path.with_name(path.stem + ".adapter.safetensors")),
            )
        for old in sorted(run_dir.glob("ckpt-???????.safetensors"))[: -args.keep_ckpts]:
            old.unlink(missing_ok=True)
            old.with_suffix(".json").unlink(missing_ok=True)
            old.with_name(old.stem + ".disc.safetensors").unlink(missing_ok=True)
            old.with_name(old.stem + ".adapter.safetensors").unlink(missing_ok=True)
        write({"event": "checkpoint", "step": step, "path": str(path)})
        return path

    budget = args.minutes * 60 if args.minutes else None
    session_start = time.monotonic()
    last_ckpt = session_start
    running: dict[str, float] = {}
    path = None
    model.train()
    batches = step_batches(sampler, args, step) if cache is None else None
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=args.amp == "bf16")
    while True:
        progress = train_seconds / budget if budget else step / args.steps
        if progress >= 1.0:
            break
        t0 = time.monotonic()
        lr = lr_at(progress, step, args)
        for g in optimizer.param_groups:
            g["lr"] = lr
        # Seeded by step: a resumed run sees the same batches it would have seen.
        if cache is not None:
            x, y, teacher_out, teacher_body = cache.batch(np.random.default_rng([args.seed, step]), args.batch)
            teacher_out, teacher_body = teacher_out.to(device), teacher_body.to(device)
        else:
            assert batches is not None
            x, y = next(batches)
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        with autocast:
            out, body = model.native_with_body(x)
        out, body = out.float(), body.float()  # the losses (FFT, SSIM) in float32
        loss, parts = restoration_loss(out, y, args.ssim_weight, args.fft_weight, args.detail_weight, args.psnr_weight)
        if cache is not None and args.distill_weight > 0:
            kd = (out - teacher_out).abs().mean()
            loss = loss + args.distill_weight * kd
            parts["kd"] = kd.item()
        if adapter is not None:
            from .distill import feature_loss

            feat = feature_loss(adapter(body), teacher_body)
            loss = loss + args.feature_weight * feat
            parts["feat"] = feat.item()
        if disc is not None and d_optimizer is not None:
            with autocast:
                adv, fm = generator_losses(disc, y, out)
            adv, fm = adv.float(), fm.float()
            loss = loss + args.gan_weight * adv + args.fm_weight * fm
            parts.update({"g_adv": adv.item(), "fm": fm.item()})
        optimizer.zero_grad(set_to_none=True)
        if a_optimizer is not None:
            a_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if disc is not None and d_optimizer is not None:
            d_optimizer.zero_grad(set_to_none=True)  # drops what the generator's loss left on D
            with autocast:
                d_loss = discriminator_loss(disc, y, out).float()
            d_loss.backward()
            d_optimizer.step()
            parts["d"] = d_loss.item()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        if a_optimizer is not None:
            a_optimizer.step()
        if ema is not None:
            with torch.no_grad():
                for k, v in model.state_dict().items():
                    ema[k].mul_(args.ema).add_(v, alpha=1 - args.ema)
        step += 1
        train_seconds += time.monotonic() - t0
        for k, v in parts.items():
            running[k] = running.get(k, 0.0) + v
        if step % args.log_every == 0:
            write(
                {
                    "step": step,
                    "lr": lr,
                    "train_seconds": round(train_seconds, 1),
                    "s_per_step": round(train_seconds / max(step, 1), 3),
                    **{k: round(v / args.log_every, 5) for k, v in running.items()},
                }
            )
            running = {}
        if val_pairs and step % args.val_every == 0:
            write({"step": step, **validate(model, val_pairs)})
            if ema is not None:
                ema_model = RestoraLite(net).to(device)
                ema_model.load_state_dict(ema)
                write({"step": step, **{f"ema_{k}": v for k, v in validate(ema_model, val_pairs).items()}})
        if time.monotonic() - last_ckpt >= args.ckpt_minutes * 60:
            path = checkpoint()
            last_ckpt = time.monotonic()
    if batches is not None:
        batches.close()  # stops the worker processes now, not whenever the generator is collected
    path = checkpoint()
    if val_pairs:
        write({"step": step, "event": "end", **validate(model, val_pairs)})
    log.close()
    return path


def main(argv: list[str] | None = None) -> int:
    print(train(parse_args(argv)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
