"""The detector protocol every family implements, and shared decoding helpers."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import onnxruntime as ort

from engine.errors import ImageError, ModelFormatError, ModelNotFoundError
from engine.faces import Face
from engine.resample import resize

MakeSession = Callable[[Path | bytes], ort.InferenceSession]
"""Builds an onnxruntime session for a model file, or for a serialized graph derived from one
(``engine.runtime.create_session`` in the app)."""


@runtime_checkable
class Detector(Protocol):
    """Finds faces in an RGB uint8 image (H, W, 3).

    Returned boxes and landmarks are in the pixel coordinates of the array passed in.
    Landmark order: left eye, right eye, nose, left mouth corner, right mouth corner, where
    "left" is the viewer's left (smaller x on an upright frontal face).
    Implementations keep no per-call state on ``self`` so one instance may serve several threads.
    """

    name: str

    def detect(self, image: np.ndarray) -> list[Face]: ...


# ---------------------------------------------------------------------------------------------
# Input checks and options


def check_image(image: np.ndarray) -> np.ndarray:
    """Returns ``image`` as a C-contiguous (H, W, 3) uint8 array, or raises ImageError."""
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3:
        shape = getattr(image, "shape", None)
        raise ImageError(f"detector input must be an (H, W, 3) RGB array, got shape {shape}")
    if image.dtype != np.uint8:
        raise ImageError(f"detector input must be uint8, got {image.dtype}")
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise ImageError(f"detector input is empty: shape {image.shape}")
    return np.ascontiguousarray(image)


def float_option(options: Mapping[str, Any], key: str, default: float) -> float:
    value = options.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ModelFormatError(f"detector option {key!r} must be a number, got {value!r}")
    return float(value)


def int_option(options: Mapping[str, Any], key: str, default: int | None) -> int | None:
    value = options.get(key, default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ModelFormatError(f"detector option {key!r} must be an integer, got {value!r}")
    return value


def require_path(paths: Mapping[str, Path], role: str, model_name: str) -> Path:
    """The file for ``role``; raises ModelNotFoundError when the caller has none."""
    path = paths.get(role)
    if path is None:
        raise ModelNotFoundError(f"{model_name}: no file given for role {role!r}")
    if not Path(path).is_file():
        raise ModelNotFoundError(f"{model_name}: file for role {role!r} not found: {path}")
    return Path(path)


def single_input(session: ort.InferenceSession, model_name: str) -> tuple[str, list[Any]]:
    """Name and shape of the session's only image input (initialisers listed as inputs excluded)."""
    inputs = session.get_inputs()
    if len(inputs) != 1:
        names = [i.name for i in inputs]
        raise ModelFormatError(f"{model_name}: expected one image input, found {names}")
    return inputs[0].name, list(inputs[0].shape)


def static_dim(value: Any) -> int | None:
    """A graph dimension as an int, or None when it is symbolic (dynamic)."""
    return value if isinstance(value, int) and value > 0 else None


# ---------------------------------------------------------------------------------------------
# Geometry


def resize_to_side(image: np.ndarray, max_side: int | None) -> tuple[np.ndarray, float]:
    """Downscales ``image`` so that its long side is at most ``max_side``; returns it and the factor."""
    height, width = image.shape[:2]
    if max_side is None or max(height, width) <= max_side:
        return image, 1.0
    factor = max_side / max(height, width)
    size = (max(1, round(width * factor)), max(1, round(height * factor)))
    return resize(image, size, "area"), factor


def letterbox(image: np.ndarray, width: int, height: int) -> tuple[np.ndarray, float]:
    """Fits ``image`` into a (height, width) canvas at the top-left, keeping its aspect.

    Returns the canvas (padding is 0) and the scale from image to canvas pixels, so a point ``p``
    in the canvas is ``p / scale`` in the image.
    """
    src_h, src_w = image.shape[:2]
    scale = min(width / src_w, height / src_h)
    new_w = min(width, max(1, round(src_w * scale)))
    new_h = min(height, max(1, round(src_h * scale)))
    resized = resize(image, (new_w, new_h), "area" if scale < 1 else "linear")
    canvas = np.zeros((height, width, image.shape[2]), dtype=image.dtype)
    canvas[:new_h, :new_w] = resized
    return canvas, scale


def fixed_input_size(shape: Sequence[Any]) -> tuple[int, int] | None:
    """(width, height) of an NCHW input whose spatial size is fixed in the graph, else None."""
    if len(shape) != 4:
        return None
    height, width = static_dim(shape[2]), static_dim(shape[3])
    return (width, height) if width and height else None


def canvas_size(fixed: tuple[int, int] | None, long_side: int, height: int, width: int) -> tuple[int, int]:
    """The (width, height) a detector's input canvas takes for an image of this size.

    A graph with a fixed input defines its own canvas; a dynamic one gets the image fitted into
    ``long_side`` and padded up to a multiple of the largest stride (32).
    """
    if fixed is not None:
        return fixed
    scale = long_side / max(height, width)
    return round_up(max(1, round(width * scale)), 32), round_up(max(1, round(height * scale)), 32)


