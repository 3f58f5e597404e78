"""MediaPipe BlazeFace (front 128 px short-range, back 256 px), hollance/BlazeFace-PyTorch exports.

Input: RGB, ``x / 127.5 - 1``, NCHW, square. Outputs: 896 x 16 raw regressors (box centre and size,
then 6 keypoints) and 896 raw logits, against the 896-anchor table (``anchors`` file role, an
(896, 4) float32 .npy of x, y, w, h). Scores are sigmoid(clip(logit, -100, 100)); overlapping
detections are blended by MediaPipe's weighted NMS.

Keypoints are, in the subject's terms, right eye, left eye, nose, mouth centre, right ear, left ear
(so the first eye is the viewer's left). BlazeFace has no mouth corners, so they are *estimated*:
from the mouth centre, half of 0.828 times the eye vector on either side, the mouth width / eye
distance ratio of the ArcFace 112 px 5-point template (29.18 / 35.24). Good enough for alignment
of upright faces; a wide open or turned mouth will not be followed.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import onnxruntime as ort

from engine.detectors.base import (
    MakeSession,
    box_iou,
    check_image,
    faces_from_arrays,
    float_option,
    outputs_by_last_dim,
    require_path,
    single_input,
    static_dim,
)
from engine.errors import ModelFormatError
from engine.faces import Face
from engine.models import ModelSpec
from engine.resample import resize

MOUTH_TO_EYE_RATIO = 29.18 / 35.24  # ArcFace 5-point template: mouth width over eye distance
NUM_ANCHORS = 896


def load_anchors(path: Path) -> np.ndarray:
    """The (896, 4) anchor table, checked."""
    try:
        anchors = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise ModelFormatError(f"cannot read BlazeFace anchors {path}: {exc}") from exc
    if anchors.shape != (NUM_ANCHORS, 4):
        raise ModelFormatError(f"BlazeFace anchors {path} have shape {anchors.shape}, expected (896, 4)")
    return anchors.astype(np.float32)


def weighted_nms(
    boxes: np.ndarray, points: np.ndarray, scores: np.ndarray, threshold: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """MediaPipe's blending suppression: each kept detection is the score-weighted mean of the
    detections overlapping it (IoU > threshold), scored by their mean score."""
    order = np.argsort(-scores, kind="stable")
    out_boxes, out_points, out_scores = [], [], []
    while order.size > 0:
        ious = box_iou(boxes[order[0]], boxes[order])
        overlapping = order[ious > threshold]
        order = order[ious <= threshold]
        weights = scores[overlapping]
        total = float(weights.sum())
        out_boxes.append((boxes[overlapping] * weights[:, None]).sum(axis=0) / total)
        out_points.append((points[overlapping] * weights[:, None, None]).sum(axis=0) / total)
        out_scores.append(total / len(overlapping))
    return np.array(out_boxes), np.array(out_points), np.array(out_scores, np.float32)


def five_points(keypoints: np.ndarray) -> np.ndarray:
    """(N, 5, 2) eyes, nose and estimated mouth corners from BlazeFace's (N, 6, 2) keypoints."""
    left_eye, right_eye, nose, mouth = keypoints[:, 0], keypoints[:, 1], keypoints[:, 2], keypoints[:, 3]
    half_mouth = (right_eye - left_eye) * (MOUTH_TO_EYE_RATIO / 2)
    return np.stack([left_eye, right_eye, nose, mouth - half_mouth, mouth + half_mouth], axis=1)


class BlazeFaceDetector:
    """BlazeFace on the image padded to a square (bottom/right) and resized to the model's size."""

    def __init__(
        self,
        session: ort.InferenceSession,
        anchors: np.ndarray,
        *,
        name: str = "blazeface",
        score_threshold: float = 0.75,
        nms_threshold: float = 0.3,
    ) -> None:
        self.name = name
        self.score_threshold = score_threshold
        self.nms_threshold = nms_threshold
        self._session = session
        self._anchors = anchors
        self._input, shape = single_input(session, name)
        size = static_dim(shape[2]) if len(shape) == 4 else None
        if size is None:
            raise ModelFormatError(f"{name}: BlazeFace input must have a fixed size, got {shape}")
        self.input_size = size
        groups = outputs_by_last_dim(session, name, (16, 1))
        self._outputs = [groups[16][0], groups[1][0]]

    def detect(self, image: np.ndarray) -> list[Face]:
        image = check_image(image)
        height, width = image.shape[:2]
        side = max(height, width)
        # Pad to a square first so the face keeps its aspect (BlazeFace only sees square inputs).
        square = np.zeros((side, side, 3), np.uint8)
        square[:height, :width] = image
        size = self.input_size
        resized = resize(square, (size, size), "area" if side > size else "linear")
        blob = (resized.astype(np.float32) * (1.0 / 127.5) - 1.0).transpose(2, 0, 1)[None]
        raw, logits = (r.reshape(NUM_ANCHORS, -1) for r in self._session.run(self._outputs, {self._input: blob}))
        # float64: exp(100) overflows float32.
        scores = 1.0 / (1.0 + np.exp(-np.clip(logits[:, 0].astype(np.float64), -100.0, 100.0)))
        keep = np.nonzero(scores >= self.score_threshold)[0]
        if keep.size == 0:
            return []
        anchors, raw, scores = self._anchors[keep], raw[keep], scores[keep]
        anchor_xy, anchor_wh = anchors[:, 0:2], anchors[:, 2:4]
        centre = raw[:, 0:2] / size * anchor_wh + anchor_xy
        box_wh = raw[:, 2:4] / size * anchor_wh
        boxes = np.concatenate([centre - box_wh / 2, centre + box_wh / 2], axis=1)
        keypoints = raw[:, 4:16].reshape(-1, 6, 2) / size * anchor_wh[:, None, :] + anchor_xy[:, None, :]
        boxes, keypoints, scores = weighted_nms(boxes, keypoints, scores, self.nms_threshold)
        # Normalised 0..1 of the square -> pixels of the input image (the square's origin is its own).
        return faces_from_arrays(boxes * side, scores, five_points(keypoints) * side)


def blazeface_from_spec(spec: ModelSpec, paths: Mapping[str, Path], make_session: MakeSession) -> BlazeFaceDetector:
    options = spec.options
    return BlazeFaceDetector(
        make_session(require_path(paths, "model", spec.name)),
        load_anchors(require_path(paths, "anchors", spec.name)),
        name=spec.name,
        score_threshold=float_option(options, "score_threshold", 0.75),
        nms_threshold=float_option(options, "nms_threshold", 0.3),
    )
