"""Crash safety: a real `python -m engine enhance` killed with SIGKILL and SIGINT, full disks, stale temps.

Each kill lands at a seeded random moment after the run has started restoring. Afterwards every
output present must be a complete, decodable image; after SIGINT no temporary file may remain and
the exit status is 130; `--skip-existing` must then finish with exactly the outputs of an
uninterrupted run.
"""

from __future__ import annotations

import errno
import io
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image as PILImage

import engine.imageio as imageio
from engine.batch import remove_stale_parts
from engine.cli import Environment, ExitStatus, main

REPO = Path(__file__).resolve().parents[1]
PHOTOS = 12
SEED = 6  # the number: the kill moments are random but the same on every run

pytestmark = pytest.mark.skipif(os.name != "posix", reason="POSIX signals and /proc")


def run_cli(*argv: str | Path) -> tuple[ExitStatus, str]:
    err = io.StringIO()
    status = main([str(a) for a in argv], Environment(stdout=io.StringIO(), stderr=err))
    return status, err.getvalue()


def make_photos(folder: Path, astronaut: np.ndarray) -> None:
    """Twelve small, distinct photos with a face (JPEG and PNG)."""
    folder.mkdir()
    small = astronaut[::2, ::2]
    rng = np.random.default_rng(SEED)
    for index in range(PHOTOS):
        shifted = np.roll(small, int(rng.integers(-20, 20)), axis=1)
        noisy = np.clip(shifted.astype(np.int16) + rng.normal(0, 4, shifted.shape), 0, 255).astype(np.uint8)
        name = f"photo_{index:02d}.{'png' if index % 4 == 3 else 'jpg'}"
        PILImage.fromarray(noisy).save(folder / name)


def outputs_of(folder: Path) -> dict[str, Path]:
    return {p.name: p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")}


def temporaries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".restora-") or p.suffix == ".part")


def assert_complete_image(path: Path) -> None:
    with PILImage.open(path) as image:
        image.load()  # raises on a truncated file
        assert image.size == (256, 256), path


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory, astronaut: np.ndarray) -> Path:
    folder = tmp_path_factory.mktemp("crash") / "in"
    make_photos(folder, astronaut)
    return folder


@pytest.fixture(scope="module")
def reference(photos: Path) -> tuple[dict[str, bytes], float]:
    """The outputs of one uninterrupted run (name -> decoded pixels) and how long it took."""
    out = photos.parent / "reference"
    started = time.perf_counter()
    status, err = run_cli("enhance", photos, "-o", out, "--quiet", "--workers", "2")
    seconds = time.perf_counter() - started
    assert status == ExitStatus.OK, err
    found = outputs_of(out)
    assert len(found) == PHOTOS
    pixels = {name: np.asarray(PILImage.open(path).convert("RGB")).tobytes() for name, path in found.items()}
    return pixels, seconds


