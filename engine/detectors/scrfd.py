"""SCRFD (InsightFace) with 5 keypoints, both export layouts.

Input: RGB, ``(x - 127.5) / 128``, NCHW, any size (multiples of 32). Outputs: for each stride
(8, 16, 32) a score map (sigmoid'd), box distances and keypoint offsets, with 2 anchors per cell.
Exports differ: some keep a batch dimension ([1, N, C]), others do not ([N, C]), and output names
may be numeric, so outputs are matched by their last dimension (1, 4, 10) and ordered by their
number of anchors (most anchors = stride 8), never by name.
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
    float_option,
    grid_centres,
    int_option,
    letterbox,
    nms,
    outputs_by_last_dim,
    require_path,
    single_input,
    static_dim,
)
from engine.errors import ModelFormatError
from engine.faces import Face
from engine.models import ModelSpec

STRIDES = (8, 16, 32)
ANCHORS_PER_CELL = 2


class SCRFDDetector:
    """SCRFD on the image fitted (aspect kept) into a square canvas of ``input_size``.

    ``pad`` (fraction of the long side) adds a black border first; see ``detect``.
    """

    def __init__(
        self,
        session: ort.InferenceSession,
        *,
        name: str = "scrfd",
        input_size: int = 640,
        score_threshold: float = 0.5,
        nms_threshold: float = 0.4,
        pad: float = 0.0,
    ) -> None:
        self.name = name
        self.pad = max(0.0, pad)
        self.score_threshold = score_threshold
        self.nms_threshold = nms_threshold
        self._session = session
        self._input, shape = single_input(session, name)
        fixed = static_dim(shape[2]) if len(shape) == 4 else None
        self.input_size = fixed or input_size
        groups = outputs_by_last_dim(session, name, (1, 4, 10))
        if any(len(names) != len(STRIDES) for names in groups.values()):
            raise ModelFormatError(f"{name}: expected 3 score, 3 box and 3 keypoint outputs (SCRFD with kps)")
        self._scores, self._boxes, self._kps = groups[1], groups[4], groups[10]

    def detect(self, image: np.ndarray) -> list[Face]:
        image = check_image(image)
        size = self.input_size
        # SCRFD misses a face that fills the frame (an aligned crop): a black border of ``pad``
        # times the long side on every side brings such a face back into its anchor range.
        margin = round(self.pad * max(image.shape[:2]))
        if margin:
            image = np.pad(image, ((margin, margin), (margin, margin), (0, 0)))
        canvas, scale = letterbox(image, size, size)
        blob = ((canvas.astype(np.float32) - 127.5) * (1.0 / 128.0)).transpose(2, 0, 1)[None]
        names = self._scores + self._boxes + self._kps
        raw = self._session.run(names, {self._input: np.ascontiguousarray(blob)})
        # Drop a leading batch dimension when the export kept one: every output becomes (N, C).
        flat = {n: r.reshape(-1, r.shape[-1]) for n, r in zip(names, raw, strict=True)}

        def by_anchor_count(group: list[str]) -> list[np.ndarray]:
            return sorted((flat[n] for n in group), key=lambda a: -a.shape[0])

        boxes_all, scores_all, points_all = [], [], []
        per_stride = zip(
            STRIDES,
            by_anchor_count(self._scores),
            by_anchor_count(self._boxes),
            by_anchor_count(self._kps),
            strict=True,
        )
        for stride, score, dist, kps in per_stride:
            rows, cols = -(-size // stride), -(-size // stride)
            if score.shape[0] != rows * cols * ANCHORS_PER_CELL:
                raise ModelFormatError(
                    f"{self.name}: stride {stride} output has {score.shape[0]} anchors,"
                    f" expected {rows * cols * ANCHORS_PER_CELL}"
                )
            keep = np.nonzero(score[:, 0] >= self.score_threshold)[0]
            if keep.size == 0:
                continue
            centres = grid_centres(rows, cols, stride, ANCHORS_PER_CELL)[keep]
            d = dist[keep] * stride
            boxes_all.append(np.concatenate([centres - d[:, 0:2], centres + d[:, 2:4]], axis=1))
            points_all.append(centres[:, None, :] + kps[keep].reshape(-1, 5, 2) * stride)
            scores_all.append(score[keep, 0])
        if not boxes_all:
            return []
        boxes, scores, points = (
            np.concatenate(boxes_all),
            np.concatenate(scores_all),
            np.concatenate(points_all),
        )
        keep = nms(boxes, scores, self.nms_threshold)
        boxes, points = boxes[keep] - margin * scale, points[keep] - margin * scale
        return faces_from_arrays(boxes, scores[keep], points, scale=scale)


def scrfd_from_spec(spec: ModelSpec, paths: Mapping[str, Path], make_session: MakeSession) -> SCRFDDetector:
    options = spec.options
    return SCRFDDetector(
        make_session(require_path(paths, "model", spec.name)),
        name=spec.name,
        input_size=int_option(options, "input_size", spec.size or 640) or 640,
        score_threshold=float_option(options, "score_threshold", 0.5),
        nms_threshold=float_option(options, "nms_threshold", 0.4),
        pad=float_option(options, "pad", 0.0),
    )
