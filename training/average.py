"""Average the weights of runs that share a parent ("model soup"): one net, no extra inference cost.

    python -m training.average runs/c13/ckpt-0011000.safetensors runs/p13/ckpt-0006000.safetensors \
        --out runs/soup13/ckpt-0000000.safetensors

Runs fine-tuned from one checkpoint stay in one basin of the loss, so the mean of their weights is
itself a good net and often scores above each of them. Each source contributes its EMA weights where
stored (the weights ``training.evaluate`` and ``training.export`` use); ``--weights`` gives the mix (by
default equal). The result is a checkpoint with EMA weights only and no optimizer state: resume it with
``--weights-only``; ``training.evaluate --checkpoint`` and ``training.export`` take it as it is.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from .checkpoint import load_meta, load_model, save_checkpoint


def average_weights(sources: list[Path], weights: list[float]) -> tuple[torch.nn.Module, dict[str, torch.Tensor]]:
    """The first source's net carrying the weighted mean of every source's (EMA) state dict."""
    if len(sources) != len(weights) or not sources:
        raise ValueError("give one weight per checkpoint")
    models = [load_model(p) for p in sources]
    configs = {repr(m.config) for m in models}
    if len(configs) != 1:
        raise ValueError(f"the checkpoints are different nets: {sorted(configs)}")
    total = sum(weights)
    states = [m.state_dict() for m in models]
    mean = {
        key: sum(w / total * s[key].double() for w, s in zip(weights, states, strict=True)).to(states[0][key].dtype)
        for key in states[0]
    }
    models[0].load_state_dict(mean)
    return models[0], mean


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.average", description=__doc__.split("\n")[0])
    p.add_argument("checkpoints", type=Path, nargs="+", help="checkpoints of one net (two or more)")
    p.add_argument("--weights", default="", help="comma-separated mix, one per checkpoint (default: equal)")
    p.add_argument("--out", type=Path, required=True, help="the averaged checkpoint (.safetensors)")
    args = p.parse_args(argv)
    if len(args.checkpoints) < 2:
        p.error("give two or more checkpoints")
    weights = [float(w) for w in args.weights.split(",")] if args.weights else [1.0] * len(args.checkpoints)
    try:
        model, mean = average_weights(args.checkpoints, weights)
    except ValueError as exc:
        p.error(str(exc))
    metas = [load_meta(c) for c in args.checkpoints]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(
        args.out,
        model,
        None,
        {
            "step": 0,
            # The most training any source had: what a resume's total_steps continues from.
            "base_steps": max(int(m.get("total_steps", m["step"])) for m in metas),
            "train_seconds": 0.0,
            "net": metas[0]["net"],
            "params": metas[0].get("params"),
            "averaged_from": {str(c): w for c, w in zip(args.checkpoints, weights, strict=True)},
        },
        ema=mean,
    )
    print(f"wrote {args.out}: the mean of {len(args.checkpoints)} checkpoints, weights {weights}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
