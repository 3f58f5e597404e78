"""Checkpoints as safetensors (weights + optimizer tensors) plus a JSON sidecar: no pickle anywhere."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from .model import NetConfig, RestoraLite


def save_checkpoint(
    path: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None,
    meta: dict[str, Any],
    ema: dict[str, torch.Tensor] | None = None,
) -> None:
    """Writes ``path`` (.safetensors) and ``path.with_suffix('.json')``, each atomically.

    ``ema``: an exponential moving average of the model's state dict, stored as ``ema.<key>``."""
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    if ema is not None:
        tensors.update({f"ema.{k}": v.detach().cpu().contiguous() for k, v in ema.items()})
    groups: list[dict[str, Any]] = []
    if optimizer is not None:
        sd = optimizer.state_dict()
        for idx, state in sd["state"].items():
            for key, value in state.items():
                t = value if torch.is_tensor(value) else torch.tensor(value)
                tensors[f"optim.{idx}.{key}"] = t.detach().cpu().contiguous()
        groups = [{k: v for k, v in g.items()} for g in sd["param_groups"]]
    tmp = path.with_suffix(".safetensors.part")
    save_file(tensors, str(tmp))
    os.replace(tmp, path)
    sidecar = {**meta, "optimizer_param_groups": groups}
    jtmp = path.with_suffix(".json.part")
    jtmp.write_text(json.dumps(sidecar, indent=1))
    os.replace(jtmp, path.with_suffix(".json"))


def load_meta(path: Path) -> dict[str, Any]:
    meta: dict[str, Any] = json.loads(path.with_suffix(".json").read_text())
    return meta


def load_checkpoint(
    path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None = None
) -> dict[str, Any]:
    """Loads weights (and optimizer state when given) in place; returns the JSON sidecar."""
    tensors = load_file(str(path))
    model.load_state_dict({k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")})
    meta = load_meta(path)
    if optimizer is not None and meta.get("optimizer_param_groups"):
        state: dict[int, dict[str, torch.Tensor]] = {}
        for k, v in tensors.items():
            if k.startswith("optim."):
                _, idx, key = k.split(".", 2)
                state.setdefault(int(idx), {})[key] = v
        optimizer.load_state_dict({"state": state, "param_groups": meta["optimizer_param_groups"]})
    return meta


def load_ema(path: Path) -> dict[str, torch.Tensor] | None:
    ema = {k[len("ema.") :]: v for k, v in load_file(str(path)).items() if k.startswith("ema.")}
    return ema or None


def load_model(path: Path, use_ema: bool = True) -> RestoraLite:
    """A model in eval mode, built from the config stored beside the weights (EMA weights when stored)."""
    meta = load_meta(path)
    model = RestoraLite(NetConfig.from_dict(meta["net"]))
    load_checkpoint(path, model)
    ema = load_ema(path) if use_ema else None
    if ema is not None:
        model.load_state_dict(ema)
    return model.eval()


def latest_checkpoint(run_dir: Path) -> Path | None:
    found = sorted(run_dir.glob("ckpt-???????.safetensors"))
    return found[-1] if found else None
