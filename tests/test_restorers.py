"""OnnxRestorer on small real ONNX graphs that mimic each public family's I/O conventions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from engine.errors import ModelFormatError, ModelNotFoundError
from engine.models import ModelFile, ModelSpec, ModelStore, sha256_file
from engine.restorers import OnnxRestorer, load_restorer
from engine.restorers.families import TensorInfo, detect_family
from engine.runtime import create_session

SIZE = 32


def save_graph(
    path: Path,
    nodes: list[onnx.NodeProto],
    inputs: list[onnx.ValueInfoProto],
    outputs: list[onnx.ValueInfoProto],
    initializers: list[onnx.TensorProto] | None = None,
) -> Path:
    graph = helper.make_graph(nodes, "test", inputs, outputs, initializer=initializers or [])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def image(name: str, batch: Any = 1, size: int = SIZE, dtype: int = TensorProto.FLOAT) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, dtype, [batch, 3, size, size])


def negate_graph(path: Path, batch: Any = 1, size: int = SIZE, out: str = "output") -> Path:
    """GFPGAN/GPEN-like: input [b,3,S,S] -> output = -input."""
    return save_graph(
        path,
        [helper.make_node("Neg", ["input"], [out])],
        [image("input", batch, size)],
        [image(out, batch, size)],
    )


def spec_for(path: Path, arch: str, **fields: Any) -> ModelSpec:
    values: dict[str, Any] = {"size": SIZE, "template": "ffhq", "input": "input", "range": (-1.0, 1.0)}
    values.update(fields)
    return ModelSpec(
        name=f"test-{arch}",
        family="restorer",
        arch=arch,
        files=(ModelFile("model", path.name, sha256_file(path)),),
        **values,
    )


class CountingSession:
    """Forwards to a real session and counts run() calls (batch-1 graphs must run per face)."""

    def __init__(self, session: Any) -> None:
        self.session = session
        self.calls: list[int] = []

    def get_inputs(self) -> Any:
        return self.session.get_inputs()

    def get_outputs(self) -> Any:
        return self.session.get_outputs()

    def run(self, names: Any, feeds: dict[str, np.ndarray]) -> Any:
        self.calls.append(next(iter(feeds.values())).shape[0])
        return self.session.run(names, feeds)


def random_crops(n: int, size: int = SIZE, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def test_gfpgan_like_range_minus1_1_negation_inverts_pixels(tmp_path: Path) -> None:
    path = negate_graph(tmp_path / "gfpgan.onnx")
    restorer = OnnxRestorer(spec_for(path, "gfpgan"), create_session(path, "cpu", threads=1))
    crops = random_crops(3)
    out = restorer.restore(crops, None)
    assert out.shape == crops.shape and out.dtype == np.uint8
    # [-1,1]: x = c/127.5 - 1, y = -x  ->  255 - c
    assert np.abs(out.astype(int) - (255 - crops.astype(int))).max() <= 1
    assert restorer.has_native_weight is False and restorer.size == SIZE


def test_fixed_batch_one_runs_per_face_and_dynamic_batch_runs_once(tmp_path: Path) -> None:
    fixed = negate_graph(tmp_path / "fixed.onnx", batch=1)
    dynamic = negate_graph(tmp_path / "dynamic.onnx", batch="batch")
    crops = random_crops(3, seed=1)
    fixed_session = CountingSession(create_session(fixed, "cpu", threads=1))
    dynamic_session = CountingSession(create_session(dynamic, "cpu", threads=1))
    out_fixed = OnnxRestorer(spec_for(fixed, "gfpgan"), fixed_session).restore(crops, None)
    out_dynamic = OnnxRestorer(spec_for(dynamic, "gfpgan"), dynamic_session).restore(crops, None)
    assert fixed_session.calls == [1, 1, 1]
    assert dynamic_session.calls == [3]
    np.testing.assert_array_equal(out_fixed, out_dynamic)


@pytest.mark.parametrize("batch", [1, "batch"])
def test_mirrored_restore_averages_the_crop_and_its_mirror_in_one_batch(tmp_path: Path, batch: Any) -> None:
    """y = x * (column / (S-1)): mirrored, the two views' ramps add to 1 everywhere, so y = x / 2."""
    ramp = np.linspace(0.0, 1.0, SIZE, dtype=np.float32)
    scale = helper.make_tensor("ramp", TensorProto.FLOAT, [1, 1, 1, SIZE], ramp.tolist())
    path = save_graph(
        tmp_path / "ramp.onnx",
        [helper.make_node("Mul", ["input", "ramp"], ["output"])],
        [image("input", batch)],
        [image("output", batch)],
        [scale],
    )
    session = CountingSession(create_session(path, "cpu", threads=1))
    restorer = OnnxRestorer(spec_for(path, "gfpgan", range=(0.0, 1.0)), session)
    crops = random_crops(3, seed=4)
    plain = restorer.restore(crops, None)
    assert np.abs(plain.astype(int) - np.rint(crops * ramp[None, None, :, None]).astype(int)).max() <= 1
    session.calls.clear()
    mirrored = restorer.restore(crops, None, mirrored=True)
    assert mirrored.shape == crops.shape and mirrored.dtype == np.uint8
    assert np.abs(mirrored.astype(int) - crops.astype(int) / 2).max() <= 1
    assert session.calls == ([1] * 6 if batch == 1 else [6])


