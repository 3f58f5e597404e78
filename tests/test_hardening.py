"""Never lose a photo (issue 6): hostile inputs, sacred originals, bad models, safe sources, fuzzing.

Everything goes through the `restora` command line in-process (``main(argv, env)``) or the batch
API, on files each test builds in tmp_path. Image-loader details (every format, every message)
are tested in test_imageio.py; here the question is what a whole batch does with them.
"""

from __future__ import annotations

import ast
import builtins
import errno
import hashlib
import io
import json
import os
import re
import struct
import time
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import png
import pytest
from PIL import Image as PILImage

import engine.batch as batch
import engine.cli as cli
import engine.imageio as imageio
from engine.cli import Environment, ExitStatus, main
from engine.errors import ImageError
from engine.pipeline import Enhancer

REPO = Path(__file__).resolve().parents[1]


def run_cli(*argv: str | Path, env: Environment | None = None) -> tuple[ExitStatus, str, str]:
    out, err = io.StringIO(), io.StringIO()
    environment = env or Environment()
    environment.stdout, environment.stderr = out, err
    status = main([str(a) for a in argv], environment)
    return status, out.getvalue(), err.getvalue()


def sha256_tree(root: Path) -> dict[str, str]:
    """sha256 of every regular file under root (links not followed)."""
    hashes: dict[str, str] = {}
    for folder, _, files in os.walk(root):
        for name in files:
            path = Path(folder) / name
            if path.is_file() and not path.is_symlink():
                hashes[str(path.relative_to(root))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return hashes


def encoded(pixels: np.ndarray, fmt: str, **options: Any) -> bytes:
    buffer = io.BytesIO()
    PILImage.fromarray(pixels).save(buffer, fmt, **options)
    return buffer.getvalue()


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def bomb_png() -> bytes:
    """A valid PNG header declaring 60000 x 60000 RGB: 10.8 GB if anyone decoded it."""
    header = struct.pack(">IIBBBBB", 60000, 60000, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header)
            + png_chunk(b"IDAT", zlib.compress(b"\x00" * 4096)) + png_chunk(b"IEND", b""))


# name -> ("ok", check of the output) or ("error", words the one-line message must hold)
Expectation = tuple[str, Any]


