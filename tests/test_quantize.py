"""`restora quantize`: INT8 and FP16 variants of restorers, calibrated on real aligned faces.

The faces are the astronaut's, aligned by the default detector and degraded (JPEG, blur, noise) as a
user's old photos would be. The models are the shipped restora-lite and two "user" restorers built
from its FP32 graph with the GFPGAN and CodeFormer conventions (range [-1, 1], a fixed 1 x 3 x 512 x
512 input, CodeFormer's fidelity input), so every path a public model takes is exercised by a graph
that really restores.
"""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from PIL import Image as PILImage
from PIL import ImageFilter

from engine.bench import aligned_test_crops
from engine.cli import Environment, ExitStatus, main
from engine.faces import resize_aligned
from engine.models import ModelStore, sha256_file
from engine.quantize import face_finder, float_nodes, load_calibration_faces, pad_narrow_convs
from engine.restorers import load_restorer
from tests.helpers import write_jpeg

SHIPPED_FP32 = Path(__file__).resolve().parents[1] / "assets" / "models" / "restora-lite-fp32.onnx"


def run_cli(*argv: str | Path) -> tuple[ExitStatus, str, str]:
    out, err = io.StringIO(), io.StringIO()
    status = main([str(a) for a in argv], Environment(stdout=out, stderr=err))
    return status, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def calib_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four degraded aligned astronaut faces of different sizes, and one file that is not an image."""
    folder = tmp_path_factory.mktemp("calib")
    face = aligned_test_crops(ModelStore.default(), 512, 1, "cpu")[0]
    rng = np.random.default_rng(0)
    write_jpeg(folder / "a_jpeg30.jpg", face, quality=30)
    small = PILImage.fromarray(face).resize((128, 128), PILImage.Resampling.BOX)
    small.filter(ImageFilter.GaussianBlur(1.2)).save(folder / "b_small_blurred.png")
    noisy = np.clip(face + rng.normal(0, 12, face.shape), 0, 255).astype(np.uint8)
    PILImage.fromarray(noisy).save(folder / "c_noisy.png")
    write_jpeg(folder / "d_gray.jpg", np.repeat(face.mean(axis=2, keepdims=True), 3, axis=2).astype(np.uint8),
               quality=60)
    (folder / "e_broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a JPEG")
    return folder


def _wrap_minus_one_to_one(weight_input: bool) -> onnx.ModelProto:
    """restora-lite FP32 with GFPGAN's I/O: [-1, 1] values, input fixed at 1 x 3 x 512 x 512; with
    ``weight_input``, CodeFormer's too: a float64 ``weight`` [1] mixing the input back in."""
    model = onnx.load(str(SHIPPED_FP32))
    graph = model.graph
    for node in graph.node:
        node.input[:] = ["x01" if name == "input" else name for name in node.input]
        node.output[:] = ["y01" if name == "output" else name for name in node.output]
    del graph.input[:], graph.output[:]
    graph.input.append(helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 512, 512]))
    graph.output.append(helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 3, 512, 512]))
    graph.initializer.extend([numpy_helper.from_array(np.array(v, np.float32), name)
                              for name, v in (("one", 1.0), ("half", 0.5), ("two", 2.0))])
    pre = [helper.make_node("Add", ["input", "one"], ["x_plus"]),
           helper.make_node("Mul", ["x_plus", "half"], ["x01"])]
    post = [helper.make_node("Mul", ["y01", "two"], ["y_twice"])]
    if weight_input:
        graph.input.append(helper.make_tensor_value_info("weight", TensorProto.DOUBLE, [1]))
        post += [helper.make_node("Sub", ["y_twice", "one"], ["restored"]),
                 helper.make_node("Cast", ["weight"], ["w"], to=TensorProto.FLOAT),
                 helper.make_node("Sub", ["input", "restored"], ["toward_input"]),
                 helper.make_node("Mul", ["toward_input", "w"], ["kept"]),
                 helper.make_node("Add", ["restored", "kept"], ["output"])]
    else:
        post += [helper.make_node("Sub", ["y_twice", "one"], ["output"])]
    nodes = [*pre, *graph.node, *post]
    del graph.node[:]
    graph.node.extend(nodes)
    del graph.value_info[:]
    onnx.checker.check_model(model)
    return model