def test_range_0_1_and_channel_order(tmp_path: Path) -> None:
    # y = x * [0, 1, 1] per channel: the graph's channel 0 is zeroed.
    scale = helper.make_tensor("scale", TensorProto.FLOAT, [1, 3, 1, 1], [0.0, 1.0, 1.0])
    path = save_graph(
        tmp_path / "zero_c0.onnx",
        [helper.make_node("Mul", ["input", "scale"], ["output"])],
        [image("input", "batch")],
        [image("output", "batch")],
        [scale],
    )
    session = create_session(path, "cpu", threads=1)
    crops = random_crops(2, seed=2)
    rgb = OnnxRestorer(spec_for(path, "restora", range=(0.0, 1.0), output="output"), session).restore(crops)
    assert (rgb[..., 0] == 0).all()
    np.testing.assert_array_equal(rgb[..., 1:], crops[..., 1:])
    bgr = OnnxRestorer(spec_for(path, "restora", range=(0.0, 1.0), channel_order="bgr"), session).restore(
        crops
    )
    # The model's channel 0 is blue for a BGR model: the RGB result loses its last channel.
    assert (bgr[..., 2] == 0).all()
    np.testing.assert_array_equal(bgr[..., :2], crops[..., :2])


def codeformer_graph(path: Path, weight_shape: list[int], weight_type: int) -> Path:
    """CodeFormer-like: inputs input [1,3,S,S] float + weight (double); output = input * (1 - w)."""
    one = helper.make_tensor("one", TensorProto.FLOAT, [], [1.0])
    nodes = [
        helper.make_node("Cast", ["weight"], ["w"], to=TensorProto.FLOAT),
        helper.make_node("Sub", ["one", "w"], ["keep"]),
        helper.make_node("Mul", ["input", "keep"], ["output"]),
    ]
    weight = helper.make_tensor_value_info("weight", weight_type, weight_shape)
    return save_graph(path, nodes, [image("input", 1), weight], [image("output", 1)], [one])


@pytest.mark.parametrize(
    ("weight_shape", "weight_type"),
    [([1], TensorProto.DOUBLE), ([], TensorProto.FLOAT)],
    ids=["double[1]", "float-scalar"],
)
def test_codeformer_weight_reaches_graph(tmp_path: Path, weight_shape: list[int], weight_type: int) -> None:
    path = codeformer_graph(tmp_path / "codeformer.onnx", weight_shape, weight_type)
    spec = spec_for(path, "codeformer", weight_input="weight", default_fidelity=0.25)
    restorer = OnnxRestorer(spec, create_session(path, "cpu", threads=1))
    assert restorer.has_native_weight
    crops = random_crops(2, seed=3)
    x = crops.astype(np.float64) / 127.5 - 1.0
    for fidelity, w in ((0.0, 0.0), (0.7, 0.7), (1.0, 1.0), (None, 0.25)):
        out = restorer.restore(crops, fidelity)
        expected = np.clip(np.rint((x * (1.0 - w) + 1.0) * 127.5), 0, 255)
        assert np.abs(out.astype(int) - expected.astype(int)).max() <= 1, fidelity