def round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def box_iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one (4,) box against (N, 4) boxes, corner form."""
    xx1 = np.maximum(box[0], boxes[:, 0])
    yy1 = np.maximum(box[1], boxes[:, 1])
    xx2 = np.minimum(box[2], boxes[:, 2])
    yy2 = np.minimum(box[3], boxes[:, 3])
    inter = np.clip(xx2 - xx1, 0, None) * np.clip(yy2 - yy1, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return np.asarray(inter / np.maximum(area + areas - inter, 1e-9))


_NMS_ROWS = 256  # overlap rows computed at once: bounds the scratch to 256 x N floats


def nms(boxes: np.ndarray, scores: np.ndarray, threshold: float, mode: str = "union", pixel: float = 0.0) -> np.ndarray:
    """Greedy non-maximum suppression; returns kept indices, best score first.

    ``mode`` "union" compares intersection over union; "min" compares intersection over the
    smaller area (MTCNN's last stage, which drops a small box nested in a bigger one).
    ``pixel`` 1 counts boxes as inclusive pixel ranges (width = x2 - x1 + 1), as MTCNN does.
    The overlaps are computed for blocks of rows at once and the greedy pass only flips flags:
    the box-by-box loop (eight array operations per kept box) was 11 ms of MTCNN's 64 on a
    1 MP photo with five faces.
    """
    if len(boxes) == 0:
        return np.zeros(0, dtype=np.int64)
    order = np.argsort(-scores, kind="stable")
    x1, y1, x2, y2 = (np.asarray(boxes[order, i], np.float64) for i in range(4))
    areas = np.clip(x2 - x1 + pixel, 0, None) * np.clip(y2 - y1 + pixel, 0, None)
    count = len(order)
    suppressed = np.zeros(count, dtype=bool)
    keep: list[int] = []
    for top in range(0, count, _NMS_ROWS):
        rows = slice(top, min(top + _NMS_ROWS, count))
        if suppressed[rows].all():
            continue
        inter = np.clip(np.minimum(x2[rows, None], x2) - np.maximum(x1[rows, None], x1) + pixel, 0, None) * np.clip(
            np.minimum(y2[rows, None], y2) - np.maximum(y1[rows, None], y1) + pixel, 0, None
        )
        if mode == "min":
            overlap = inter / np.maximum(np.minimum(areas[rows, None], areas), 1e-9)
        else:
            overlap = inter / np.maximum(areas[rows, None] + areas - inter, 1e-9)
        beyond = overlap > threshold
        for i in range(rows.start, rows.stop):
            if suppressed[i]:
                continue
            keep.append(i)
            suppressed[i + 1 :] |= beyond[i - rows.start, i + 1 :]
    return np.asarray(order[keep], dtype=np.int64)


def faces_from_arrays(boxes: np.ndarray, scores: np.ndarray, landmarks: np.ndarray, scale: float = 1.0) -> list[Face]:
    """Face records from (N, 4) boxes, (N,) scores and (N, 5, 2) landmarks, best score first.

    Coordinates are divided by ``scale`` (the scale from the caller's image to the decoded one).
    """
    order = np.argsort(-scores, kind="stable")
    faces = []
    for i in order:
        box = boxes[i] / scale
        faces.append(
            Face(
                box=(float(box[0]), float(box[1]), float(box[2]), float(box[3])),
                landmarks=(landmarks[i] / scale).astype(np.float32).reshape(5, 2),
                score=float(scores[i]),
            )
        )
    return faces


def grid_centres(height: int, width: int, stride: int, per_cell: int) -> np.ndarray:
    """(height*width*per_cell, 2) x, y of cell corners times stride, row-major, each repeated."""
    ys, xs = np.mgrid[:height, :width]
    centres = np.stack([xs, ys], axis=-1).reshape(-1, 2).astype(np.float32) * stride
    if per_cell > 1:
        centres = np.repeat(centres, per_cell, axis=0)
    return centres


def outputs_by_last_dim(session: ort.InferenceSession, model_name: str, dims: Sequence[int]) -> dict[int, list[str]]:
    """Groups output names by their last dimension (1 = score, 4 = box, 10 = keypoints...)."""
    groups: dict[int, list[str]] = {d: [] for d in dims}
    for out in session.get_outputs():
        last = out.shape[-1] if out.shape else None
        if last in groups:
            groups[last].append(out.name)
    if any(not names for names in groups.values()):
        found = [(o.name, o.shape) for o in session.get_outputs()]
        raise ModelFormatError(f"{model_name}: outputs {found} do not match the family (last dims {dims})")
    return groups
