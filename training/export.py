"""Export a checkpoint to ONNX FP32, FP16 and INT8 (static QDQ) and write assets/models/restora.json.

    python -m training.export --checkpoint runs/first/ckpt-0004000.safetensors --out assets/models

I/O of every variant: "input" N x 3 x S x S float32 RGB in [0, 1], "output" the same; batch and size
are dynamic: the engine restores small faces at the smaller CROP_SIZES (engine.faces.crop_size_for).
FP16 keeps float32 I/O (keep_io_types) so callers need not care. INT8 is static QDQ with per-channel
QInt8 weights and QUInt8 activations (the only INT8 flavour that ran faster than FP32 on this CPU, see
issue 8), calibrated on degraded 512 px validation faces.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
import onnx
import torch

from engine.models import sha256_file
from engine.quantize import convert_fp16, quantize_int8

from .checkpoint import load_meta, load_model
from .data import DEFAULT_DATA_DIR, eval_face_files, load_rgb
from .degrade import apply_degradation, sample_degradation, seed_for
from .model import FoldedTail, RestoraLite, count_macs, count_params

REPO = Path(__file__).resolve().parents[1]
SIZE = 512
# The smaller square crops the manifest offers besides SIZE (multiples of 8: the net works down to 1/8).
CROP_SIZES = (256, 384)
NAME = "restora-lite"
LICENSE = (
    "Weights: non-commercial research use only (trained on UTKFace, FFHQ and CelebA-HQ faces, whose "
    "terms are non-commercial research); code: MIT"
)


def export_fp32(model: RestoraLite, path: Path) -> None:
    """The FP32 graph: the net as trained (INT8's FoldedTail layout ran no faster in FP32)."""
    export_graph(model.eval(), path)


def export_graph(module: torch.nn.Module, path: Path) -> None:
    """``module`` (image in, image out) as ONNX with dynamic batch, height and width."""
    dummy = torch.rand(1, 3, SIZE, SIZE)
    torch.onnx.export(
        module,
        (dummy,),
        str(path),
        input_names=["input"],
        output_names=["output"],
        dynamic_axes={name: {0: "batch", 2: "height", 3: "width"} for name in ("input", "output")},
        opset_version=17,
        dynamo=False,
    )
    onnx.checker.check_model(str(path))


def export_fp16(fp32_path: Path, path: Path) -> None:
    convert_fp16(fp32_path, path)


def calibration_faces(data_dir: Path, count: int = 64) -> list[np.ndarray]:
    """Degraded 512 px faces (training-style random degradations, seeded by file name)."""
    out = []
    for p in eval_face_files(data_dir)[:count]:
        rng = np.random.default_rng(seed_for(p.name, "calibration"))
        out.append(apply_degradation(load_rgb(p), sample_degradation(rng), rng))
    return out


def face_feeds(faces: list[np.ndarray]) -> list[dict[str, np.ndarray]]:
    """Session inputs for float RGB (H, W, 3) faces in [0, 1]: the graph's own input range."""
    return [{"input": np.ascontiguousarray(face.transpose(2, 0, 1)[None], dtype=np.float32)} for face in faces]


def export_int8(model: RestoraLite, path: Path, faces: list[np.ndarray]) -> None:
    """Static QDQ INT8 of ``model`` (engine.quantize: the head conv and the final skip addition stay
    float), quantized from its FoldedTail graph (padded tail convs).

    With a 3-output tail, the INT8 tail conv took 23 of the model's 66 ms under load; padded to 16
    outputs the whole INT8 model ran 28.5 -> 22.7 ms per face (median of 40 interleaved runs). Folding
    the last upsampling into the tail took 6 % more off the wall time and 11-13 % off the summed kernel
    times (docs/TRAINING.md, eighteenth session)."""
    with tempfile.TemporaryDirectory() as tmp:
        folded = Path(tmp) / "folded.onnx"
        export_graph(FoldedTail(model.eval()), folded)
        quantize_int8(folded, path, face_feeds(faces))


def make_size_dynamic(path: Path) -> None:
    """Give ``path``'s image input and output dynamic height and width, and drop the intermediate
    shapes inferred at 512 px (onnxruntime infers them again per call). The weights are untouched:
    this is how v7's files, exported with a fixed 512 px size, came to take CROP_SIZES too."""
    model = onnx.load(str(path))
    for value in (*model.graph.input, *model.graph.output):
        dims = value.type.tensor_type.shape.dim
        dims[2].dim_param, dims[3].dim_param = "height", "width"
    del model.graph.value_info[:]
    # No onnx.checker here: float16's keep_io_types appends its input casts after their consumers,
    # which the checker rejects and onnxruntime runs as it always did.
    onnx.save(model, str(path))


def manifest_entries(out_dir: Path, params: int, gmacs: float, step: int) -> list[dict[str, object]]:
    entries: list[dict[str, object]] = []
    for precision in ("fp32", "fp16", "int8"):
        file = f"{NAME}-{precision}.onnx"
        entries.append(
            {
                "name": NAME,
                "family": "restorer",
                "arch": "restora",
                "file": file,
                "sha256": sha256_file(out_dir / file),
                "url": None,
                "precision": precision,
                "size": SIZE,
                "crop_sizes": list(CROP_SIZES),
                "template": "ffhq",
                "input": "input",
                "output": "output",
                "range": [0.0, 1.0],
                "channel_order": "rgb",
                "weight_input": None,
                "default_fidelity": 0.3,
                "license": LICENSE,
                "source": "trained by training/ in this repository",
                "description": (
                    "Restora's own small face restorer: residual U-Net of 3x3 convs, "
                    f"{params / 1e6:.2f} M params, {gmacs:.2f} GMACs per 512 px face, "
                    f"{precision.upper()}, {step} training steps; "
                    "see assets/models/MODEL_CARD.md"
                ),
            }
        )
    return entries


def export_all(checkpoint: Path, out_dir: Path, data_dir: Path, calib_count: int = 64) -> list[Path]:
    model = load_model(checkpoint)
    meta = load_meta(checkpoint)
    out_dir.mkdir(parents=True, exist_ok=True)
    fp32, fp16, int8 = (out_dir / f"{NAME}-{p}.onnx" for p in ("fp32", "fp16", "int8"))
    export_fp32(model, fp32)
    export_fp16(fp32, fp16)
    export_int8(model, int8, calibration_faces(data_dir, calib_count))
    for path in (fp32, fp16, int8):
        make_size_dynamic(path)
    manifest = {
        "version": 1,
        "models": manifest_entries(
            out_dir,
            count_params(model),
            count_macs(model, SIZE) / 1e9,
            int(meta.get("base_steps", 0)) + int(meta["step"]),
        ),
    }
    (out_dir / "restora.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return [fp32, fp16, int8, out_dir / "restora.json"]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.export", description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", type=Path, required=True, help="a ckpt-*.safetensors (its .json beside it)")
    p.add_argument("--out", type=Path, default=REPO / "assets" / "models")
    p.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR, help="for INT8 calibration faces")
    p.add_argument("--calib", type=int, default=64, help="number of calibration faces")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    for path in export_all(args.checkpoint, args.out, args.data_dir, args.calib):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