def _report(path: Path) -> dict[str, dict[str, Any]]:
    return {r["precision"]: r for r in json.loads(path.read_text())["results"]}


def test_quantize_restora_lite_registers_variants_that_enhance_uses(
    tmp_path: Path, user_model_dir: Path, calib_dir: Path, astronaut: np.ndarray
) -> None:
    status, out, err = run_cli("quantize", "restora-lite", "--calib", calib_dir, "--threads", "2",
                               "--json", tmp_path / "report.json")
    assert status == ExitStatus.OK, err
    assert "4 calibration faces at 512 px (1 file skipped)" in out
    assert "e_broken.jpg" in out
    report = _report(tmp_path / "report.json")
    # INT8 restores the faces within a fraction of a level of FP32; FP16 closer still.
    assert report["int8"]["psnr_db"] > 42 and report["int8"]["mean_abs_diff"] < 1.0
    assert report["fp16"]["psnr_db"] > report["int8"]["psnr_db"]
    assert report["int8"]["megabytes"] < 0.4 * report["fp32"]["megabytes"]

    # The shipped names are taken, so the variants are restora-lite-custom, listed and verified.
    written = json.loads((user_model_dir / "user.json").read_text())["models"]
    assert sorted((m["name"], m["precision"]) for m in written) == [
        ("restora-lite-custom", "fp16"), ("restora-lite-custom", "int8")]
    for entry in written:
        assert entry["crop_sizes"] == [256, 384] and entry["range"] == [0.0, 1.0]
        assert entry["sha256"] == sha256_file(user_model_dir / entry["file"])
        assert entry["license"].startswith("Weights: non-commercial")

    # The head conv and the final skip addition (they read the image input) stayed float.
    int8 = onnx.load(str(user_model_dir / "restora-lite-custom-int8.onnx")).graph
    readers = {n.op_type for n in int8.node if "input" in n.input}
    assert readers == {"Conv", "Add"}
    assert sum(n.op_type == "QuantizeLinear" for n in int8.node) > 10
    # The RGB tail conv runs as a 16-output conv whose first 3 outputs are sliced out (pad_narrow_convs).
    shapes = {i.name: tuple(i.dims) for i in int8.initializer}
    tails = [n for n in int8.node if n.op_type == "Slice" and n.name.endswith("_padded_slice")]
    assert len(tails) == 1 and shapes[tails[0].input[2]] == (1,)
    assert all(dims[0] >= 16 for name, dims in shapes.items() if name.endswith("_padded_weight"))

    photos = tmp_path / "photos"
    photos.mkdir()
    write_jpeg(photos / "astronaut.jpg", astronaut)
    status, _, err = run_cli("enhance", photos, "-o", tmp_path / "out", "--model", "restora-lite-custom",
                             "--json", tmp_path / "run.json", "--quiet")
    assert status == ExitStatus.OK, err
    run = json.loads((tmp_path / "run.json").read_text())
    assert (run["model"], run["precision"], run["items"][0]["faces"]) == ("restora-lite-custom", "int8", 1)

    # Running it again replaces the variants instead of listing them twice.
    status, _, err = run_cli("quantize", "restora-lite", "--calib", calib_dir, "--faces", "2")
    assert status == ExitStatus.OK, err
    assert len(json.loads((user_model_dir / "user.json").read_text())["models"]) == 2


def test_quantize_a_users_gfpgan_style_file_to_out(tmp_path: Path, user_model_dir: Path, calib_dir: Path) -> None:
    source = tmp_path / "my-gfpgan.onnx"
    onnx.save(_wrap_minus_one_to_one(weight_input=False), str(source))
    before = sha256_file(source)
    target = tmp_path / "variants" / "my-gfpgan-int8.onnx"
    status, _, err = run_cli("quantize", source, "--calib", calib_dir, "--out", target,
                               "--json", tmp_path / "report.json")
    assert status == ExitStatus.OK, err
    assert sha256_file(source) == before  # the original is never modified
    assert target.is_file() and (tmp_path / "variants" / "my-gfpgan-fp16.onnx").is_file()
    assert not (user_model_dir / "user.json").exists()  # --out registers nothing
    report = _report(tmp_path / "report.json")
    assert report["int8"]["psnr_db"] > 40 and report["fp16"]["psnr_db"] > 50

    # The files say what they are: an import knows the INT8 as a GFPGAN-convention restorer.
    status, _, err = run_cli("models", "import", target, "--name", "mine")
    assert status == ExitStatus.OK, err
    store = ModelStore.default()
    spec = store.get("mine", "int8")
    assert (spec.arch, spec.size, spec.range) == ("gfpgan", 512, (-1.0, 1.0))
    restorer = load_restorer(store, "mine", "int8", "cpu", 1)
    face = aligned_test_crops(store, 512, 1, "cpu")
    restored = restorer.restore(face)
    assert np.abs(restored.astype(int) - face).mean() < 12  # a restorer, not noise


