"""The `restora` command line, driven in-process through main(argv, env), on real files."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image as PILImage

from engine.cli import Environment, ExitStatus, main
from tests.conftest import ASTRONAUT_FACE_BOX
from tests.helpers import far_from_face_mask, jpeg_bytes, srgb_icc, write_jpeg


def run_cli(*argv: str | Path) -> tuple[ExitStatus, str, str]:
    out, err = io.StringIO(), io.StringIO()
    status = main([str(a) for a in argv], Environment(stdout=out, stderr=err))
    return status, out.getvalue(), err.getvalue()


@pytest.fixture()
def photo(tmp_path: Path, astronaut: np.ndarray) -> Path:
    folder = tmp_path / "in"
    folder.mkdir()
    return write_jpeg(folder / "astronaut.jpg", astronaut, icc=srgb_icc())


def test_enhance_writes_a_restored_photo_with_metadata_and_a_report(tmp_path: Path, photo: Path,
                                                                     astronaut: np.ndarray) -> None:
    before = photo.read_bytes()
    status, _, err = run_cli("enhance", photo, "-o", tmp_path / "out", "--json", tmp_path / "r.json")
    assert status == ExitStatus.OK, err
    assert photo.read_bytes() == before, "the original is never modified"
    output = tmp_path / "out" / "astronaut.jpg"
    with PILImage.open(output) as image:
        assert image.format == "JPEG"
        assert image.info.get("icc_profile") == srgb_icc()
        assert image.getexif().get(0x010F) == "RestoraTestCam"
        pixels = np.asarray(image.convert("RGB"))
    with PILImage.open(photo) as original:
        source = np.asarray(original.convert("RGB"))
    x1, y1, x2, y2 = (int(v) for v in ASTRONAUT_FACE_BOX)
    assert np.abs(pixels[y1:y2, x1:x2].astype(int) - source[y1:y2, x1:x2]).mean() > 1.0
    far = far_from_face_mask(source.shape, ASTRONAUT_FACE_BOX, 0.6)
    # Far from the face only a JPEG re-encode separates output from input.
    assert np.abs(pixels[far].astype(int) - source[far]).mean() < 1.5
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["version"] == 1 and report["model"] == "restora-lite" and report["detector"] == "mtcnn"
    assert report["precision"] in ("int8", "fp32", "fp16") and report["provider"] == "cpu"
    [item] = report["items"]
    assert item["status"] == "ok" and item["faces"] == 1 and item["output"] == str(output)
    assert item["seconds"] > 0


def test_rotated_exif_photo_comes_out_upright(tmp_path: Path, astronaut: np.ndarray) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    # Stored rotated 90° clockwise with Orientation 8 ("rotate 90 CW to view")... the viewer sees it upright.
    stored = np.ascontiguousarray(np.rot90(astronaut, k=-1))
    write_jpeg(folder / "rotated.jpg", stored, orientation=8)
    status, _, err = run_cli("enhance", folder, "-o", tmp_path / "out", "--quiet")
    assert status == ExitStatus.OK, err
    with PILImage.open(tmp_path / "out" / "rotated.jpg") as image:
        assert image.getexif().get(0x0112, 1) == 1
        pixels = np.asarray(image.convert("RGB"))
    assert pixels.shape == astronaut.shape
    assert np.abs(pixels.astype(int) - astronaut).mean() < 6, "upright: matches the astronaut as viewed"


def test_bad_files_are_reported_and_the_batch_goes_on(tmp_path: Path, astronaut: np.ndarray) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    write_jpeg(folder / "a_good.jpg", astronaut)
    (folder / "b_truncated.jpg").write_bytes(jpeg_bytes(astronaut)[:6000])
    (folder / "c_empty.jpg").write_bytes(b"")
    (folder / "d_text.jpg").write_text("this is not a photo\n")
    PILImage.fromarray(astronaut[::2, ::2]).save(folder / "e_good.png")
    status, _, err = run_cli("enhance", folder, "-o", tmp_path / "out", "--json", tmp_path / "r.json")
    assert status == ExitStatus.ERROR
    assert "Traceback" not in err
    items = {Path(i["input"]).name: i for i in json.loads((tmp_path / "r.json").read_text())["items"]}
    assert items["a_good.jpg"]["status"] == "ok" and items["e_good.png"]["status"] == "ok"
    assert (tmp_path / "out" / "a_good.jpg").is_file() and (tmp_path / "out" / "e_good.png").is_file()
    assert "truncated" in items["b_truncated.jpg"]["error"]
    assert "empty" in items["c_empty.jpg"]["error"]
    assert "not an image" in items["d_text.jpg"]["error"]
    for name in ("b_truncated.jpg", "c_empty.jpg", "d_text.jpg"):
        assert items[name]["status"] == "error" and items[name]["output"] is None
        assert not (tmp_path / "out" / name).exists()
    assert not list((tmp_path / "out").glob("*.part")) and not list((tmp_path / "out").glob(".restora-*"))


class SlowLog(io.StringIO):
    """A log that takes its time over each write (a pipe to a busy terminal) and notes overlaps."""

    def __init__(self) -> None:
        super().__init__()
        self.writing = 0
        self.overlapped = False

    def write(self, text: str) -> int:
        self.writing += 1
        self.overlapped |= self.writing > 1
        time.sleep(0.01)
        written = super().write(text)
        self.writing -= 1
        return written


def test_progress_lines_from_parallel_workers_stay_whole_and_in_order(tmp_path: Path,
                                                                      astronaut: np.ndarray) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(8):
        write_jpeg(folder / f"photo_{i}.jpg", astronaut[::2, ::2])
    log = SlowLog()
    status = main(["enhance", str(folder), "-o", str(tmp_path / "out"), "--workers", "4"],
                  Environment(stdout=io.StringIO(), stderr=log))
    assert status == ExitStatus.OK, log.getvalue()
    assert not log.overlapped, "two workers wrote to the log at once"
    lines = log.getvalue().splitlines()
    # One whole line per photo, counting up; then the summary.
    assert [line.split("]")[0] for line in lines[:8]] == [f"[{i}/8" for i in range(1, 9)], lines
    assert all(re.fullmatch(r"\[\d/8\] .*photo_\d\.jpg: 1 face, \d+\.\d\d s", line) for line in lines[:8]), lines
    assert lines[8].startswith("8 restored, 0 skipped, 0 failed")


def test_skip_existing_resumes_without_touching_finished_outputs(tmp_path: Path, photo: Path) -> None:
    out = tmp_path / "out"
    assert run_cli("enhance", photo, "-o", out, "--quiet")[0] == ExitStatus.OK
    first = (out / "astronaut.jpg").stat()
    status, _, _ = run_cli("enhance", photo, "-o", out, "--skip-existing", "--json", tmp_path / "r.json")
    assert status == ExitStatus.OK
    assert (out / "astronaut.jpg").stat().st_mtime_ns == first.st_mtime_ns
    [item] = json.loads((tmp_path / "r.json").read_text())["items"]
    assert item["status"] == "skipped"


def test_photo_without_faces_is_still_written(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    gradient = np.dstack([np.tile(np.linspace(0, 255, 320, dtype=np.uint8), (200, 1))] * 3)
    PILImage.fromarray(gradient).save(folder / "sky.png")
    status, _, _ = run_cli("enhance", folder, "-o", tmp_path / "out", "--json", tmp_path / "r.json", "--quiet")
    assert status == ExitStatus.OK
    [item] = json.loads((tmp_path / "r.json").read_text())["items"]
    assert item["faces"] == 0 and item["status"] == "ok"
    assert np.array_equal(np.asarray(PILImage.open(tmp_path / "out" / "sky.png")), gradient)


def test_recursive_mirrors_the_tree_with_suffix_and_format(tmp_path: Path, astronaut: np.ndarray) -> None:
    root = tmp_path / "albums"
    (root / "1990" / "summer").mkdir(parents=True)
    small = np.ascontiguousarray(astronaut[::2, ::2])
    write_jpeg(root / "top.jpg", small)
    write_jpeg(root / "1990" / "summer" / "beach.JPG", small)
    status, _, err = run_cli("enhance", root, "-o", tmp_path / "out", "--recursive", "--suffix", "_restored",
                             "--format", "png", "--quiet")
    assert status == ExitStatus.OK, err
    assert (tmp_path / "out" / "top_restored.png").is_file()
    assert (tmp_path / "out" / "1990" / "summer" / "beach_restored.png").is_file()
    status, _, _ = run_cli("enhance", root, "-o", tmp_path / "flat", "--quiet")
    assert status == ExitStatus.OK
    assert sorted(p.name for p in (tmp_path / "flat").rglob("*") if p.is_file()) == ["top.jpg"]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["enhance", "{photo}", "-o", "{out}", "--model", "no-such-model"], "no-such-model"),
        (["enhance", "{missing}", "-o", "{out}"], "no such file"),
        (["enhance", "{photo}", "-o", "{out}", "--fidelity", "2"], "between 0 and 1"),
        (["enhance", "{photo}", "-o", "{out}", "--precision", "int4"], "invalid choice"),
        (["enhance", "{photo}", "-o", "{file_as_dir}"], "output folder"),
        (["enhance", "{photo}", "-o", "{photo_dir}"], "would overwrite"),
        (["enhance", "{photo}"], "required"),
        (["frobnicate"], "invalid choice"),
    ],
)
def test_usage_errors_exit_2_before_any_work(tmp_path: Path, photo: Path, argv: list[str], message: str) -> None:
    file_as_dir = tmp_path / "a-file"
    file_as_dir.write_text("x")
    values = {"photo": photo, "out": tmp_path / "out", "missing": tmp_path / "missing.jpg",
              "file_as_dir": file_as_dir, "photo_dir": photo.parent}
    status, _, err = run_cli(*[a.format(**values) for a in argv])
    assert status == ExitStatus.USAGE
    assert message in err
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_detect_prints_json_faces(photo: Path) -> None:
    status, out, _ = run_cli("detect", photo, "--json")
    assert status == ExitStatus.OK
    [image] = json.loads(out)["images"]
    [face] = image["faces"]
    assert len(face["landmarks"]) == 5 and 0 < face["score"] <= 1
    x1, y1, x2, y2 = face["box"]
    assert 150 < x1 < 215 and 240 < x2 < 300 and 30 < y1 < 100 and 150 < y2 < 210


def test_a_closed_pipe_ends_quietly(photo: Path) -> None:
    class ClosedPipe(io.StringIO):  # `restora detect --json | head -1`: the reader has gone
        def write(self, text: str) -> int:
            raise BrokenPipeError(32, "Broken pipe")

    err = io.StringIO()
    status = main(["detect", str(photo), "--json"], Environment(stdout=ClosedPipe(), stderr=err))
    assert status == ExitStatus.ERROR and err.getvalue() == ""


def test_models_list_shows_the_shipped_models_installed() -> None:
    status, out, _ = run_cli("models", "list")
    assert status == ExitStatus.OK
    lines = {line.split()[0]: line for line in out.splitlines()[1:]}
    assert "verified" in lines["restora-lite"] and "verified" in lines["mtcnn"]
    assert "yunet-s" in lines  # public detectors are listed even when not installed


def test_models_info_shows_the_crop_sizes_small_faces_get() -> None:
    status, out, _ = run_cli("models", "info", "restora-lite")
    assert status == ExitStatus.OK
    assert "size 512 (small faces: 256, 384)" in out
    status, out, _ = run_cli("models", "info", "gfpgan-1.4")
    assert status == ExitStatus.OK and "size 512;" in out


def test_models_verify_checks_present_files() -> None:
    status, out, _ = run_cli("models", "verify")
    assert status == ExitStatus.OK
    assert "restora-lite/int8: verified" in out and "mtcnn/fp32: verified" in out


def test_python_dash_m_engine_runs_the_cli(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "engine", "enhance", "--help"], capture_output=True, text=True,
                          timeout=60, env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    assert done.returncode == 0
    assert "--skip-existing" in done.stdout


def test_real_old_photos_get_faces_detected(shared_data: Path) -> None:
    """Detection over ../shared/data/real: report how many photos and faces were found."""
    real = shared_data / "real"
    images = sorted(p for p in real.rglob("*") if p.suffix.lower() in {".jpg", ".jpeg", ".png", ".webp", ".bmp"})
    if not images:
        pytest.skip("../shared/data/real has no images")
    status, out, err = run_cli("detect", *images, "--json")
    assert status == ExitStatus.OK, err
    results = json.loads(out)["images"]
    with_faces = sum(1 for r in results if r["faces"])
    faces = sum(len(r["faces"]) for r in results)
    print(f"\n../shared/data/real: {with_faces}/{len(results)} photos with faces, {faces} faces found (mtcnn)")
    assert with_faces >= 0.8 * len(results)
