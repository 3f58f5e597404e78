"""L1-norm structured channel pruning of restora-lite, a short fine-tune, and a before/after report.

    python -m training.prune --checkpoint runs/t_psnr_light/ckpt-0000471.safetensors --fraction 0.25 \
        --minutes 6 --out runs/prune_f25

Channels that are added together must be pruned together: each resolution level's skip and decoder
output (``head``/``up1``, ``down1``/``up2``, ``down2``/``up3``) is one group, and the 1/8 level's
residual stream (``down3`` plus every ResBlock's ``conv2``) is another; each ResBlock's inner channels
(``conv1``) are a group of their own. A channel's score is the summed L1 norm of the weights of every
convolution that writes it; the top (1 - fraction) of each group are kept (in their original order),
and a RestoraLite of the smaller widths gets the kept input and output slices of every weight.

Writes to --out: ``pruned-0000000.safetensors`` (before fine-tuning), the fine-tune's
``ckpt-*.safetensors`` (checkpoint.py format, so ``training.export`` takes it), ``eval.json``/``.md``
(training.evaluate on the tiers) and ``prune_report.json``/``.md`` (params, GMACs, ms FP32/INT8, quality).
"""

from __future__ import annotations

import argparse
import copy
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .checkpoint import load_meta, load_model, save_checkpoint
from .data import DEFAULT_DATA_DIR, eval_face_files, load_rgb
from .degrade import TIERS, apply_degradation, seed_for
from .model import NetConfig, RestoraLite, count_macs, count_params

REPO = Path(__file__).resolve().parents[1]
LEVELS = ("level0", "level1", "level2", "level3")


@dataclass(frozen=True)
class ConvRole:
    """A convolution, the channel group its input channels belong to and the one it writes
    (None: the RGB image, never pruned)."""

    name: str
    in_group: str | None
    out_group: str | None


def conv_roles(config: NetConfig) -> list[ConvRole]:
    roles = [
        ConvRole("head", None, "level0"),
        ConvRole("down1", "level0", "level1"),
        ConvRole("down2", "level1", "level2"),
        ConvRole("down3", "level2", "level3"),
    ]
    for i in range(config.blocks):
        roles.append(ConvRole(f"body.{i}.conv1", "level3", f"block{i}"))
        roles.append(ConvRole(f"body.{i}.conv2", f"block{i}", "level3"))
    roles += [
        ConvRole("up3", "level3", "level2"),
        ConvRole("up2", "level2", "level1"),
        ConvRole("up1", "level1", "level0"),
        ConvRole("tail", "level0", None),
    ]
    return roles


def _conv(model: nn.Module, name: str) -> nn.Conv2d:
    module = model.get_submodule(name)
    if not isinstance(module, nn.Conv2d):
        raise TypeError(f"{name} is not a Conv2d")
    return module


def channel_scores(model: RestoraLite) -> dict[str, torch.Tensor]:
    """Per group, each channel's summed L1 norm over the weights of all convolutions that write it."""
    scores: dict[str, torch.Tensor] = {}
    for role in conv_roles(model.config):
        if role.out_group is None:
            continue
        l1 = _conv(model, role.name).weight.detach().abs().sum(dim=(1, 2, 3))
        scores[role.out_group] = scores[role.out_group] + l1 if role.out_group in scores else l1
    return scores


def keep_count(channels: int, fraction: float) -> int:
    return max(1, min(channels, round(channels * (1.0 - fraction))))


def select_channels(model: RestoraLite, fraction: float) -> dict[str, list[int]]:
    """Kept channel indices per group, ascending (so fraction 0 keeps every channel in place).
    The ResBlocks' inner groups keep as many as the 1/8 level, because RestoraLite builds each
    ResBlock at that level's width."""
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"pruning fraction must be in [0, 1), got {fraction}")
    scores = channel_scores(model)
    level3_keep = keep_count(len(scores["level3"]), fraction)
    keep: dict[str, list[int]] = {}
    for group, s in scores.items():
        k = level3_keep if group.startswith("block") else keep_count(len(s), fraction)
        keep[group] = sorted(int(i) for i in torch.topk(s, k).indices)
    return keep


def pruned_config(config: NetConfig, keep: dict[str, list[int]]) -> NetConfig:
    widths = tuple(len(keep[g]) for g in LEVELS)
    return NetConfig(widths=widths, blocks=config.blocks, upsample=config.upsample, scale=config.scale)  # type: ignore[arg-type]


