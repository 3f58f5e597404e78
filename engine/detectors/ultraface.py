"""Ultra-Light-Fast-Generic-Face-Detector (UltraFace) boxes + MediaPipe FaceMesh for 5 points.

UltraFace input: RGB, ``(x - 127) / 128``, NCHW at the graph's fixed size (320x240 or 640x480),
the whole image resized to it (aspect not kept, as the upstream demo does). Outputs: ``scores``
[1, P, 2] (softmax, face = 1) and ``boxes`` [1, P, 4] corners normalised 0..1. Boxes only.

The 5 points come from the 468-point FaceMesh model (file role ``landmarks``) run on a square
crop around each box, 1.5 times its size (25% margin a side), RGB ``x / 255`` at 192x192; its
landmarks are in 0..1 of the crop. Published FaceMesh indices used (subject's right eye first,
which is the viewer's left):
  eyes: mean of the eye-contour points 33, 133, 159, 145 (subject's right) and 362, 263, 386, 374
  (subject's left): the two corners and the mid upper and lower lid, i.e. about the pupil;
  nose tip: 1; mouth corners: 61 (subject's right) and 291 (subject's left).
A box whose crop FaceMesh scores below ``landmark_min_score`` is dropped (it is not a face).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import onnxruntime as ort

from engine.detectors.base import (
    MakeSession,
    check_image,
    faces_from_arrays,
    fixed_input_size,
    float_option,
    nms,
    outputs_by_last_dim,
    require_path,
    single_input,
    static_dim,
)
from engine.errors import ModelFormatError
from engine.faces import Face
from engine.models import ModelSpec
from engine.resample import resize, warp_affine

RIGHT_EYE = (33, 133, 159, 145)  # subject's right eye: viewer's left
LEFT_EYE = (362, 263, 386, 374)
NOSE_TIP = 1
MOUTH_RIGHT, MOUTH_LEFT = 61, 291  # subject's right corner first: viewer's left
CROP_MARGIN = 1.5  # crop side / box side


class FaceMesh:
    """MediaPipe FaceMesh (468 points) on a face crop; gives the 5 alignment points."""

    def __init__(self, session: ort.InferenceSession, name: str = "facemesh") -> None:
        self.name = name
        self._session = session
        self._input, shape = single_input(session, name)
        size = static_dim(shape[2]) if len(shape) == 4 else None
        if size is None:
            raise ModelFormatError(f"{name}: FaceMesh input must have a fixed size, got {shape}")
        self.size = size
        names = {o.name: o.shape for o in session.get_outputs()}
        points = [n for n, s in names.items() if len(s) == 3 and s[-1] == 3]
        confs = [n for n in names if n not in points]
        if len(points) != 1 or len(confs) != 1:
            raise ModelFormatError(f"{name}: expected a confidence and a [1, 468, 3] landmarks output")
        self._outputs = [confs[0], points[0]]

    def five_points(self, image: np.ndarray, box: np.ndarray) -> tuple[np.ndarray, float]:
        """The (5, 2) points in image pixels for a face ``box``, and FaceMesh's face confidence."""
        centre = (box[0:2] + box[2:4]) / 2
        side = float(max(box[2] - box[0], box[3] - box[1])) * CROP_MARGIN
        scale = self.size / max(side, 1.0)
        # Affine map image -> crop; pixels outside the image are black, as in a padded crop.
        shift = self.size / 2 - centre * scale
        matrix = np.array([[scale, 0, shift[0]], [0, scale, shift[1]]], np.float32)
        crop = warp_affine(image, matrix, (self.size, self.size))
        blob = (crop.astype(np.float32) * (1.0 / 255.0)).transpose(2, 0, 1)[None]
        conf, points = self._session.run(self._outputs, {self._input: blob})
        mesh = points.reshape(-1, 3)[:, 0:2] * self.size  # crop pixels
        five = np.stack(
            [
                mesh[list(RIGHT_EYE)].mean(axis=0),
                mesh[list(LEFT_EYE)].mean(axis=0),
                mesh[NOSE_TIP],
                mesh[MOUTH_RIGHT],
                mesh[MOUTH_LEFT],
            ]
        )
        return (five - shift) / scale, float(np.asarray(conf).reshape(-1)[0])


class UltraFaceDetector:
    """UltraFace boxes; FaceMesh on each box for the landmarks."""

    def __init__(
        self,
        session: ort.InferenceSession,
        mesh: FaceMesh,
        *,
        name: str = "ultraface",
        score_threshold: float = 0.7,
        nms_threshold: float = 0.3,
        landmark_min_score: float = 0.5,
    ) -> None:
        self.name = name
        self.score_threshold = score_threshold
        self.nms_threshold = nms_threshold
        self.landmark_min_score = landmark_min_score
        self._session = session
        self._mesh = mesh
        self._input, shape = single_input(session, name)
        fixed = fixed_input_size(shape)
        if fixed is None:
            raise ModelFormatError(f"{name}: UltraFace input must have a fixed size, got {shape}")
        self._size = fixed  # (width, height)
        groups = outputs_by_last_dim(session, name, (2, 4))
        self._outputs = [groups[2][0], groups[4][0]]

    def detect(self, image: np.ndarray) -> list[Face]:
        image = check_image(image)
        height, width = image.shape[:2]
        resized = resize(image, self._size, "area" if width > self._size[0] else "linear")
        blob = ((resized.astype(np.float32) - 127.0) * (1.0 / 128.0)).transpose(2, 0, 1)[None]
        scores, boxes = (r.reshape(-1, r.shape[-1]) for r in self._session.run(self._outputs, {self._input: blob}))
        keep = np.nonzero(scores[:, 1] >= self.score_threshold)[0]
        if keep.size == 0:
            return []
        boxes = boxes[keep] * np.array([width, height, width, height], np.float32)
        face_scores = scores[keep, 1]
        keep = nms(boxes, face_scores, self.nms_threshold)
        kept_boxes, kept_scores, kept_points = [], [], []
        for i in keep:
            points, mesh_score = self._mesh.five_points(image, boxes[i])
            if mesh_score < self.landmark_min_score:
                continue
            kept_boxes.append(boxes[i])
            kept_scores.append(face_scores[i])
            kept_points.append(points)
        if not kept_boxes:
            return []
        return faces_from_arrays(np.array(kept_boxes), np.array(kept_scores), np.array(kept_points))


def ultraface_from_spec(spec: ModelSpec, paths: Mapping[str, Path], make_session: MakeSession) -> UltraFaceDetector:
    options = spec.options
    return UltraFaceDetector(
        make_session(require_path(paths, "model", spec.name)),
        FaceMesh(make_session(require_path(paths, "landmarks", spec.name)), name=f"{spec.name} landmarks"),
        name=spec.name,
        score_threshold=float_option(options, "score_threshold", 0.7),
        nms_threshold=float_option(options, "nms_threshold", 0.3),
        landmark_min_score=float_option(options, "landmark_min_score", 0.5),
    )