def test_quantize_a_codeformer_style_file_registers_all_three_precisions(
    tmp_path: Path, user_model_dir: Path, calib_dir: Path
) -> None:
    source = tmp_path / "My CodeFormer.onnx"
    onnx.save(_wrap_minus_one_to_one(weight_input=True), str(source))
    status, out, err = run_cli("quantize", source, "--calib", calib_dir, "--faces", "3")
    assert status == ExitStatus.OK, err
    assert "3 calibration faces" in out
    store = ModelStore.default()
    assert sorted(store.precisions("my-codeformer")) == ["fp16", "fp32", "int8"]
    for precision in ("fp32", "int8"):
        spec = store.get("my-codeformer", precision)
        assert (spec.arch, spec.weight_input) == ("codeformer", "weight")
    face = aligned_test_crops(store, 512, 1, "cpu")
    int8 = load_restorer(store, "my-codeformer", "int8", "cpu", 1)
    # The fidelity input survived quantization: fidelity 1 gives the input back.
    assert np.abs(int8.restore(face, fidelity=1.0).astype(int) - face).max() <= 2
    assert np.abs(int8.restore(face, fidelity=0.0).astype(int) - face).max() > 10


def test_padding_narrow_convs_keeps_the_function_and_leaves_float_nodes_alone(astronaut: np.ndarray) -> None:
    import onnxruntime as ort

    model = onnx.load(str(SHIPPED_FP32))
    keep = float_nodes(model.graph)
    narrow = [n.name for n in model.graph.node if n.op_type == "Conv" and n.name not in keep
              and next(i for i in model.graph.initializer if i.name == n.input[1]).dims[0] < 16]
    assert narrow == ["/tail/Conv"]
    assert pad_narrow_convs(model, keep=keep) == 1
    assert pad_narrow_convs(model, keep=keep) == 0, "already wide"
    onnx.checker.check_model(model)
    face = resize_aligned(astronaut[30:330, 80:380], 512)
    x = (face.astype(np.float32) / 255).transpose(2, 0, 1)[None]
    plain = ort.InferenceSession(str(SHIPPED_FP32), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    padded_session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    padded = padded_session.run(None, {"input": x})[0]
    assert padded.shape == plain.shape == x.shape
    assert np.abs(padded - plain).max() < 1e-5


def test_float_nodes_are_the_readers_of_the_input_and_the_writers_of_the_output() -> None:
    graph = onnx.load(str(SHIPPED_FP32)).graph
    names = float_nodes(graph)
    ops = {n.name: n.op_type for n in graph.node}
    assert sorted(ops[n] for n in names) == ["Add", "Conv"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["assets/models/restora-lite-int8.onnx"], "is the INT8 variant of restora-lite"),
        (["mtcnn"], "is a detector model"),
        (["no-such-model"], "no-such-model"),
    ],
)
def test_quantize_refuses_what_it_cannot_quantize(
    calib_dir: Path, user_model_dir: Path, args: list[str], message: str
) -> None:
    root = Path(__file__).resolve().parents[1]
    argv = [str(root / a) if a.endswith(".onnx") else a for a in args]
    status, _, err = run_cli("quantize", *argv, "--calib", calib_dir)
    assert status == ExitStatus.USAGE
    assert message in err
    assert not (user_model_dir / "user.json").exists()


def test_quantize_refuses_an_already_quantized_unlisted_file(
    tmp_path: Path, calib_dir: Path, user_model_dir: Path
) -> None:
    copy = tmp_path / "renamed.onnx"
    model = onnx.load(str(SHIPPED_FP32.with_name("restora-lite-int8.onnx")))
    model.doc_string = "a user's copy"  # another sha256: no longer the listed file
    onnx.save(model, str(copy))
    status, _, err = run_cli("quantize", copy, "--calib", calib_dir, "--out", tmp_path / "x.onnx")
    assert status == ExitStatus.USAGE
    assert "already quantized" in err
    assert not (tmp_path / "x.onnx").exists()