def build_hostile_folder(root: Path, face: np.ndarray) -> dict[str, Expectation]:
    """Every kind of odd file the issue lists (and a few more), next to each other in one folder."""
    root.mkdir()
    height, width = face.shape[:2]
    expect: dict[str, Expectation] = {}

    def output_is(size: tuple[int, int], check: Callable[[Path], None] | None = None) -> Callable[[Path], None]:
        def verify(path: Path) -> None:
            with PILImage.open(path) as image:
                image.load()  # complete and decodable
                assert image.size == size, f"{path.name}: {image.size} != {size}"
            if check is not None:
                check(path)
        return verify

    (root / "empty.jpg").write_bytes(b"")
    expect["empty.jpg"] = ("error", "empty file")
    (root / "notes.jpg").write_text("Grandma's birthday, 1962\n" * 20)
    expect["notes.jpg"] = ("error", "not an image (looks like text)")
    (root / "truncated.jpg").write_bytes(encoded(face, "JPEG")[:4000])
    expect["truncated.jpg"] = ("error", "truncated JPEG")
    (root / "noise.png").write_bytes(np.random.default_rng(6).bytes(20_000))
    expect["noise.png"] = ("error", "not an image")
    (root / "bomb.png").write_bytes(bomb_png())
    expect["bomb.png"] = ("error", "60000x60000")

    PILImage.fromarray(face[:1, :1]).save(root / "one_pixel.png")
    expect["one_pixel.png"] = ("ok", output_is((1, 1)))
    PILImage.fromarray(face).convert("L").save(root / "gray.jpg")

    def still_gray(path: Path) -> None:
        assert PILImage.open(path).mode == "L"
    expect["gray.jpg"] = ("ok", output_is((width, height), still_gray))

    alpha = np.tile(np.linspace(0, 255, width, dtype=np.uint8), (height, 1))
    PILImage.fromarray(np.dstack([face, alpha])).save(root / "rgba.png")

    def alpha_kept(path: Path) -> None:
        with PILImage.open(path) as image:
            assert image.mode == "RGBA" and np.array_equal(np.asarray(image)[..., 3], alpha)
    expect["rgba.png"] = ("ok", output_is((width, height), alpha_kept))

    # pypng: an encoder and decoder independent of the engine's own 16-bit PNG code.
    png.from_array(face.astype(np.uint16).reshape(height, -1) * 257, "RGB;16").save(root / "deep16.png")

    def still_16bit(path: Path) -> None:
        columns, rows, _, info = png.Reader(filename=str(path)).read()
        assert (columns, rows, info["bitdepth"], info["planes"]) == (width, height, 16, 3)
    expect["deep16.png"] = ("ok", still_16bit)

    PILImage.fromarray(face).convert("CMYK").save(root / "cmyk.jpg", quality=92)
    expect["cmyk.jpg"] = ("ok", output_is((width, height)))
    exif = PILImage.Exif()
    exif[0x0112] = 6  # "rotate 90 clockwise to view": stored lying on its side
    PILImage.fromarray(np.ascontiguousarray(np.rot90(face))).save(root / "rotated.jpg", exif=exif.tobytes())

    def upright(path: Path) -> None:
        with PILImage.open(path) as image:
            assert image.getexif().get(0x0112, 1) == 1
            pixels = np.asarray(image.convert("RGB")).astype(int)
        far = np.ones(pixels.shape[:2], bool)
        far[20:200, 60:160] = False  # the face (restored) aside, it is the upright photo
        assert np.abs(pixels[far] - face[far]).mean() < 8
    expect["rotated.jpg"] = ("ok", output_is((width, height), upright))

    (root / "progressive.jpg").write_bytes(encoded(face, "JPEG", progressive=True, quality=90))
    expect["progressive.jpg"] = ("ok", output_is((width, height)))
    frames = [PILImage.fromarray(face), PILImage.fromarray(np.ascontiguousarray(face[::-1]))]
    frames[0].save(root / "animated.gif", save_all=True, append_images=frames[1:], duration=100)
    expect["animated.gif"] = ("ok", output_is((width, height)))
    for name, fmt in (("photo.webp", "WEBP"), ("photo.tif", "TIFF"), ("photo.bmp", "BMP")):
        (root / name).write_bytes(encoded(face, fmt))

        def same_format(path: Path, fmt: str = fmt) -> None:
            assert PILImage.open(path).format == fmt
        expect[name] = ("ok", output_is((width, height), same_format))
    (root / "SHOUTING.JPG").write_bytes(encoded(face, "JPEG"))
    expect["SHOUTING.JPG"] = ("ok", output_is((width, height)))
    (root / "Großmutter 👵 ünï.jpg").write_bytes(encoded(face, "JPEG"))
    expect["Großmutter 👵 ünï.jpg"] = ("ok", output_is((width, height)))

    # A folder named like a photo, holding a photo; and a link loop in a sub-folder.
    (root / "album.jpg").mkdir()
    (root / "album.jpg" / "inside.png").write_bytes(encoded(face, "PNG"))
    expect["album.jpg/inside.png"] = ("ok", output_is((width, height)))
    (root / "nested").mkdir()
    os.symlink("..", root / "nested" / "loop")
    os.symlink(root / "nested", root / "nested" / "self.jpg")  # a link to a folder named .jpg: not a photo
    (root / "nested" / "deep.jpg").write_bytes(encoded(face, "JPEG"))
    expect["nested/deep.jpg"] = ("ok", output_is((width, height)))

    # Changed by the test between listing and reading (see the hook in the test).
    (root / "vanishes.jpg").write_bytes(encoded(face, "JPEG"))
    expect["vanishes.jpg"] = ("error", "file not found")
    (root / "changes.jpg").write_bytes(encoded(face, "JPEG"))
    expect["changes.jpg"] = ("error", "not an image")
    (root / "locked.jpg").write_bytes(encoded(face, "JPEG"))
    expect["locked.jpg"] = ("error", "permission denied")
    os.symlink(root / "nowhere.jpg", root / "dangling.jpg")
    expect["dangling.jpg"] = ("error", "file not found")
    if hasattr(os, "mkfifo"):
        os.mkfifo(root / "pipe.jpg")  # opening a FIFO for reading would wait for a writer forever
        expect["pipe.jpg"] = ("error", "not a regular file")
    return expect


