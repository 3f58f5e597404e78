"""What the fuzzers check, shared by the atheris entry points and the plain runner (run.py).

Each target takes arbitrary bytes and must either succeed or raise the engine's typed error for
that input; any other exception is a bug (the fuzzer reports it as a crash).
"""

from __future__ import annotations

import io
import os
import struct
import sys
import tempfile
import zlib
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# Small enough that a header declaring a large, valid image is refused rather than decoded: the
# fuzzers look for crashes and hangs, and a 178 MP decode is neither, only slow.
FUZZ_MAX_PIXELS = 16_000_000

_SCRATCH = Path(tempfile.mkdtemp(prefix="restora-fuzz-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None))


def check_image(data: bytes) -> None:
    """engine.imageio.load_image on these bytes: an Image, or ImageError (one line, naming the file)."""
    from engine.errors import ImageError
    from engine.imageio import load_image

    path = _SCRATCH / "input.img"
    path.write_bytes(data)
    try:
        image = load_image(path, max_pixels=FUZZ_MAX_PIXELS)
    except ImageError as error:
        message = str(error)
        if "\n" in message or str(path) not in message:
            raise AssertionError(f"badly formed error message: {message!r}") from error
        return
    pixels = image.pixels
    if pixels.ndim != 3 or pixels.shape[2] != 3 or pixels.dtype.name not in ("uint8", "uint16"):
        raise AssertionError(f"bad pixels {pixels.shape} {pixels.dtype}")
    if image.alpha is not None and image.alpha.shape != pixels.shape[:2]:
        raise AssertionError(f"alpha {image.alpha.shape} does not match pixels {pixels.shape}")
    if image.width * image.height > FUZZ_MAX_PIXELS:
        raise AssertionError("the pixel limit was not enforced")


def check_manifest(data: bytes) -> None:
    """engine.models.parse_manifest on these bytes as text: specs, or ModelFormatError."""
    from engine.errors import ModelFormatError
    from engine.models import parse_manifest

    text = data.decode("utf-8", errors="replace")
    try:
        specs = parse_manifest(text, "fuzz.json")
    except ModelFormatError as error:
        if "fuzz.json" not in str(error):
            raise AssertionError(f"error does not name the manifest: {error}") from error
        return
    for spec in specs:
        if not spec.name or not spec.files:
            raise AssertionError(f"accepted an entry without a name or files: {spec}")


def image_seeds() -> dict[str, bytes]:
    """Small valid images of every format the loader reads, plus a bomb header."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(6)
    pixels = rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)
    seeds: dict[str, bytes] = {}
    for name, fmt, image, options in (
        ("rgb.jpg", "JPEG", Image.fromarray(pixels), {"quality": 80}),
        ("progressive.jpg", "JPEG", Image.fromarray(pixels), {"progressive": True}),
        ("cmyk.jpg", "JPEG", Image.fromarray(pixels).convert("CMYK"), {}),
        ("rgb.png", "PNG", Image.fromarray(pixels), {}),
        ("rgba.png", "PNG", Image.fromarray(pixels).convert("RGBA"), {}),
        ("gray.png", "PNG", Image.fromarray(pixels).convert("L"), {}),
        ("palette.gif", "GIF", Image.fromarray(pixels).convert("P"), {}),
        ("lossy.webp", "WEBP", Image.fromarray(pixels), {"quality": 70}),
        ("deflate.tif", "TIFF", Image.fromarray(pixels), {"compression": "tiff_adobe_deflate"}),
        ("rgb.bmp", "BMP", Image.fromarray(pixels), {}),
    ):
        buffer = io.BytesIO()
        exif = Image.Exif()
        exif[0x0112] = 6
        if fmt in ("JPEG", "PNG", "WEBP"):
            options = {**options, "exif": exif.tobytes()}
        image.save(buffer, fmt, **options)
        seeds[name] = buffer.getvalue()

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    seeds["bomb.png"] = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 60000, 60000, 8, 2, 0, 0, 0))
                         + chunk(b"IDAT", zlib.compress(b"\x00" * 256)) + chunk(b"IEND", b""))
    from engine.imageio import Image as Photo
    from engine.imageio import save_image

    with tempfile.TemporaryDirectory() as folder:
        deep = Path(folder) / "deep16.png"  # a 16-bit RGB PNG, through the engine's own writer
        save_image(Photo(pixels=pixels.astype(np.uint16) * 257), deep)
        seeds["deep16.png"] = deep.read_bytes()
    return seeds


def manifest_seeds() -> dict[str, bytes]:
    """The shipped manifests and a few small hand-written ones."""
    assets = Path(__file__).resolve().parents[1] / "assets" / "models"
    seeds = {path.name: path.read_bytes() for path in sorted(assets.glob("*.json"))}
    seeds["minimal.json"] = (b'{"version": 1, "models": [{"name": "x", "family": "restorer", "arch": "gfpgan", '
                             b'"file": "x.onnx", "sha256": null, "url": null, "size": 512}]}')
    seeds["multi.json"] = (b'{"version": 1, "models": [{"name": "d", "family": "detector", "arch": "mtcnn", '
                           b'"files": [{"role": "pnet", "file": "p.onnx", "sha256": null, "package": "m"}]}]}')
    seeds["empty.json"] = b'{"version": 1, "models": []}'
    return seeds


def ensure_corpus(folder: Path, seeds: dict[str, bytes]) -> None:
    """Write the seeds into an empty (or missing) corpus folder."""
    folder.mkdir(parents=True, exist_ok=True)
    if not any(folder.iterdir()):
        for name, data in seeds.items():
            (folder / name).write_bytes(data)
