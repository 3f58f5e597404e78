"""RetinaFace MobileNet-0.25 in the biubug6/Pytorch_Retinaface layout.

Input: BGR minus the means (104, 117, 123), NCHW, any size. Outputs ``loc`` [1, P, 4],
``conf`` [1, P, 2] (softmax, face = 1) and 5 landmarks [1, P, 10] (named ``iou`` or ``landms``
depending on the export), against priors built from min sizes [[16, 32], [64, 128], [256, 512]]
at steps [8, 16, 32], with variances (0.1, 0.2).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import onnxruntime as ort

from engine.detectors.base import (
    MakeSession,
    canvas_size,
    check_image,
    faces_from_arrays,
    fixed_input_size,
    float_option,
    int_option,
    letterbox,
    nms,
    outputs_by_last_dim,
    require_path,
    single_input,
)
from engine.errors import ModelFormatError
from engine.faces import Face
from engine.models import ModelSpec

MIN_SIZES = ((16, 32), (64, 128), (256, 512))
STEPS = (8, 16, 32)
VARIANCES = (0.1, 0.2)
BGR_MEAN = np.array([104.0, 117.0, 123.0], np.float32)


def priors(height: int, width: int) -> np.ndarray:
    """(P, 4) priors cx, cy, w, h normalised to the input size (biubug6 ``PriorBox``)."""
    out = []
    for step, sizes in zip(STEPS, MIN_SIZES, strict=True):
        rows, cols = math.ceil(height / step), math.ceil(width / step)
        ys, xs = np.mgrid[:rows, :cols]
        cx = ((xs + 0.5) * step / width).reshape(-1, 1)
        cy = ((ys + 0.5) * step / height).reshape(-1, 1)
        for_cell = [
            np.concatenate([cx, cy, np.full_like(cx, s / width), np.full_like(cy, s / height)], axis=1) for s in sizes
        ]
        # The sizes of one cell are consecutive: (cell0 s0, cell0 s1, cell1 s0, ...).
        out.append(np.stack(for_cell, axis=1).reshape(-1, 4))
    return np.concatenate(out).astype(np.float32)


class RetinaFaceDetector:
    """RetinaFace on the image fitted into ``input_size`` (long side), padded to a multiple of 32."""

    def __init__(
        self,
        session: ort.InferenceSession,
        *,
        name: str = "retinaface",
        input_size: int = 640,
        score_threshold: float = 0.6,
        nms_threshold: float = 0.4,
    ) -> None:
        self.name = name
        self.score_threshold = score_threshold
        self.nms_threshold = nms_threshold
        self._session = session
        self._input, shape = single_input(session, name)
        self._fixed = fixed_input_size(shape)
        self.input_size = input_size
        groups = outputs_by_last_dim(session, name, (4, 2, 10))
        self._outputs = [groups[4][0], groups[2][0], groups[10][0]]

    def detect(self, image: np.ndarray) -> list[Face]:
        image = check_image(image)
        height, width = image.shape[:2]
        canvas_w, canvas_h = canvas_size(self._fixed, self.input_size, height, width)
        canvas, scale = letterbox(image[:, :, ::-1], canvas_w, canvas_h)
        blob = (canvas.astype(np.float32) - BGR_MEAN).transpose(2, 0, 1)[None]
        loc, conf, landms = (
            r.reshape(-1, r.shape[-1])
            for r in self._session.run(self._outputs, {self._input: np.ascontiguousarray(blob)})
        )
        prior = priors(canvas_h, canvas_w)
        if prior.shape[0] != loc.shape[0]:
            raise ModelFormatError(f"{self.name}: {loc.shape[0]} predictions but {prior.shape[0]} priors")
        keep = np.nonzero(conf[:, 1] >= self.score_threshold)[0]
        if keep.size == 0:
            return []
        prior, loc, landms, scores = prior[keep], loc[keep], landms[keep], conf[keep, 1]
        centre = prior[:, 0:2] + loc[:, 0:2] * VARIANCES[0] * prior[:, 2:4]
        size = prior[:, 2:4] * np.exp(loc[:, 2:4] * VARIANCES[1])
        frame = np.array([canvas_w, canvas_h], np.float32)
        boxes = np.concatenate([(centre - size / 2) * frame, (centre + size / 2) * frame], axis=1)
        points = (prior[:, None, 0:2] + landms.reshape(-1, 5, 2) * VARIANCES[0] * prior[:, None, 2:4]) * frame
        keep = nms(boxes, scores, self.nms_threshold)
        return faces_from_arrays(boxes[keep], scores[keep], points[keep], scale=scale)


def retinaface_from_spec(spec: ModelSpec, paths: Mapping[str, Path], make_session: MakeSession) -> RetinaFaceDetector:
    options = spec.options
    return RetinaFaceDetector(
        make_session(require_path(paths, "model", spec.name)),
        name=spec.name,
        input_size=int_option(options, "input_size", spec.size or 640) or 640,
        score_threshold=float_option(options, "score_threshold", 0.6),
        nms_threshold=float_option(options, "nms_threshold", 0.4),
    )