def prune_model(model: RestoraLite, fraction: float) -> tuple[RestoraLite, dict[str, list[int]]]:
    """A thinner RestoraLite holding the kept slices of every weight, and the kept indices."""
    if model.config.quarter_blocks:
        raise ValueError("pruning does not handle 1/4-resolution residual blocks (quarter_blocks) yet")
    keep = select_channels(model, fraction)
    pruned = RestoraLite(pruned_config(model.config, keep))
    with torch.no_grad():
        for role in conv_roles(model.config):
            src, dst = _conv(model, role.name), _conv(pruned, role.name)
            w = src.weight
            if role.out_group is not None:
                w = w[keep[role.out_group]]
            if role.in_group is not None:
                w = w[:, keep[role.in_group]]
            dst.weight.copy_(w)
            if src.bias is not None and dst.bias is not None:
                b = src.bias if role.out_group is None else src.bias[keep[role.out_group]]
                dst.bias.copy_(b)
    return pruned.train(model.training), keep


def masked_model(model: RestoraLite, keep: dict[str, list[int]]) -> RestoraLite:
    """The full-width net with every dropped channel's producing weights and bias zeroed: dropped
    channels are then exactly zero everywhere (ReLU(0) = 0, skips add zeros, upsampling keeps zeros),
    so its output is what slicing predicts the pruned net computes."""
    masked = copy.deepcopy(model)
    with torch.no_grad():
        for role in conv_roles(model.config):
            if role.out_group is None:
                continue
            conv = _conv(masked, role.name)
            drop = torch.ones(conv.out_channels, dtype=torch.bool)
            drop[keep[role.out_group]] = False
            conv.weight[drop] = 0.0
            if conv.bias is not None:
                conv.bias[drop] = 0.0
    return masked


def sanity_faces(data_dir: Path, count: int, tier: str = "medium") -> list[np.ndarray]:
    out = []
    for path in eval_face_files(data_dir)[:count]:
        out.append(apply_degradation(load_rgb(path), TIERS[tier], np.random.default_rng(seed_for(path.name, tier))))
    return out


@torch.no_grad()
def slicing_error(
    model: RestoraLite, pruned: RestoraLite, keep: dict[str, list[int]], faces: list[np.ndarray]
) -> float:
    """Largest |pruned(x) - masked(x)| over the faces (float rounding only, when slicing is right)."""
    masked = masked_model(model, keep).eval()
    pruned = pruned.eval()
    worst = 0.0
    for face in faces:
        x = torch.from_numpy(face.transpose(2, 0, 1)[None].copy())
        worst = max(worst, float((pruned(x) - masked(x)).abs().max()))
    return worst


def save_pruned(path: Path, pruned: RestoraLite, source: Path, fraction: float, keep: dict[str, list[int]]) -> None:
    meta = load_meta(source)
    save_checkpoint(
        path,
        pruned,
        None,
        {
            "step": 0,
            # Steps the weights have had, so a fine-tune's total_steps stays truthful.
            "base_steps": int(meta.get("base_steps", 0)) + int(meta["step"]),
            "train_seconds": 0.0,
            "net": pruned.config.to_dict(),
            "params": count_params(pruned),
            "pruned_from": str(source),
            "prune_fraction": fraction,
            "kept_channels": keep,
        },
    )


def fine_tune(pruned_path: Path, out: Path, args: argparse.Namespace) -> Path:
    """train.py's own loop, resumed weights-only from the pruned checkpoint, same losses."""
    from . import train

    train_args = train.parse_args(
        [
            "--name", out.name, "--runs-dir", str(out.parent), "--data-dir", str(args.data_dir),
            "--resume", str(pruned_path), "--weights-only", "--minutes", str(args.minutes),
            "--lr", str(args.lr), "--warmup", str(args.warmup), "--ssim-weight", str(args.ssim_weight),
            "--fft-weight", str(args.fft_weight), "--detail-weight", str(args.detail_weight),
            "--degradations", "tiers", "--light-fraction", str(args.light_fraction), "--ema", str(args.ema),
            "--batch", str(args.batch), "--patch", str(args.patch), "--threads", "1", "--val-faces", "0",
            "--ckpt-minutes", "100",
        ]
    )  # fmt: skip
    return train.train(train_args)


def speed(checkpoint: Path, data_dir: Path, calib: int, runs: int) -> dict[str, float]:
    """ms per 512 px face, FP32 and INT8 ONNX (training.export), onnxruntime, batch 1, 2 threads, median."""
    from .evaluate import bench, make_session
    from .export import export_all

    with tempfile.TemporaryDirectory() as tmp:
        export_all(checkpoint, Path(tmp), data_dir, calib)
        return {p: bench(make_session(Path(tmp) / f"restora-lite-{p}.onnx", 2), runs=runs) for p in ("fp32", "int8")}


def size_of(checkpoint: Path) -> dict[str, float]:
    model = load_model(checkpoint)
    return {"params": count_params(model), "gmacs_512": count_macs(model, 512) / 1e9}


