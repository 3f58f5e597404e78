"""Known model families as data: restorer I/O conventions and graph signatures for import checks.

Restorer families differ only by these values; one runner (``OnnxRestorer``) serves them all.
Sources for the public exports: FaceFusion ``processors/modules/face_enhancer/core.py``
(``forward`` feeds ``input`` and, for CodeFormer, ``weight`` as a float64 array of shape [1];
``prepare_crop_frame`` converts to RGB and (x/255 - 0.5)/0.5, i.e. range [-1, 1]; the first
output is the restored face).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from engine.errors import ModelFormatError

Dim = int | str | None


@dataclass(frozen=True)
class TensorInfo:
    """Name, shape (ints for fixed dims, str/None for symbolic) and element type of a graph tensor."""

    name: str
    shape: tuple[Dim, ...]
    dtype: str  # onnxruntime type string, e.g. "tensor(float)"


@dataclass(frozen=True)
class RestorerConvention:
    """How a restorer family expects its input and produces its output."""

    arch: str
    input: str | None  # None: the single image input, whatever its name
    output: str | None  # None: the output shaped [N, 3, S, S]
    range: tuple[float, float]
    channel_order: str
    weight_input: str | None
    template: str
    sizes: tuple[int, ...]  # sizes of the public exports; empty = any
    default_fidelity: float = 0.5


RESTORER_CONVENTIONS: dict[str, RestorerConvention] = {
    # Restora's own model (training/): the lead's default is [0, 1] RGB with plain names.
    "restora": RestorerConvention("restora", "input", "output", (0.0, 1.0), "rgb", None, "ffhq", ()),
    "gfpgan": RestorerConvention("gfpgan", "input", None, (-1.0, 1.0), "rgb", None, "ffhq", (512,)),
    "gpen": RestorerConvention(
        "gpen", "input", None, (-1.0, 1.0), "rgb", None, "ffhq", (256, 512, 1024, 2048)
    ),
    "codeformer": RestorerConvention(
        "codeformer", "input", None, (-1.0, 1.0), "rgb", "weight", "ffhq", (512,)
    ),
    "restoreformer": RestorerConvention(
        "restoreformer", "input", None, (-1.0, 1.0), "rgb", None, "ffhq", (512,)
    ),
}

DETECTOR_ARCHES = ("mtcnn", "yunet", "scrfd", "retinaface", "blazeface", "ultraface", "yolo5face")
LANDMARK_ARCHES = ("facemesh",)

_FLOAT_TYPES = ("tensor(float)", "tensor(float16)", "tensor(double)")


def family_of(arch: str) -> str:
    """``restorer`` / ``detector`` / ``landmarks`` for an arch name."""
    if arch in RESTORER_CONVENTIONS:
        return "restorer"
    if arch in DETECTOR_ARCHES:
        return "detector"
    if arch in LANDMARK_ARCHES:
        return "landmarks"
    raise ModelFormatError(f"unknown model arch {arch!r}")


def describe(tensors: Sequence[TensorInfo]) -> str:
    """``input[1,3,512,512] float, weight[1] double`` for error messages."""

    def dim(d: Dim) -> str:
        return str(d) if isinstance(d, int) else "?"

    return (
        ", ".join(
            f"{t.name}[{','.join(dim(d) for d in t.shape)}] "
            f"{t.dtype.removeprefix('tensor(').removesuffix(')')}"
            for t in tensors
        )
        or "nothing"
    )


def _is_image_nchw(t: TensorInfo) -> bool:
    s = t.shape
    return len(s) == 4 and s[1] == 3 and t.dtype in _FLOAT_TYPES


def _square_size(t: TensorInfo) -> int | None:
    h, w = t.shape[2], t.shape[3]
    if isinstance(h, int) and isinstance(w, int):
        return h if h == w else -1
    return None


def _is_weight(t: TensorInfo) -> bool:
    # CodeFormer's fidelity: a scalar or one-element float/double tensor.
    if t.dtype not in _FLOAT_TYPES:
        return False
    return len(t.shape) == 0 or (len(t.shape) == 1 and not (isinstance(t.shape[0], int) and t.shape[0] != 1))


def _last_dims(outputs: Sequence[TensorInfo]) -> list[Dim]:
    return [t.shape[-1] if t.shape else None for t in outputs]


def _detect_detector(inputs: Sequence[TensorInfo], outputs: Sequence[TensorInfo]) -> str | None:
    names = {t.name for t in outputs}
    last = sorted(d for d in _last_dims(outputs) if isinstance(d, int))
    if {"cls_8", "obj_8", "bbox_8", "kps_8"} <= names:
        return "yunet"
    if len(outputs) == 9 and last == [1, 1, 1, 4, 4, 4, 10, 10, 10]:
        return "scrfd"
    if len(outputs) == 3 and last == [2, 4, 10] and all(len(t.shape) == 3 for t in outputs):
        return "retinaface"
    if len(outputs) == 2 and last == [2, 4] and all(len(t.shape) == 3 for t in outputs):
        return "ultraface"
    if (
        len(outputs) == 2
        and last == [1, 16]
        and all(len(t.shape) == 3 and t.shape[1] == 896 for t in outputs)
    ):
        return "blazeface"
    if len(outputs) == 1 and len(outputs[0].shape) == 3 and outputs[0].shape[-1] == 16:
        return "yolo5face"
    if len(outputs) == 2 and any(len(t.shape) == 3 and t.shape[1:] == (468, 3) for t in outputs):
        return "facemesh"
    return None


def detect_family(inputs: Sequence[TensorInfo], outputs: Sequence[TensorInfo]) -> str:
    """The arch whose I/O signature the graph has, or ModelFormatError saying what was found.

    Restorer signatures: one NCHW RGB image input [N,3,S,S]; optionally a scalar weight input
    (CodeFormer); one image output [N,3,S,S] (several outputs, one of them the image:
    RestoreFormer++). GFPGAN and GPEN-BFR-512 share one signature and one convention; a 512
    graph is reported as ``gfpgan``, other sizes as ``gpen``.
    """
    images = [t for t in inputs if _is_image_nchw(t)]
    others = [t for t in inputs if t not in images]
    image_outputs = [t for t in outputs if _is_image_nchw(t)]
    if len(images) == 1 and image_outputs:
        size = _square_size(images[0])
        if size == -1:
            raise ModelFormatError(f"restorer input must be square; found {describe(inputs)}")
        if others:
            if len(others) == 1 and _is_weight(others[0]):
                return "codeformer"
        elif len(outputs) > 1:
            return "restoreformer"
        else:
            return "gfpgan" if size in (512, None) else "gpen"
    found = _detect_detector(inputs, outputs)
    if found is not None:
        return found
    raise ModelFormatError(
        "inputs/outputs match no known family: expected a restorer (image input [N,3,S,S] float, "
        "optional scalar weight, image output [N,3,S,S]) or a known detector (YuNet, SCRFD, RetinaFace, "
        f"UltraFace, BlazeFace, YOLO5Face); found inputs {describe(inputs)}; outputs {describe(outputs)}"
    )