@pytest.fixture(scope="module")
def face() -> np.ndarray:
    from skimage.data import astronaut

    return np.ascontiguousarray(astronaut()[::2, ::2])  # 256 x 256, one face


def test_hostile_folder_completes_with_an_output_or_one_line_error_each(
        tmp_path: Path, face: np.ndarray, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "in"
    expect = build_hostile_folder(root, face)
    before = sha256_tree(root)

    real_collect = cli.collect_inputs

    def collect_then_disturb(*args: Any, **kwargs: Any) -> list[batch.InputItem]:
        items = real_collect(*args, **kwargs)
        (root / "vanishes.jpg").unlink()
        (root / "changes.jpg").write_text("overwritten with text after the folder was listed\n")
        return items

    monkeypatch.setattr(cli, "collect_inputs", collect_then_disturb)

    # Every open of an input must be read-only. As root, chmod 000 stops nothing: locked.jpg is
    # refused where the loader opens it (a real chmod test follows for non-root runs).
    opened: list[tuple[str, str]] = []
    flags_seen: list[tuple[str, int]] = []
    real_open, real_os_open = builtins.open, os.open

    def spy_open(file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        if isinstance(file, (str, os.PathLike)) and str(root) in os.fspath(file):
            opened.append((os.fspath(file), mode))
            if Path(file).name == "locked.jpg":
                raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), os.fspath(file))
        return real_open(file, mode, *args, **kwargs)

    def spy_os_open(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        if isinstance(path, (str, os.PathLike)) and str(root) in os.fspath(path):
            flags_seen.append((os.fspath(path), flags))
        return real_os_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", spy_open)
    monkeypatch.setattr(os, "open", spy_os_open)

    out, report_path = tmp_path / "out", tmp_path / "report.json"
    started = time.perf_counter()
    status, _, err = run_cli("enhance", root, "-o", out, "--recursive", "--json", report_path, "--workers", "2")
    seconds = time.perf_counter() - started
    monkeypatch.undo()

    assert status == ExitStatus.ERROR, err
    assert "Traceback" not in err
    report = json.loads(report_path.read_text())
    items = {str(Path(i["input"]).relative_to(root)): i for i in report["items"]}
    assert set(items) == set(expect), "every photo listed once; the loop and the folder add nothing"
    for name, (outcome, check) in expect.items():
        item = items[name]
        assert "details" not in item, "tracebacks stay out of the report without --verbose"
        if outcome == "error":
            assert item["status"] == "error", f"{name}: {item}"
            message = item["error"]
            assert check in message and Path(name).name in message and "\n" not in message, message
            assert item["output"] is None
            assert f"{item['input']}: error: {message}" in err  # shown as it happens, one line
        else:
            assert item["status"] == "ok", f"{name}: {item.get('error')}"
            check(Path(item["output"]))
    assert items["animated.gif"]["output"].endswith("animated.png")
    assert "first of 2 frames" in items["animated.gif"]["warnings"][0]
    assert items["SHOUTING.JPG"]["output"].endswith("SHOUTING.jpg")
    assert all(i["faces"] == 1 for n, i in items.items() if expect[n][0] == "ok" and n != "one_pixel.png")

    # Originals untouched (the two files the test itself changed aside), opened read-only.
    after = sha256_tree(root)
    for name, digest in before.items():
        if name not in ("vanishes.jpg", "changes.jpg"):
            assert after[name] == digest, f"{name} was modified"
    assert opened and all(mode == "rb" for _, mode in opened), opened
    writes = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
    assert all(flags & writes == 0 for _, flags in flags_seen), flags_seen
    leftovers = [p.name for p in out.rglob("*") if p.name.startswith(".restora-") or p.suffix == ".part"]
    assert leftovers == []
    ok = sum(1 for outcome, _ in expect.values() if outcome == "ok")
    print(f"\nhostile folder: {len(expect)} files, {ok} restored, {len(expect) - ok} clear errors, {seconds:.1f} s")


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0,
                    reason="root reads files whatever their mode; covered by fault injection above")
def test_unreadable_file_for_real(tmp_path: Path, face: np.ndarray) -> None:
    root = tmp_path / "in"
    root.mkdir()
    locked = root / "locked.jpg"
    locked.write_bytes(encoded(face, "JPEG"))
    locked.chmod(0)
    try:
        status, _, err = run_cli("enhance", root, "-o", tmp_path / "out", "--quiet")
    finally:
        locked.chmod(0o644)
    assert status == ExitStatus.ERROR and "permission denied" in err and "Traceback" not in err