def test_quantize_calibration_folder_errors(tmp_path: Path, user_model_dir: Path) -> None:
    status, _, err = run_cli("quantize", "restora-lite", "--calib", tmp_path / "missing")
    assert status == ExitStatus.USAGE and "not a folder" in err
    empty = tmp_path / "empty"
    empty.mkdir()
    status, _, err = run_cli("quantize", "restora-lite", "--calib", empty)
    assert status == ExitStatus.USAGE and "no images" in err
    (empty / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    status, _, err = run_cli("quantize", "restora-lite", "--calib", empty)
    assert status == ExitStatus.USAGE and "none could be read of its 1 images" in err
    assert not (user_model_dir / "user.json").exists()


def test_quantize_out_may_not_be_the_source(tmp_path: Path, calib_dir: Path) -> None:
    source = tmp_path / "model-int8.onnx"
    onnx.save(_wrap_minus_one_to_one(weight_input=False), str(source))
    before = sha256_file(source)
    status, _, err = run_cli("quantize", source, "--calib", calib_dir, "--out", source)
    assert status == ExitStatus.USAGE and "is the model being quantized" in err
    assert sha256_file(source) == before


def test_quantize_without_the_quantization_tools_says_so(
    monkeypatch: pytest.MonkeyPatch, calib_dir: Path, user_model_dir: Path
) -> None:
    # The packaged app leaves onnx and onnxruntime.quantization out (build.spec): a None entry in
    # sys.modules makes their import fail the same way.
    monkeypatch.setitem(sys.modules, "onnxruntime.quantization", None)
    status, _, err = run_cli("quantize", "restora-lite", "--calib", calib_dir)
    assert status == ExitStatus.USAGE
    assert "needs the onnx package and onnxruntime's quantization tools" in err
    assert "pip install" in err


def test_quantize_out_in_a_folder_that_cannot_be_made(tmp_path: Path, calib_dir: Path) -> None:
    (tmp_path / "a-file").write_text("not a folder")
    status, _, err = run_cli("quantize", "restora-lite", "--calib", calib_dir,
                             "--out", tmp_path / "a-file" / "x-int8.onnx")
    assert status == ExitStatus.USAGE
    assert "cannot write" in err and "a-file" in err


def test_quantize_on_whole_photos_finds_and_aligns_their_faces(
    tmp_path: Path, user_model_dir: Path, astronaut: np.ndarray
) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    write_jpeg(photos / "astronaut.jpg", astronaut, quality=80)
    PILImage.fromarray(astronaut).resize((384, 384)).save(photos / "astronaut small.png")
    PILImage.fromarray(np.full((300, 400, 3), 128, np.uint8)).save(photos / "no face.png")
    status, out, err = run_cli("quantize", "restora-lite", "--calib", photos, "--photos",
                               "--out", tmp_path / "v" / "lite-int8.onnx", "--json", tmp_path / "r.json")
    assert status == ExitStatus.OK, err
    assert "2 calibration faces at 512 px (1 file skipped)" in out
    assert "no face.png: no face found" in out
    assert _report(tmp_path / "r.json")["int8"]["psnr_db"] > 40
    # The crops are the aligned face, not the resized photo: the astronaut's crop matches the one the
    # pipeline aligns from the original pixels.
    store = ModelStore.default()
    found = load_calibration_faces(photos, 512, 4, face_finder(store, "ffhq", "cpu", 1))
    aligned = aligned_test_crops(store, 512, 1, "cpu")[0].astype(int)
    assert min(np.abs(crop.astype(int) - aligned).mean() for crop in found.crops) < 6
    whole = resize_aligned(astronaut, 512).astype(int)
    assert np.abs(whole - aligned).mean() > 30
    empty = tmp_path / "faceless"
    empty.mkdir()
    PILImage.fromarray(np.full((300, 400, 3), 128, np.uint8)).save(empty / "grey.png")
    status, _, err = run_cli("quantize", "restora-lite", "--calib", empty, "--photos")
    assert status == ExitStatus.USAGE and "no face was found in its 1 images" in err
