"""YuNet (libfacedetection / OpenCV FaceDetectorYN): fixed 640x640 exports and the dynamic one.

Input: BGR, 0..255, no normalisation, NCHW. Outputs per stride s in (8, 16, 32): ``cls_s`` and
``obj_s`` (already sigmoid'd), ``bbox_s`` (cx, cy offsets in cells, log w, h) and ``kps_s``
(5 points as cell offsets). Keypoint order is right eye, left eye, nose, right mouth, left mouth
in the subject's terms, i.e. viewer's left first, which is the order of ``Face.landmarks``.
"""

from __future__ import annotations

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
    require_path,
    single_input,
)
from engine.errors import ModelFormatError
from engine.faces import Face
from engine.models import ModelSpec

STRIDES = (8, 16, 32)


class YuNetDetector:
    """YuNet on a letterboxed copy (fixed models) or a resized, 32-padded copy (dynamic model)."""

    def __init__(
        self,
        session: ort.InferenceSession,
        *,
        name: str = "yunet",
        input_size: int = 640,
        score_threshold: float = 0.6,
        nms_threshold: float = 0.3,
    ) -> None:
        self.name = name
        self.score_threshold = score_threshold
        self.nms_threshold = nms_threshold
        self._session = session
        self._input, shape = single_input(session, name)
        # Fixed exports define their own size; the dynamic one runs at ``input_size`` (long side).
        self._fixed = fixed_input_size(shape)
        self.input_size = input_size
        names = {o.name for o in session.get_outputs()}
        self._outputs = [f"{kind}_{s}" for s in STRIDES for kind in ("cls", "obj", "bbox", "kps")]
        missing = [n for n in self._outputs if n not in names]
        if missing:
            raise ModelFormatError(f"{name}: not a YuNet graph, outputs {missing} are missing")

    def detect(self, image: np.ndarray) -> list[Face]:
        image = check_image(image)
        height, width = image.shape[:2]
        canvas_w, canvas_h = canvas_size(self._fixed, self.input_size, height, width)
        canvas, scale = letterbox(image[:, :, ::-1], canvas_w, canvas_h)  # BGR
        blob = canvas.transpose(2, 0, 1)[None].astype(np.float32)
        outputs = dict(zip(self._outputs, self._session.run(self._outputs, {self._input: blob}), strict=True))
        boxes_all, scores_all, points_all = [], [], []
        for stride in STRIDES:
            rows, cols = canvas_h // stride, canvas_w // stride
            cls = outputs[f"cls_{stride}"].reshape(-1)
            obj = outputs[f"obj_{stride}"].reshape(-1)
            if cls.size != rows * cols:
                raise ModelFormatError(f"{self.name}: cls_{stride} has {cls.size} cells, expected {rows * cols}")
            score = np.sqrt(np.clip(cls, 0, 1) * np.clip(obj, 0, 1))
            keep = np.nonzero(score >= self.score_threshold)[0]
            if keep.size == 0:
                continue
            bbox = outputs[f"bbox_{stride}"].reshape(-1, 4)[keep]
            kps = outputs[f"kps_{stride}"].reshape(-1, 10)[keep]
            cell = np.stack([keep % cols, keep // cols], axis=1).astype(np.float32)
            centre = (cell + bbox[:, 0:2]) * stride
            size = np.exp(bbox[:, 2:4]) * stride
            boxes_all.append(np.concatenate([centre - size / 2, centre + size / 2], axis=1))
            points_all.append((cell[:, None, :] + kps.reshape(-1, 5, 2)) * stride)
            scores_all.append(score[keep])
        if not boxes_all:
            return []
        boxes, scores, points = (
            np.concatenate(boxes_all),
            np.concatenate(scores_all),
            np.concatenate(points_all),
        )
        keep = nms(boxes, scores, self.nms_threshold)
        return faces_from_arrays(boxes[keep], scores[keep], points[keep], scale=scale)


def yunet_from_spec(spec: ModelSpec, paths: Mapping[str, Path], make_session: MakeSession) -> YuNetDetector:
    options = spec.options
    return YuNetDetector(
        make_session(require_path(paths, "model", spec.name)),
        name=spec.name,
        input_size=int_option(options, "input_size", spec.size or 640) or 640,
        score_threshold=float_option(options, "score_threshold", 0.6),
        nms_threshold=float_option(options, "nms_threshold", 0.3),
    )