def test_restoreformer_picks_image_output_by_shape(tmp_path: Path) -> None:
    nodes = [
        helper.make_node("GlobalAveragePool", ["input"], ["pooled"]),
        helper.make_node("Neg", ["input"], ["restored"]),
        helper.make_node("ReduceSum", ["input", "axes"], ["summed"], keepdims=1),
    ]
    axes = helper.make_tensor("axes", TensorProto.INT64, [1], [1])
    outputs = [
        helper.make_tensor_value_info("pooled", TensorProto.FLOAT, [1, 3, 1, 1]),
        image("restored", 1),
        helper.make_tensor_value_info("summed", TensorProto.FLOAT, [1, 1, SIZE, SIZE]),
    ]
    path = save_graph(tmp_path / "rfpp.onnx", nodes, [image("input", 1)], outputs, [axes])
    restorer = OnnxRestorer(
        spec_for(path, "restoreformer", input=None), create_session(path, "cpu", threads=1)
    )
    assert restorer.output_name == "restored"
    crops = random_crops(2, seed=4)
    assert np.abs(restorer.restore(crops).astype(int) - (255 - crops.astype(int))).max() <= 1


def test_fp16_graph_io(tmp_path: Path) -> None:
    path = save_graph(
        tmp_path / "half.onnx",
        [helper.make_node("Neg", ["input"], ["output"])],
        [image("input", "n", dtype=TensorProto.FLOAT16)],
        [image("output", "n", dtype=TensorProto.FLOAT16)],
    )
    restorer = OnnxRestorer(
        spec_for(path, "gfpgan", precision="fp16"), create_session(path, "cpu", threads=1)
    )
    crops = random_crops(2, seed=5)
    assert np.abs(restorer.restore(crops).astype(int) - (255 - crops.astype(int))).max() <= 1


def test_manifest_mismatches_are_format_errors(tmp_path: Path) -> None:
    path = negate_graph(tmp_path / "g.onnx")
    session = create_session(path, "cpu", threads=1)
    with pytest.raises(ModelFormatError, match="size 64"):
        OnnxRestorer(spec_for(path, "gfpgan", size=64), session)
    with pytest.raises(ModelFormatError, match="'image'"):
        OnnxRestorer(spec_for(path, "gfpgan", input="image"), session)
    with pytest.raises(ModelFormatError, match="weight"):
        OnnxRestorer(spec_for(path, "codeformer", weight_input="w"), session)
    restorer = OnnxRestorer(spec_for(path, "gfpgan"), session)
    with pytest.raises(ValueError, match="expects"):
        restorer.restore(random_crops(1, size=SIZE + 1))
    assert restorer.restore(np.zeros((0, SIZE, SIZE, 3), np.uint8)).shape == (0, SIZE, SIZE, 3)