def start_and_kill(photos: Path, out: Path, sig: signal.Signals, delay: float,
                   *extra: str) -> tuple[int, str]:
    """Start a real restora process, wait until it reports its first photo, then signal it."""
    process = subprocess.Popen(
        [sys.executable, "-m", "engine", "enhance", str(photos), "-o", str(out), "--workers", "2", *extra],
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    lines: list[str] = []
    started = threading.Event()

    def read() -> None:
        assert process.stderr is not None
        for line in process.stderr:
            lines.append(line)
            if line.startswith("[1/"):
                started.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert started.wait(90), "restora never reported its first photo:\n" + "".join(lines)
        time.sleep(delay)
        if process.poll() is not None:  # it finished first: nothing was interrupted
            reader.join(10)
            return process.returncode, "".join(lines) + "(finished before the signal)\n"
        process.send_signal(sig)
        code = process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    reader.join(10)
    return code, "".join(lines)


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT], ids=["SIGKILL", "SIGINT"])
def test_killed_run_leaves_only_complete_outputs_and_resumes(tmp_path: Path, photos: Path,
                                                             reference: tuple[dict[str, bytes], float],
                                                             sig: signal.Signals) -> None:
    """Kill a run, kill its --skip-existing continuation too, then let a third run finish the job."""
    expected, run_seconds = reference
    rng = random.Random(f"{SEED}-{sig.name}")
    out = tmp_path / "out"
    done_before: dict[str, int] = {}
    interrupted = 0
    for attempt in range(2):
        left = PHOTOS - len(done_before)
        # Anywhere from the first reported photo to well before this run would end.
        delay = rng.uniform(0.0, 0.6) * run_seconds * left / PHOTOS
        extra = ("--skip-existing",) if attempt else ()
        code, err = start_and_kill(photos, out, sig, delay, *extra)
        if err.endswith("(finished before the signal)\n"):
            assert code == ExitStatus.OK and set(outputs_of(out)) == set(expected), err
        elif sig == signal.SIGINT:
            assert code == ExitStatus.INTERRUPTED, f"exit {code} after SIGINT at +{delay:.2f} s:\n{err}"
            assert "Traceback" not in err and "--skip-existing" in err
            assert temporaries(out) == [], f"SIGINT at +{delay:.2f} s left temporary files"
        else:
            assert code == -signal.SIGKILL
        present = outputs_of(out)
        interrupted += len(present) < PHOTOS
        assert set(present) <= set(expected)
        for name, path in present.items():
            assert_complete_image(path)
            if name in done_before:
                assert path.stat().st_mtime_ns == done_before[name], f"{name} was finished and must be skipped"
        print(f"\n{sig.name} at +{delay:.2f} s after the first reported photo: {len(present)}/{PHOTOS} "
              f"outputs complete, {len(temporaries(out))} temporary files left")
        done_before = {name: path.stat().st_mtime_ns for name, path in present.items()}

    assert interrupted, "no signal landed before the end of a run: the moments need adjusting"
    report = tmp_path / "resume.json"
    status, resume_err = run_cli("enhance", photos, "-o", out, "--skip-existing", "--quiet",
                                 "--workers", "2", "--json", report)
    assert status == ExitStatus.OK, resume_err
    assert temporaries(out) == [], "stale temporary files of the killed runs are cleaned up"
    finished = outputs_of(out)
    assert set(finished) == set(expected)
    for name, path in finished.items():
        assert_complete_image(path)
        if name in done_before:
            assert path.stat().st_mtime_ns == done_before[name], f"{name} was finished and must be skipped"
        decoded = np.asarray(PILImage.open(path).convert("RGB")).astype(int)
        wanted = np.frombuffer(expected[name], np.uint8).reshape(decoded.shape)
        assert np.abs(decoded - wanted).mean() < 1.0, f"{name} differs from an uninterrupted run"
    items = json.loads(report.read_text())["items"]
    assert sum(i["status"] == "skipped" for i in items) == len(done_before)