def report_table(report: dict[str, Any]) -> str:
    lines = [
        "| model | params | GMACs / 512 px face | ms FP32 | ms INT8 | "
        + " | ".join(f"{t} ΔPSNR / ΔSSIM / detail" for t in report["tiers"])
        + " |",
        "|---|---:|---:|---:|---:|" + "---:|" * len(report["tiers"]),
    ]
    for row in report["rows"]:
        ms = row.get("ms", {})
        cells = []
        for tier in report["tiers"]:
            s, base = row["scores"][tier], report["input"][tier]
            cells.append(f"{s['psnr'] - base['psnr']:+.2f} / {s['ssim'] - base['ssim']:+.3f} / {s['detail']:.2f}")
        fp32 = f"{ms['fp32']:.1f}" if "fp32" in ms else "="
        int8 = f"{ms['int8']:.1f}" if "int8" in ms else "="
        lines.append(
            f"| {row['label']} | {row['params'] / 1e6:.3f} M | {row['gmacs_512']:.2f} | {fp32} | {int8} | "
            + " | ".join(cells)
            + " |"
        )
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m training.prune", description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", type=Path, required=True, help="the checkpoint to prune (EMA weights when stored)")
    p.add_argument("--fraction", type=float, default=0.25, help="share of channels removed from every group")
    p.add_argument("--minutes", type=float, default=6.0, help="fine-tune budget (0: prune and report only)")
    p.add_argument("--out", type=Path, required=True, help="run folder, e.g. runs/prune_f25")
    p.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--ssim-weight", type=float, default=0.3)
    p.add_argument("--fft-weight", type=float, default=0.5)
    p.add_argument("--detail-weight", type=float, default=0.2)
    p.add_argument("--light-fraction", type=float, default=0.3)
    p.add_argument("--ema", type=float, default=0.99)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--patch", type=int, default=128)
    p.add_argument("--sanity-faces", type=int, default=4, help="real faces for the slicing check")
    p.add_argument("--tiers", default="mild,medium,severe")
    p.add_argument("--limit", type=int, default=16, help="evaluation faces")
    p.add_argument("--calib", type=int, default=32, help="INT8 calibration faces for the timing export")
    p.add_argument("--bench-runs", type=int, default=20)
    return p.parse_args(argv)


def run(args: argparse.Namespace) -> dict[str, Any]:
    from . import evaluate

    torch.set_num_threads(1)  # the machine is shared with a running training job
    args.out.mkdir(parents=True, exist_ok=True)
    model = load_model(args.checkpoint)
    pruned, keep = prune_model(model, args.fraction)
    error = slicing_error(model, pruned, keep, sanity_faces(args.data_dir, args.sanity_faces))
    pruned_path = args.out / "pruned-0000000.safetensors"
    save_pruned(pruned_path, pruned, args.checkpoint, args.fraction, keep)
    checkpoints = {"original": args.checkpoint, "pruned, before fine-tune": pruned_path}
    if args.minutes > 0:
        checkpoints["pruned + fine-tune"] = fine_tune(pruned_path, args.out, args)

    eval_json = args.out / "eval.json"
    evaluate.main(
        [f"--checkpoint={c}" for c in checkpoints.values()]
        + ["--limit", str(args.limit), "--tiers", args.tiers, "--no-classical", "--threads", "1"]
        + ["--data-dir", str(args.data_dir), "--out", str(eval_json)]
    )
    scores = json.loads(eval_json.read_text())["scores"]
    tiers = args.tiers.split(",")
    rows = []
    for label, ckpt in checkpoints.items():
        key = f"{ckpt.parent.name}/{ckpt.stem}"
        row: dict[str, Any] = {"label": label, "checkpoint": str(ckpt), **size_of(ckpt)}
        row["scores"] = {t: scores[t][key] for t in tiers}
        if label != "pruned, before fine-tune":  # same graph as the fine-tuned one, so the same speed
            row["ms"] = speed(ckpt, args.data_dir, args.calib, args.bench_runs)
        rows.append(row)
    report: dict[str, Any] = {
        "fraction": args.fraction,
        "widths_before": list(model.config.widths),
        "widths_after": list(pruned.config.widths),
        "slicing_max_abs_error": error,
        "ms": {"threads": 2, "batch": 1, "runs": args.bench_runs, "statistic": "median"},
        "tiers": tiers,
        "input": {t: scores[t]["input"] for t in tiers},
        "rows": rows,
    }
    (args.out / "prune_report.json").write_text(json.dumps(report, indent=1) + "\n")
    (args.out / "prune_report.md").write_text(report_table(report) + "\n")
    return report


def main(argv: list[str] | None = None) -> int:
    report = run(parse_args(argv))
    print(
        f"widths {report['widths_before']} -> {report['widths_after']}; "
        f"slicing check max |pruned - masked| = {report['slicing_max_abs_error']:.2e}"
    )
    print(report_table(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