def test_verbose_shows_each_failed_photos_traceback(tmp_path: Path) -> None:
    root = tmp_path / "in"
    root.mkdir()
    (root / "notes.jpg").write_text("not a photo\n")
    (root / "empty.png").write_bytes(b"")
    quiet_report, verbose_report = tmp_path / "quiet.json", tmp_path / "verbose.json"
    status, _, err = run_cli("enhance", root, "-o", tmp_path / "out", "--json", quiet_report)
    assert status == ExitStatus.ERROR and "Traceback" not in err
    assert err.count("error:") == 2
    status, _, err = run_cli("--verbose", "enhance", root, "-o", tmp_path / "out", "--json", verbose_report)
    assert status == ExitStatus.ERROR
    assert err.count("Traceback (most recent call last)") == 2
    assert "engine.errors.ImageError" in err and "notes.jpg: not an image" in err
    assert all("details" not in i for i in json.loads(quiet_report.read_text())["items"])
    details = [i["details"] for i in json.loads(verbose_report.read_text())["items"]]
    assert len(details) == 2 and all("Traceback" in d and "load_image" in d for d in details)
    # --quiet hides progress, not the details asked for.
    status, _, err = run_cli("--verbose", "enhance", root, "-o", tmp_path / "out", "--quiet")
    assert err.count("Traceback (most recent call last)") == 2


