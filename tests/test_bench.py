"""``restora bench``: the summary contract, the generated photos, and the exactness of P-Net strips."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import numpy as np
import pytest

import engine.detectors.mtcnn as mtcnn_module
from engine.bench import FolderRun, make_photo, median_run, peak_rss_mb, photo_size, reset_peak_rss
from engine.cli import Environment, main
from engine.models import ModelStore
from engine.pipeline import load_detector

SUMMARY_KEYS = {"machine", "per_face_ms", "int8_speedup", "throughput_ratio", "photos_per_s_1mp",
                "detect_ms_1mp", "peak_rss_mb_48mp"}


@pytest.fixture(scope="module")
def mtcnn():  # type: ignore[no-untyped-def]
    store = ModelStore.default()
    return load_detector(store, store.get("mtcnn"), "cpu")


def test_bench_smoke_writes_the_summary_contract(tmp_path: Path) -> None:
    # --smoke runs every stage once on small photos (the 48 MP figure comes from a 12 MP photo):
    # it checks the plumbing and the JSON contract, never the speed.
    report = tmp_path / "bench.json"
    stdout, stderr = io.StringIO(), io.StringIO()
    status = main(["bench", "--smoke", "--json", str(report)], Environment(stdout=stdout, stderr=stderr))
    assert status == 0, stderr.getvalue()
    result = json.loads(report.read_text())
    summary = result["summary"]
    assert set(summary) == SUMMARY_KEYS
    lite = next(row for row in result["restorers"] if row["key"] == "restora-lite/int8")
    assert set(lite["by_crop_size"]) == {"256", "384"}
    assert all(timing["median_ms"] > 0 for timing in lite["by_crop_size"].values())
    assert lite["coarse"]["size"] == 256 and lite["coarse"]["median_ms"] > 0
    # The group photos are timed but kept out of the folder figure, which is the four sets.
    folders = result["folders"]
    assert folders["outside_ratio"] == ["1mp-12faces"] and folders["sets"]["1mp-12faces"]["real"]["faces"] == 12
    assert folders["folder"]["photos"] == sum(folders["sets"][n]["real"]["photos"] for n in ("1mp-1face", "1mp-5faces"))
    assert summary["machine"]["cpu"] and summary["machine"]["cores"] >= 1
    assert isinstance(summary["machine"]["flags"], list)
    assert {"restora-lite/fp32", "restora-lite/int8"} <= set(summary["per_face_ms"])
    assert all(ms > 0 for ms in summary["per_face_ms"].values())
    for key in ("int8_speedup", "throughput_ratio", "photos_per_s_1mp", "detect_ms_1mp", "peak_rss_mb_48mp"):
        assert summary[key] > 0, key
    printed = stdout.getvalue()
    assert "restora-lite/int8" in printed and "summary: " in printed and "smaller crops, batch 1: 256 px" in printed
    assert "1mp-12faces*" in printed


def test_generated_photos_hold_the_faces_they_promise(mtcnn) -> None:  # type: ignore[no-untyped-def]
    photo = make_photo(1.0, 5)
    assert photo.shape[:2][::-1] == photo_size(1.0)
    assert len(mtcnn.detect(photo)) == 5
    assert len(mtcnn.detect(make_photo(0.3, 1))) == 1


def test_pnet_strips_give_exactly_the_whole_level(mtcnn, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(3)
    for shape in ((301, 457, 3), (640, 203, 3)):  # odd and even lengths: the last strip's tail
        level = rng.integers(0, 256, shape, dtype=np.uint8)
        monkeypatch.setattr(mtcnn_module, "_PNET_STRIP_PIXELS", 1 << 40)
        whole = mtcnn._run_pnet(level)
        monkeypatch.setattr(mtcnn_module, "_PNET_STRIP_PIXELS", 60 * shape[1])  # about 10 strips
        strips = mtcnn._run_pnet(level)
        for a, b in zip(whole, strips, strict=True):
            assert a.shape == b.shape
            np.testing.assert_allclose(a, b, atol=1e-5)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="VmHWM and clear_refs are Linux /proc files")
def test_peak_rss_counter_restarts() -> None:
    block = np.ones((64, 1024, 1024), np.uint8)  # 64 MB resident
    high = peak_rss_mb()
    del block
    assert reset_peak_rss()
    low = peak_rss_mb()
    assert high is not None and low is not None and low < high - 32


def test_folder_figure_is_the_median_pass_with_the_highest_peak() -> None:
    passes = [FolderRun(8, 8, 3.0, 400.0), FolderRun(8, 8, 1.0, 650.0), FolderRun(8, 8, 2.0, None)]
    chosen = median_run(passes)
    assert chosen.seconds == 2.0 and chosen.peak_rss_mb == 650.0
    assert median_run(passes[:2]).seconds == 1.0  # an even count takes the faster middle pass