def test_stale_temporaries_of_dead_processes_are_removed_only(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    dead = 4_000_000  # above the kernel's default pid_max (4194304 is the ceiling): find a free one
    while True:
        try:
            os.kill(dead, 0)
        except ProcessLookupError:
            break
        except PermissionError:
            pass
        dead += 1
    stale = out / f".restora-{dead}-x1y2.part"
    stale.write_bytes(b"half a photo")
    live = out / f".restora-{os.getppid()}-abcd.part"  # a run in progress elsewhere: not ours to take
    live.write_bytes(b"being written")
    mine = out / f".restora-{os.getpid()}-abcd.part"
    mine.write_bytes(b"this process")
    stranger = out / ".restora-notes.part"  # not an atomic-write temporary of ours
    stranger.write_bytes(b"x")
    photo = out / "photo.jpg"
    photo.write_bytes(b"not touched")
    assert remove_stale_parts([out, out]) == 1
    assert not stale.exists() and live.exists() and mine.exists() and stranger.exists() and photo.exists()


def test_atomic_writes_name_their_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[str] = []
    real_replace = os.replace

    def spy(source: str, target: str) -> None:
        seen.append(Path(source).name)
        real_replace(source, target)

    monkeypatch.setattr(imageio.os, "replace", spy)
    imageio.atomic_write_bytes(tmp_path / "a.bin", b"abc")
    [name] = seen
    assert name.startswith(f".restora-{os.getpid()}-") and name.endswith(".part")


# -- full disk and unwritable folders -------------------------------------------------------------


class _DiskFull:
    """Stands in for tempfile in engine.imageio: the Nth photo's write runs out of space halfway."""

    def __init__(self, fail_on: int) -> None:
        import tempfile

        self._tempfile = tempfile
        self.fail_on = fail_on
        self.calls = 0
        self.lock = threading.Lock()

    def NamedTemporaryFile(self, *args: object, **kwargs: object):  # type: ignore[no-untyped-def]
        handle = self._tempfile.NamedTemporaryFile(*args, **kwargs)  # type: ignore[call-overload]
        with self.lock:
            self.calls += 1
            failing = self.calls == self.fail_on
        if failing:
            real_write = handle.write

            def write(data: bytes) -> int:
                real_write(data[: len(data) // 2])
                handle.flush()
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

            handle.write = write
        return handle


def test_full_disk_fails_one_photo_cleanly_and_the_batch_goes_on(tmp_path: Path, photos: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    disk = _DiskFull(fail_on=2)
    monkeypatch.setattr(imageio, "tempfile", disk)
    inputs = sorted(photos.iterdir())[:4]
    out = tmp_path / "out"
    status, err = run_cli("enhance", *inputs, "-o", out, "--json", tmp_path / "r.json", "--workers", "1")
    assert status == ExitStatus.ERROR
    assert "Traceback" not in err
    items = json.loads((tmp_path / "r.json").read_text())["items"]
    failed = [i for i in items if i["status"] == "error"]
    assert len(failed) == 1 and sum(i["status"] == "ok" for i in items) == 3
    message = failed[0]["error"]
    assert "No space left on device" in message and "cannot write" in message and "\n" not in message
    assert Path(failed[0]["input"]).stem in message, "the message names the file"
    assert not (out / Path(failed[0]["input"]).name).exists(), "no partial output"
    assert temporaries(out) == [], "no temporary file left behind"
    for item in items:
        if item["status"] == "ok":
            assert_complete_image(Path(item["output"]))


def test_full_disk_in_a_real_small_filesystem(tmp_path: Path, photos: Path) -> None:
    """A 64 KiB tmpfs where the system allows mounting one (root outside a locked-down container)."""
    mount = tmp_path / "tiny"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)],
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip() or done.returncode}")
    try:
        inputs = sorted(photos.iterdir())[:6]
        status, err = run_cli("enhance", *inputs, "-o", mount, "--json", tmp_path / "r.json", "--format", "png")
        items = json.loads((tmp_path / "r.json").read_text())["items"]
        assert status == ExitStatus.ERROR and "Traceback" not in err
        failed = [i for i in items if i["status"] == "error"]
        assert failed and all("No space left on device" in i["error"] for i in failed)
        assert temporaries(mount) == []
        for path in outputs_of(mount).values():
            assert_complete_image(path)
    finally:
        subprocess.run(["umount", str(mount)], check=False)


def test_unwritable_output_folder_is_a_usage_error_before_any_work(tmp_path: Path, photos: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    import engine.batch as batch

    loaded: list[str] = []
    monkeypatch.setattr(batch, "load_image", lambda *a, **k: loaded.append(str(a[0])))

    class ReadOnly:
        @staticmethod
        def TemporaryFile(*args: object, **kwargs: object) -> None:
            raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    out = tmp_path / "out"
    with monkeypatch.context() as patch:
        patch.setattr(batch, "tempfile", ReadOnly)
        status, err = run_cli("enhance", photos, "-o", out)
    assert status == ExitStatus.USAGE
    assert f"cannot write to the output folder {out}: Read-only file system" in err and "Traceback" not in err
    assert loaded == [] and not outputs_of(out)

    # Real cases: a folder under /proc cannot be created, and a path through a file is no folder.
    file = tmp_path / "a-file"
    file.write_text("x")
    for target in (Path("/proc/restora-test-out"), file / "out"):
        if target.parts[1] == "proc" and not Path("/proc/self").exists():
            continue
        status, err = run_cli("enhance", photos, "-o", target)
        assert status == ExitStatus.USAGE, err
        assert f"cannot write to the output folder {target}" in err and "Traceback" not in err
    assert loaded == []