def test_a_failing_inference_batch_costs_its_photos_not_the_run(tmp_path: Path, face: np.ndarray,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "in"
    root.mkdir()
    for index in range(4):
        (root / f"p{index}.jpg").write_bytes(encoded(np.ascontiguousarray(np.roll(face, index, axis=1)), "JPEG"))
    real = Enhancer.compose_result
    real_load = batch.load_image

    def load_and_mark(path: Any, **kwargs: Any) -> Any:
        image = real_load(path, **kwargs)
        if Path(path).name == "p1.jpg":
            object.__setattr__(image, "_restora_test_fail", True)
        return image

    def compose_fails_for_p1(self: Enhancer, image: Any, *args: Any, **kwargs: Any) -> Any:
        if getattr(image, "_restora_test_fail", False):
            raise RuntimeError("simulated failure inside a shared inference batch")
        return real(self, image, *args, **kwargs)

    monkeypatch.setattr(batch, "load_image", load_and_mark)
    monkeypatch.setattr(Enhancer, "compose_result", compose_fails_for_p1)
    report = tmp_path / "r.json"
    status, _, err = run_cli("enhance", root, "-o", tmp_path / "out", "--batch-size", "1", "--json", report,
                             "--quiet")
    assert status == ExitStatus.ERROR and "Traceback" not in err
    items = {Path(i["input"]).name: i for i in json.loads(report.read_text())["items"]}
    assert items["p1.jpg"]["status"] == "error"
    assert "RuntimeError: simulated failure" in items["p1.jpg"]["error"]
    assert [items[f"p{i}.jpg"]["status"] for i in (0, 2, 3)] == ["ok"] * 3


def test_unexpected_bug_is_one_line_and_exit_1(tmp_path: Path, face: np.ndarray,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "a.jpg").write_bytes(encoded(face, "JPEG"))

    def broken(*args: Any, **kwargs: Any) -> None:
        raise KeyError("a bug")

    monkeypatch.setattr(cli, "run_batch", broken)
    status, _, err = run_cli("enhance", tmp_path / "a.jpg", "-o", tmp_path / "out", "--quiet")
    assert status == ExitStatus.ERROR and "Traceback" not in err
    assert "unexpected failure: KeyError: 'a bug'" in err and "--verbose" in err
    status, _, err = run_cli("--verbose", "enhance", tmp_path / "a.jpg", "-o", tmp_path / "out", "--quiet")
    assert status == ExitStatus.ERROR and "Traceback" in err


# -- originals are sacred ----------------------------------------------------------------------


@pytest.fixture()
def album(tmp_path: Path, face: np.ndarray) -> Path:
    root = tmp_path / "album"
    root.mkdir()
    (root / "a.jpg").write_bytes(encoded(face, "JPEG"))
    (root / "b.png").write_bytes(encoded(face[::2, ::2], "PNG"))
    return root


def links_into(album: Path, out: Path, kind: str) -> None:
    out.mkdir(exist_ok=True)
    if kind == "symlink to its own input":
        os.symlink(album / "a.jpg", out / "a.jpg")
    elif kind == "hard link to its own input":
        os.link(album / "a.jpg", out / "a.jpg")
    elif kind == "symlink to another input":
        os.symlink(album / "b.png", out / "a.jpg")
    elif kind == "hard link to another input":
        os.link(album / "b.png", out / "a.jpg")
    else:
        raise AssertionError(kind)


LINK_KINDS = ["symlink to its own input", "hard link to its own input", "symlink to another input",
              "hard link to another input"]


@pytest.mark.parametrize(
    "case",
    ["same folder", "same folder, --format png", "output folder is a link to the input folder", *LINK_KINDS],
)
def test_output_onto_an_input_is_refused_before_any_work(tmp_path: Path, album: Path, case: str,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    loaded: list[str] = []
    monkeypatch.setattr(batch, "load_image", lambda path, **_: loaded.append(str(path)))
    before = sha256_tree(album)
    out = tmp_path / "out"
    extra: list[str] = []
    if case.startswith("same folder"):
        out = album
        extra = ["--format", "png"] if "png" in case else []
    elif case.startswith("output folder is a link"):
        os.symlink(album, out)
    else:
        links_into(album, out, case)
    status, _, err = run_cli("enhance", album, "-o", out, *extra)
    assert status == ExitStatus.USAGE, err
    assert "would overwrite the input" in err and "Traceback" not in err
    assert loaded == []
    assert sha256_tree(album) == before


@pytest.mark.parametrize("kind", LINK_KINDS)
def test_even_without_the_check_a_write_replaces_links_not_originals(tmp_path: Path, album: Path, kind: str,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Belt and braces: atomic writes rename over the link itself, so the original's bytes survive."""
    monkeypatch.setattr(batch, "refuse_outputs_onto_inputs", lambda items, planned: None)
    monkeypatch.setattr(cli, "plan_outputs", lambda items, options: [])
    before = sha256_tree(album)
    out = tmp_path / "out"
    links_into(album, out, kind)
    status, _, err = run_cli("enhance", album / "a.jpg", "-o", out, "--quiet")
    assert status == ExitStatus.OK, err
    assert sha256_tree(album) == before
    written = out / "a.jpg"
    assert written.is_file() and not written.is_symlink() and written.stat().st_nlink == 1
    assert not written.samefile(album / "a.jpg") and not written.samefile(album / "b.png")


def test_suffix_in_the_same_folder_writes_beside_the_originals(album: Path) -> None:
    before = sha256_tree(album)
    status, _, err = run_cli("enhance", album / "a.jpg", "-o", album, "--suffix", "_restored", "--quiet")
    assert status == ExitStatus.OK, err
    after = sha256_tree(album)
    assert {k: after[k] for k in before} == before
    assert set(after) - set(before) == {"a_restored.jpg"}


# -- models --------------------------------------------------------------------------------------


def test_corrupt_model_file_is_refused_before_any_photo(tmp_path: Path, album: Path) -> None:
    from engine.models import ModelStore

    store = ModelStore.default()
    fake_dir = tmp_path / "models"
    fake_dir.mkdir()
    for precision in store.precisions("restora-lite"):
        spec = store.get("restora-lite", precision)
        real = store.locate(spec)
        assert real is not None
        data = bytearray(real.read_bytes())
        data[len(data) // 2] ^= 0x01  # one bit flipped: still loads as ONNX, but not the listed file
        (fake_dir / spec.file().file).write_bytes(bytes(data))
    status, _, err = run_cli("enhance", album, "-o", tmp_path / "out",
                             env=Environment(model_dirs=(fake_dir,)))
    assert status == ExitStatus.USAGE
    assert "sha256 mismatch" in err and str(fake_dir) in err and "restora-lite" in err
    assert "Traceback" not in err and "\n" not in err.strip()
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
    status, out, _ = run_cli("models", "verify", env=Environment(model_dirs=(fake_dir,)))
    assert status == ExitStatus.ERROR and "restora-lite/int8: corrupt" in out


def save_graph(path: Path, in_channels: int = 3, size: int = 64) -> Path:
    import onnx
    from onnx import TensorProto, helper

    shape = [1, in_channels, size, size]
    graph = helper.make_graph([helper.make_node("Neg", ["input"], ["output"])], "g",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, shape)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def test_models_import_refuses_bad_files_with_exit_2(tmp_path: Path, user_model_dir: Path) -> None:
    good = save_graph(tmp_path / "good.onnx").read_bytes()
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(good[: len(good) // 2])
    notes = tmp_path / "notes.onnx"
    notes.write_text("definitely not a model\n" * 40)
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    gray = save_graph(tmp_path / "gray.onnx", in_channels=1)
    cases = [(truncated, "cannot be loaded"), (notes, "cannot be loaded"), (empty, "empty.onnx"),
             (gray, "expected a restorer"), (tmp_path / "missing.onnx", "missing.onnx")]
    for path, message in cases:
        status, _, err = run_cli("models", "import", path)
        assert status == ExitStatus.USAGE, (path.name, err)
        assert message in err and path.name in err and "Traceback" not in err, err
        assert len(err.strip().splitlines()) == 1
    assert not (user_model_dir / "user.json").exists()
    assert sorted(p.name for p in user_model_dir.iterdir()) == []


def test_models_download_verifies_before_use(tmp_path: Path, user_model_dir: Path) -> None:
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    payload = save_graph(tmp_path / "served.onnx").read_bytes()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            body = bytearray(payload)
            body[-1] ^= 0xFF  # corrupted in transit
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(bytes(body))

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        entry = {"name": "net-test", "family": "restorer", "arch": "gfpgan", "file": "net_test.onnx",
                 "sha256": hashlib.sha256(payload).hexdigest(), "precision": "fp32", "size": 64,
                 "url": f"http://127.0.0.1:{server.server_address[1]}/net_test.onnx"}
        (user_model_dir / "user.json").write_text(json.dumps({"version": 1, "models": [entry]}))
        status, _, err = run_cli("models", "download", "net-test")
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
    assert status == ExitStatus.USAGE, err
    assert "sha256 mismatch" in err and "Traceback" not in err
    assert sorted(p.name for p in user_model_dir.iterdir()) == ["user.json"], "nothing unverified is kept"


def test_manifest_with_a_malformed_url_is_a_format_error() -> None:
    """Found by fuzz/fuzz_manifest.py: urlsplit raised ValueError("Invalid IPv6 URL") through the parser."""
    from engine.errors import ModelFormatError
    from engine.models import parse_manifest

    for url in ("https://huggingface].co/x.onnx", "http://[::1/x.onnx", "https://[/"):
        entry = {"name": "x", "family": "restorer", "arch": "gfpgan", "file": "x.onnx", "sha256": None,
                 "url": url, "size": 512}
        with pytest.raises(ModelFormatError, match=r"user\.json: entry 0 \(x\): url of x\.onnx is not a valid URL"):
            parse_manifest(json.dumps({"version": 1, "models": [entry]}), "user.json")


# -- the sources themselves ------------------------------------------------------------------------


def source_files() -> Iterator[Path]:
    for folder in ("engine", "gui"):
        yield from sorted((REPO / folder).rglob("*.py"))


NETWORK_MODULES = ("socket", "ssl", "http", "urllib.request", "urllib3", "requests", "httpx", "aiohttp",
                   "ftplib", "smtplib", "xmlrpc", "websocket", "telnetlib")
# models.py may reach the network only inside these functions, and they only from download().
DOWNLOAD_FUNCTIONS = {"download", "_download_file", "_fetch"}


def test_no_pickle_eval_exec_or_stray_network_access_in_engine_and_gui() -> None:
    problems: list[str] = []
    checked = 0
    for path in source_files():
        checked += 1
        text = path.read_text(encoding="utf-8")
        tree = ast.parse(text, str(path))
        where = path.relative_to(REPO)
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
            for name in names:
                if name.split(".")[0] in ("pickle", "cPickle", "dill", "shelve", "marshal", "joblib"):
                    problems.append(f"{where}:{node.lineno}: imports {name}")
                network = any(name == m or name.startswith(m + ".") for m in NETWORK_MODULES)
                if network and str(where) != os.path.join("engine", "models.py"):
                    problems.append(f"{where}:{node.lineno}: imports {name} (network)")
            if isinstance(node, ast.Call):
                func = node.func
                if isinstance(func, ast.Name) and func.id in ("eval", "exec", "compile", "__import__"):
                    problems.append(f"{where}:{node.lineno}: calls {func.id}()")
                unsafe = [kw for kw in node.keywords if kw.arg == "allow_pickle"
                          and not (isinstance(kw.value, ast.Constant) and kw.value.value is False)]
                if isinstance(func, ast.Attribute) and func.attr == "load" and unsafe:
                    problems.append(f"{where}:{node.lineno}: load with allow_pickle not False")
                if (isinstance(func, ast.Attribute) and func.attr == "load" and isinstance(func.value, ast.Name)
                        and func.value.id == "np" and not any(kw.arg == "allow_pickle" for kw in node.keywords)):
                    problems.append(f"{where}:{node.lineno}: np.load without allow_pickle=False")
        if re.search(r"\btorch\.load\(|\bpickle\b", text):
            problems.append(f"{where}: mentions pickle or torch.load")
    assert checked > 20
    assert problems == [], "\n".join(problems)


def test_network_calls_live_only_behind_models_download() -> None:
    path = REPO / "engine" / "models.py"
    tree = ast.parse(path.read_text(encoding="utf-8"))
    functions = {node.name: node for node in tree.body if isinstance(node, ast.FunctionDef)}
    network_users: set[str] = set()
    calls: dict[str, set[str]] = {name: set() for name in functions}
    for name, function in functions.items():
        for node in ast.walk(function):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute):
                dotted = f"{getattr(node.value.value, 'id', '')}.{node.value.attr}"
                if dotted in ("urllib.request", "http.client") and node.attr not in ("HTTPException",):
                    network_users.add(name)
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in functions:
                calls[node.func.id].add(name)
    assert network_users, "the download code was found"
    assert network_users <= DOWNLOAD_FUNCTIONS, network_users
    for helper in DOWNLOAD_FUNCTIONS - {"download"}:
        assert calls[helper] <= DOWNLOAD_FUNCTIONS, f"{helper} is called from {calls[helper]}"
    for node in ast.walk(tree):  # nothing at module level reaches out either
        if isinstance(node, ast.Call) and getattr(node.func, "attr", "") in ("urlopen", "create_connection"):
            assert any(node in ast.walk(functions[f]) for f in DOWNLOAD_FUNCTIONS)
    # and download() itself is called only by the explicit `models download` command and GUI button
    callers = []
    for source in source_files():
        text = source.read_text(encoding="utf-8")
        if re.search(r"\b(modellib|models)\.download\(|\bimport download\b|[^_]download\(store", text):
            callers.append(str(source.relative_to(REPO)))
    assert set(callers) <= {os.path.join("engine", "cli.py"), os.path.join("gui", "model_dialog.py"),
                            os.path.join("engine", "models.py")}, callers


# -- fuzzing (bounded; the long runs are `make fuzz`) -------------------------------------------------


@pytest.mark.filterwarnings("ignore::UserWarning")  # Pillow notes corrupt EXIF as it skips it
def test_loader_never_raises_anything_but_image_error_on_random_and_mutated_bytes(tmp_path: Path,
                                                                                  face: np.ndarray) -> None:
    hypothesis = pytest.importorskip("hypothesis")
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    small = np.ascontiguousarray(face[::4, ::4])
    seeds = [encoded(small, "JPEG"), encoded(small, "PNG"), encoded(small, "WEBP"), encoded(small, "GIF"),
             encoded(small, "BMP"), encoded(small, "TIFF"), bomb_png(), encoded(small, "JPEG", progressive=True)]
    path = tmp_path / "fuzz.img"
    started = time.perf_counter()
    examples = 0

    def check(data: bytes) -> None:
        nonlocal examples
        examples += 1
        path.write_bytes(data)
        try:
            image = imageio.load_image(path, max_pixels=4_000_000)
        except ImageError as error:
            assert "\n" not in str(error) and str(path) in str(error)
            return
        assert image.pixels.ndim == 3 and image.pixels.shape[2] == 3 and image.pixels.size > 0
        assert image.pixels.dtype in (np.uint8, np.uint16)
        assert image.width * image.height <= 4_000_000

    @settings(max_examples=150, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(st.binary(max_size=2048))
    def random_bytes(data: bytes) -> None:
        check(data)

    @settings(max_examples=250, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(st.sampled_from(seeds), st.lists(st.tuples(st.integers(0, 1 << 20), st.integers(0, 255)),
                                             min_size=1, max_size=8),
           st.one_of(st.none(), st.integers(0, 1 << 20)))
    def mutated(seed: bytes, flips: list[tuple[int, int]], cut: int | None) -> None:
        data = bytearray(seed)
        for offset, value in flips:
            data[offset % len(data)] = value
        if cut is not None:
            data = data[: cut % len(data)]
        check(bytes(data))

    random_bytes()
    mutated()
    seconds = time.perf_counter() - started
    print(f"\nhypothesis: {examples} loader calls in {seconds:.1f} s, no unexpected exception")
    assert hypothesis is not None and examples >= 400


# -- the desktop app ------------------------------------------------------------------------------


def test_gui_queue_shows_hostile_files_as_errors_and_keeps_working(request: pytest.FixtureRequest,
                                                                   tmp_path: Path, face: np.ndarray) -> None:
    pytest.importorskip("PySide6")
    pytest.importorskip("pytestqt")
    from PySide6.QtCore import QMimeData, QPointF, QSettings, Qt, QUrl
    from PySide6.QtGui import QDragEnterEvent, QDropEvent
    from PySide6.QtWidgets import QApplication

    from engine.errors import ModelError
    from gui.main_window import MainWindow
    from gui.queue_model import Status
    from gui.settings import AppSettings, save_settings
    from gui.workers import EnginePool

    qtbot = request.getfixturevalue("qtbot")
    pool = EnginePool()
    try:
        pool.get(AppSettings().enhance_settings())
    except ModelError as error:
        pytest.skip(f"the default models are not installed: {error}")
    ini = tmp_path / "restora.ini"
    save_settings(AppSettings(output_dir=str(tmp_path / "out"), workers=1),
                  QSettings(str(ini), QSettings.Format.IniFormat))
    window = MainWindow(QSettings(str(ini), QSettings.Format.IniFormat), pool)
    qtbot.addWidget(window)
    window.show()

    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "good.jpg").write_bytes(encoded(face, "JPEG"))
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "notes.jpg").write_text("not a photo\n")
    (folder / "truncated.jpg").write_bytes(encoded(face, "JPEG")[:3000])
    (folder / "bomb.png").write_bytes(bomb_png())
    (folder / "vanishes.jpg").write_bytes(encoded(face, "JPEG"))
    hostile = {"empty.jpg": "empty file", "notes.jpg": "not an image", "truncated.jpg": "truncated",
               "bomb.png": "60000x60000", "vanishes.jpg": "not found"}

    def drop(paths: list[Path]) -> None:
        mime = QMimeData()
        mime.setUrls([QUrl.fromLocalFile(str(p)) for p in paths])
        args = (QPointF(50, 50), Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton,
                Qt.KeyboardModifier.NoModifier)
        QApplication.sendEvent(window, QDragEnterEvent(*args))
        QApplication.sendEvent(window, QDropEvent(*args))

    with qtbot.waitSignal(window.inputs_added, timeout=10_000):
        drop(sorted(folder.iterdir()))
    (folder / "vanishes.jpg").unlink()  # gone between being queued and being read
    with qtbot.waitSignal(window.runner.run_finished, timeout=120_000):
        window.start()
    items = {item.name: item for item in window.model.items}
    assert items["good.jpg"].status == Status.DONE and items["good.jpg"].faces == 1
    log = window.log_view.toPlainText()
    for name, words in hostile.items():
        item = items[name]
        assert item.status == Status.ERROR, (name, item.status)
        assert words in (item.error or "") and name in (item.error or ""), item.error
        assert "\n" not in (item.error or "") and name in log
    assert "Traceback" not in log

    # Still working: another photo afterwards runs normally.
    (folder / "later.png").write_bytes(encoded(face, "PNG"))
    with qtbot.waitSignal(window.inputs_added, timeout=10_000):
        drop([folder / "later.png"])
    with qtbot.waitSignal(window.runner.run_finished, timeout=120_000):
        window.start()
    later = next(item for item in window.model.items if item.name == "later.png")
    assert later.status == Status.DONE and later.faces == 1
    window.close()