def test_a_size_dynamic_graph_takes_the_manifests_crop_sizes(tmp_path: Path) -> None:
    path = save_graph(
        tmp_path / "dynamic.onnx",
        [helper.make_node("Neg", ["input"], ["output"])],
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, "height", "width"])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", 3, "height", "width"])],
    )
    session = create_session(path, "cpu", threads=1)
    restorer = OnnxRestorer(spec_for(path, "restora", crop_sizes=(16, 24)), session)
    assert restorer.sizes == (16, 24, SIZE)
    for size in restorer.sizes:
        crops = random_crops(2, size=size, seed=size)
        out = restorer.restore(crops)
        assert out.shape == crops.shape
        assert np.abs(out.astype(int) - (255 - crops.astype(int))).max() <= 1
    with pytest.raises(ValueError, match="S 16 or 24 or 32"):
        restorer.restore(random_crops(1, size=20))
    # Without crop_sizes the same graph takes only the manifest's size.
    assert OnnxRestorer(spec_for(path, "restora"), session).sizes == (SIZE,)
    fixed = negate_graph(tmp_path / "fixed.onnx")
    with pytest.raises(ModelFormatError, match=r"crop_sizes .* fixed at 32x32"):
        OnnxRestorer(spec_for(fixed, "gfpgan", crop_sizes=(16,)), create_session(fixed, "cpu", threads=1))


def test_load_restorer_verifies_and_runs(tmp_path: Path) -> None:
    path = negate_graph(tmp_path / "gpen_like.onnx")
    spec = spec_for(path, "gpen")
    store = ModelStore(specs=(spec,), search_dirs=(tmp_path,), user_dir=tmp_path / "user")
    restorer = load_restorer(store, spec.name, provider="cpu", threads=1)
    crops = random_crops(1, seed=6)
    assert np.abs(restorer.restore(crops).astype(int) - (255 - crops.astype(int))).max() <= 1
    missing = ModelStore(specs=(spec,), search_dirs=(tmp_path / "empty",), user_dir=tmp_path / "user")
    with pytest.raises(ModelNotFoundError, match="not installed"):
        load_restorer(missing, spec.name)


def info(name: str, shape: tuple[Any, ...], dtype: str = "tensor(float)") -> TensorInfo:
    return TensorInfo(name, shape, dtype)


def test_detect_family_signatures() -> None:
    img = info("input", (1, 3, 512, 512))
    assert detect_family([img], [info("output", (1, 3, 512, 512))]) == "gfpgan"
    assert detect_family([info("input", (1, 3, 256, 256))], [info("output", (1, 3, 256, 256))]) == "gpen"
    assert (
        detect_family([img, info("weight", (1,), "tensor(double)")], [info("output", (1, 3, 512, 512))])
        == "codeformer"
    )
    assert detect_family([img], [info("a", (1, 256, 16, 16)), info("b", (1, 3, 512, 512))]) == "restoreformer"
    yunet_out = [
        info(f"{k}_{s}", (1, 100, d))
        for k, d in (("cls", 1), ("obj", 1), ("bbox", 4), ("kps", 10))
        for s in (8, 16, 32)
    ]
    assert detect_family([info("input", (1, 3, 640, 640))], yunet_out) == "yunet"
    with pytest.raises(ModelFormatError, match=r"expected a restorer.*found inputs gray"):
        detect_family([info("gray", (1, 1, 64, 64))], [info("out", (1, 1, 64, 64))])


SHARED_MODELS = Path(__file__).resolve().parents[2] / "shared" / "models"


@pytest.mark.skipif(not SHARED_MODELS.is_dir(), reason="../shared/models is not present")
@pytest.mark.parametrize(
    ("file", "arch"),
    [
        ("yunet_s_640_640.onnx", "yunet"),
        ("scrfd_500m_bnkps.onnx", "scrfd"),
        ("scrfd_2.5g_bnkps.onnx", "scrfd"),
        ("retinaface_mbnet0.25.onnx", "retinaface"),
        ("ultraface_version-RFB-320.onnx", "ultraface"),
        ("blazeface_front128.onnx", "blazeface"),
        ("yolo5face_500m_320x320.onnx", "yolo5face"),
    ],
)
def test_detect_family_on_real_detectors(file: str, arch: str) -> None:
    session = create_session(SHARED_MODELS / file, "cpu", threads=1)
    inputs = [TensorInfo(i.name, tuple(i.shape), i.type) for i in session.get_inputs()]
    outputs = [TensorInfo(o.name, tuple(o.shape), o.type) for o in session.get_outputs()]
    assert detect_family(inputs, outputs) == arch
