"""Image I/O: formats, orientation, metadata, alpha, 16-bit, errors, atomic writes."""

from __future__ import annotations

import io
import os
import struct
import zlib
from dataclasses import replace
from pathlib import Path

import numpy as np
import PIL.Image
import png
import pytest
import simplejpeg
from PIL import ImageCms, ImageOps

from engine import imageio
from engine.errors import ImageError, ImageTooLargeError, OutputError
from engine.imageio import (
    Image,
    atomic_write_bytes,
    from_uint8_like,
    is_supported_path,
    load_image,
    output_format_for,
    resize_image,
    same_file,
    save_image,
    to_uint8,
)

MAKE, MODEL, TAKEN = 0x010F, 0x0110, 0x9003
ORIENTATION, EXIF_IFD = 0x0112, 0x8769


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    """A smooth, asymmetric RGB picture (JPEG-friendly; any flip or rotation changes it)."""
    y, x = np.mgrid[0:48, 0:64].astype(np.float32)
    red = 40 + 3 * x
    green = 30 + 4 * y
    blue = 120 + 60 * np.sin(x / 9.0) * np.cos(y / 7.0)
    return np.clip(np.dstack([red, green, blue]), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def srgb_icc() -> bytes:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def camera_exif(orientation: int | None = None) -> bytes:
    exif = PIL.Image.Exif()
    exif[MAKE] = "Restora Camera Co"
    exif[MODEL] = "RC-1"
    if orientation is not None:
        exif[ORIENTATION] = orientation
    exif.get_ifd(EXIF_IFD)[TAKEN] = "2021:06:05 14:03:02"
    return exif.tobytes()


def exif_of(path: Path) -> PIL.Image.Exif:
    with PIL.Image.open(path) as im:
        im.load()
        return im.getexif()


def mean_abs_diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.float64) - b.astype(np.float64)).mean())


# --------------------------------------------------------------------------- paths and formats


def test_supported_extensions_any_case(tmp_path: Path) -> None:
    assert is_supported_path("a.jpg") and is_supported_path("B.JPG") and is_supported_path("c.TiFf")
    assert is_supported_path(tmp_path / "x.webp") and is_supported_path("anim.GIF")
    assert not is_supported_path("notes.txt") and not is_supported_path("raw.cr2")
    assert not is_supported_path("jpg") and not is_supported_path(".restora-x.part")


@pytest.mark.parametrize(
    ("source", "requested", "expected"),
    [
        ("JPEG", "keep", ("JPEG", ".jpg")),
        ("MPO", "keep", ("JPEG", ".jpg")),
        ("PNG", "keep", ("PNG", ".png")),
        ("WEBP", "keep", ("WEBP", ".webp")),
        ("TIFF", "keep", ("TIFF", ".tif")),
        ("BMP", "keep", ("BMP", ".bmp")),
        ("GIF", "keep", ("PNG", ".png")),
        ("GIF", "jpg", ("JPEG", ".jpg")),
        ("JPEG", "png", ("PNG", ".png")),
        ("PNG", "webp", ("WEBP", ".webp")),
        ("PNG", "tiff", ("TIFF", ".tif")),
    ],
)
def test_output_format_for(source: str, requested: str, expected: tuple[str, str]) -> None:
    assert output_format_for(source, requested) == expected


def test_output_format_for_rejects_unknown_choice() -> None:
    with pytest.raises(OutputError, match="heic"):
        output_format_for("JPEG", "heic")


def test_same_file(tmp_path: Path) -> None:
    a = tmp_path / "a.png"
    a.write_bytes(b"x")
    (tmp_path / "sub").mkdir()
    assert same_file(a, tmp_path / "sub" / ".." / "a.png")
    assert not same_file(a, tmp_path / "b.png")
    assert same_file(tmp_path / "new.png", tmp_path / "sub" / ".." / "new.png")
    if hasattr(os, "symlink"):
        link = tmp_path / "link.png"
        os.symlink(a, link)
        assert same_file(a, link)


# --------------------------------------------------------------------------- round trips


@pytest.mark.parametrize(
    ("name", "tolerance"),
    [("a.jpg", 3.0), ("a.png", 0.0), ("a.webp", 0.0), ("a.tif", 0.0), ("a.bmp", 0.0)],
)
def test_round_trip(tmp_path: Path, photo: np.ndarray, name: str, tolerance: float) -> None:
    path = tmp_path / name
    save_image(Image(pixels=photo), path, lossless=True)
    loaded = load_image(path)
    assert loaded.pixels.shape == photo.shape and loaded.pixels.dtype == np.uint8
    assert loaded.alpha is None and loaded.warnings == ()
    assert loaded.pixels.flags.c_contiguous
    assert mean_abs_diff(loaded.pixels, photo) <= tolerance
    expected_format = {"jpg": "JPEG", "png": "PNG", "webp": "WEBP", "tif": "TIFF", "bmp": "BMP"}
    assert loaded.format == expected_format[name.split(".")[1]]
    if tolerance == 0.0:
        np.testing.assert_array_equal(loaded.pixels, photo)


def test_jpeg_quality_and_subsampling(tmp_path: Path, photo: np.ndarray) -> None:
    high, low = tmp_path / "high.jpg", tmp_path / "low.jpg"
    save_image(Image(pixels=photo), high, quality=95)
    save_image(Image(pixels=photo), low, quality=40)
    assert low.stat().st_size < high.stat().st_size
    with PIL.Image.open(high) as im:
        assert im.layer[0][1:3] == (1, 1)  # 4:4:4: luma not sampled more finely than chroma
    with PIL.Image.open(low) as im:
        assert im.layer[0][1:3] == (2, 2)  # 4:2:0


def test_format_argument_overrides_extension(tmp_path: Path, photo: np.ndarray) -> None:
    path = tmp_path / "out.data"
    save_image(Image(pixels=photo), path, format="png")
    assert load_image(path).format == "PNG"
    with pytest.raises(OutputError, match="extension"):
        save_image(Image(pixels=photo), tmp_path / "out.xyz")


@pytest.mark.parametrize("orientation", [3, 6, 8, 2, 5, 7])
def test_exif_orientation_applied_and_reset(tmp_path: Path, photo: np.ndarray, orientation: int) -> None:
    # Store the pixels the way a camera would, so that applying `orientation` gives `photo` back.
    stored_for = {
        2: PIL.Image.Transpose.FLIP_LEFT_RIGHT,
        3: PIL.Image.Transpose.ROTATE_180,
        5: PIL.Image.Transpose.TRANSPOSE,
        6: PIL.Image.Transpose.ROTATE_90,
        7: PIL.Image.Transpose.TRANSVERSE,
        8: PIL.Image.Transpose.ROTATE_270,
    }
    stored = PIL.Image.fromarray(photo).transpose(stored_for[orientation])
    source = tmp_path / "camera.jpg"
    stored.save(source, quality=98, subsampling=0, exif=camera_exif(orientation))

    loaded = load_image(source)
    assert loaded.pixels.shape == photo.shape
    assert mean_abs_diff(loaded.pixels, photo) < 3.0
    assert loaded.exif is not None
    parsed = PIL.Image.Exif()
    parsed.load(loaded.exif)
    assert parsed[ORIENTATION] == 1

    out = tmp_path / "out.jpg"
    save_image(loaded, out)
    again = load_image(out)
    assert again.pixels.shape == photo.shape
    assert mean_abs_diff(again.pixels, photo) < 4.0
    assert exif_of(out)[ORIENTATION] == 1


@pytest.mark.parametrize("name", ["a.jpg", "a.png", "a.webp", "a.tif"])
def test_exif_and_icc_survive(tmp_path: Path, photo: np.ndarray, srgb_icc: bytes, name: str) -> None:
    source = tmp_path / "source.jpg"
    PIL.Image.fromarray(photo).save(source, exif=camera_exif(1), icc_profile=srgb_icc)
    loaded = load_image(source)
    assert loaded.icc == srgb_icc

    out = tmp_path / name
    save_image(loaded, out)
    again = load_image(out)
    assert again.icc == srgb_icc
    exif = exif_of(out)
    assert exif[MAKE] == "Restora Camera Co" and exif[MODEL] == "RC-1"
    assert exif.get_ifd(EXIF_IFD)[TAKEN] == "2021:06:05 14:03:02"
    assert again.exif is not None


def test_exif_bytes_untouched_except_orientation(tmp_path: Path, photo: np.ndarray) -> None:
    source = tmp_path / "source.jpg"
    raw = camera_exif(6)
    PIL.Image.fromarray(photo).save(source, exif=raw)
    loaded = load_image(source)
    assert loaded.exif is not None and len(loaded.exif) == len(raw)
    differing = [i for i, (a, b) in enumerate(zip(loaded.exif, raw, strict=True)) if a != b]
    assert len(differing) == 1  # the low byte of the Orientation value, 6 -> 1


def test_grayscale_saved_as_grayscale(tmp_path: Path, photo: np.ndarray) -> None:
    gray = np.asarray(PIL.Image.fromarray(photo).convert("L"))
    for name in ("g.png", "g.jpg", "g.tif"):
        source = tmp_path / f"source-{name}"
        PIL.Image.fromarray(gray).save(source)
        loaded = load_image(source)
        assert loaded.mode == "L" and loaded.pixels.shape == (*gray.shape, 3)
        assert np.array_equal(loaded.pixels[..., 0], loaded.pixels[..., 2])
        out = tmp_path / name
        save_image(loaded, out)
        with PIL.Image.open(out) as im:
            assert im.mode == "L"
        if not name.endswith(".jpg"):
            np.testing.assert_array_equal(load_image(out).pixels[..., 1], gray)


@pytest.mark.parametrize("name", ["a.png", "a.webp", "a.tif"])
def test_rgba_alpha_bit_exact(tmp_path: Path, photo: np.ndarray, name: str) -> None:
    alpha = np.tile(np.linspace(0, 255, photo.shape[1]).astype(np.uint8), (photo.shape[0], 1))
    alpha[:5] = 0
    alpha[-5:] = 255
    source = tmp_path / "source.png"
    PIL.Image.fromarray(np.dstack([photo, alpha])).save(source)
    loaded = load_image(source)
    assert loaded.alpha is not None
    np.testing.assert_array_equal(loaded.alpha, alpha)

    out = tmp_path / name
    save_image(loaded, out, lossless=True)
    again = load_image(out)
    assert again.alpha is not None
    np.testing.assert_array_equal(again.alpha, alpha)
    visible = alpha > 0
    np.testing.assert_array_equal(again.pixels[visible], photo[visible])


def test_alpha_dropped_for_jpeg(tmp_path: Path, photo: np.ndarray) -> None:
    alpha = np.full(photo.shape[:2], 128, np.uint8)
    out = tmp_path / "a.jpg"
    save_image(Image(pixels=photo, alpha=alpha, mode="RGBA"), out)
    loaded = load_image(out)
    assert loaded.alpha is None and mean_abs_diff(loaded.pixels, photo) < 3.0


def test_palette_with_transparency_becomes_rgba(tmp_path: Path) -> None:
    im = PIL.Image.new("P", (6, 4), 1)
    im.putpalette([0, 0, 0, 200, 10, 20] + [0] * 762)
    im.putpixel((0, 0), 0)
    im.info["transparency"] = 0
    path = tmp_path / "p.png"
    im.save(path, transparency=0)
    loaded = load_image(path)
    assert loaded.alpha is not None
    assert loaded.alpha[0, 0] == 0 and loaded.alpha[1, 1] == 255
    assert tuple(loaded.pixels[1, 1]) == (200, 10, 20)


# --------------------------------------------------------------------------- 16-bit


def gradient16(channels: int) -> np.ndarray:
    rng = np.random.default_rng(7)
    values = rng.integers(0, 65536, (20, 30, channels), dtype=np.uint16)
    values[0, 0] = 65535
    values[0, 1] = 1  # would vanish at 8 bits
    return values


def write_16bit(path: Path, rgb: np.ndarray) -> None:
    """A 16-bit RGB file written by libraries independent of the engine's own writers."""
    if path.suffix == ".png":
        png.from_array(rgb.reshape(rgb.shape[0], -1), "RGB;16").save(path)
    else:
        import tifffile

        tifffile.imwrite(path, rgb, photometric="rgb")  # uncompressed, as most scanners write


@pytest.mark.parametrize("name", ["rgb16.png", "rgb16.tif"])
def test_16bit_rgb_kept(tmp_path: Path, name: str) -> None:
    rgb = gradient16(3)
    source = tmp_path / f"source-{name}"
    write_16bit(source, rgb)
    loaded = load_image(source)
    assert loaded.pixels.dtype == np.uint16
    np.testing.assert_array_equal(loaded.pixels, rgb)

    out = tmp_path / name
    save_image(loaded, out)
    again = load_image(out)
    assert again.pixels.dtype == np.uint16
    np.testing.assert_array_equal(again.pixels, rgb)


def test_16bit_rgba_png_is_a_standard_png(tmp_path: Path) -> None:
    rgba = gradient16(4)
    out = tmp_path / "rgba16.png"
    save_image(Image(pixels=rgba[..., :3].copy(), alpha=rgba[..., 3].copy()), out)
    columns, rows, data, info = png.Reader(filename=str(out)).read()
    assert (columns, rows, info["bitdepth"], info["planes"], info["alpha"]) == (30, 20, 16, 4, True)
    np.testing.assert_array_equal(np.vstack([np.asarray(row, np.uint16) for row in data]).reshape(20, 30, 4), rgba)


def test_16bit_rgba_tiff_keeps_alpha_and_icc(tmp_path: Path, srgb_icc: bytes) -> None:
    import tifffile

    rgba = gradient16(4)
    out = tmp_path / "rgba16.tif"
    save_image(Image(pixels=rgba[..., :3].copy(), alpha=rgba[..., 3].copy(), icc=srgb_icc), out)
    with tifffile.TiffFile(out) as tiff:
        page = tiff.pages.first
        np.testing.assert_array_equal(page.asarray(), rgba)
        assert page.tags["InterColorProfile"].value == srgb_icc
    again = load_image(out)
    np.testing.assert_array_equal(again.alpha, rgba[..., 3])
    assert again.icc == srgb_icc


def test_16bit_rgba_png_kept_with_metadata(tmp_path: Path, srgb_icc: bytes) -> None:
    rgba = gradient16(4)
    image = Image(pixels=rgba[..., :3].copy(), alpha=rgba[..., 3].copy(), exif=camera_exif(1), icc=srgb_icc)
    out = tmp_path / "rgba16.png"
    save_image(image, out)
    again = load_image(out)
    assert again.pixels.dtype == np.uint16 and again.alpha is not None
    np.testing.assert_array_equal(again.pixels, rgba[..., :3])
    np.testing.assert_array_equal(again.alpha, rgba[..., 3])
    assert again.icc == srgb_icc
    assert exif_of(out)[MAKE] == "Restora Camera Co"


@pytest.mark.parametrize("name", ["gray16.png", "gray16.tif"])
def test_16bit_gray_kept(tmp_path: Path, name: str) -> None:
    gray = gradient16(1)[..., 0]
    source = tmp_path / f"source-{name}"
    PIL.Image.fromarray(gray).save(source)
    loaded = load_image(source)
    assert loaded.pixels.dtype == np.uint16 and loaded.mode.startswith("I")
    np.testing.assert_array_equal(loaded.pixels[..., 2], gray)

    out = tmp_path / name
    save_image(loaded, out)
    with PIL.Image.open(out) as im:
        assert im.mode.startswith("I;16")
    np.testing.assert_array_equal(load_image(out).pixels[..., 0], gray)


def test_16bit_to_jpeg_rounds_to_8bit(tmp_path: Path) -> None:
    rgb = np.full((8, 8, 3), 257 * 200, np.uint16)
    out = tmp_path / "a.jpg"
    save_image(Image(pixels=rgb), out)
    loaded = load_image(out)
    assert loaded.pixels.dtype == np.uint8
    assert abs(int(loaded.pixels.mean()) - 200) <= 1


def test_to_uint8_rounds() -> None:
    values = np.array([0, 128, 129, 257, 385, 386, 65535], np.uint16)
    np.testing.assert_array_equal(to_uint8(values), np.rint(values / 257.0).astype(np.uint8))
    small = np.arange(256, dtype=np.uint8)
    assert to_uint8(small) is small


def test_from_uint8_like_keeps_16bit_detail() -> None:
    like = gradient16(3)
    eight = to_uint8(like)
    np.testing.assert_array_equal(from_uint8_like(eight, like), like)  # untouched = exact
    edited = eight.copy()
    edited[2, 3] = np.minimum(edited[2, 3], 250) + 5
    lifted = from_uint8_like(edited, like)
    assert lifted.dtype == np.uint16
    np.testing.assert_array_equal(to_uint8(lifted), edited)
    same = np.ones(like.shape[:2], bool)
    same[2, 3] = False
    np.testing.assert_array_equal(lifted[same], like[same])
    small = np.zeros((4, 4, 3), np.uint8)
    assert from_uint8_like(small, small).dtype == np.uint8
    assert from_uint8_like(np.full((2, 2, 3), 255, np.uint8), like).max() == 65535  # shape differs


# --------------------------------------------------------------------------- other sources


def test_cmyk_jpeg_loads_as_rgb(tmp_path: Path) -> None:
    rgb = np.zeros((16, 24, 3), np.uint8)
    rgb[:, :12] = (220, 30, 40)
    rgb[:, 12:] = (20, 60, 200)
    path = tmp_path / "cmyk.jpg"
    PIL.Image.fromarray(rgb).convert("CMYK").save(path, quality=95)
    with PIL.Image.open(path) as im:
        assert im.mode == "CMYK"
    loaded = load_image(path)
    assert loaded.mode == "CMYK" and loaded.pixels.shape == rgb.shape
    assert mean_abs_diff(loaded.pixels[:, 2:10], rgb[:, 2:10]) < 6.0
    assert mean_abs_diff(loaded.pixels[:, 14:22], rgb[:, 14:22]) < 6.0
    save_image(loaded, tmp_path / "out.jpg")
    with PIL.Image.open(tmp_path / "out.jpg") as im:
        assert im.mode == "RGB"


def test_unicode_emoji_path(tmp_path: Path, photo: np.ndarray) -> None:
    folder = tmp_path / "фото 写真 😀"
    folder.mkdir()
    path = folder / "Ölçü café 🎉.png"
    save_image(Image(pixels=photo), path)
    np.testing.assert_array_equal(load_image(path).pixels, photo)
    rgb16 = gradient16(3)
    path16 = folder / "深度 😀.png"
    save_image(Image(pixels=rgb16), path16)
    np.testing.assert_array_equal(load_image(path16).pixels, rgb16)


def test_upper_case_extension(tmp_path: Path, photo: np.ndarray) -> None:
    path = tmp_path / "IMG_0001.JPG"
    save_image(Image(pixels=photo), path)
    loaded = load_image(path)
    assert loaded.format == "JPEG" and mean_abs_diff(loaded.pixels, photo) < 3.0


def test_animated_gif_first_frame_and_warning(tmp_path: Path) -> None:
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255)]
    frames = [PIL.Image.new("RGB", (10, 8), colour) for colour in colours]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, loop=0)
    loaded = load_image(path)
    assert loaded.format == "GIF" and loaded.pixels.shape == (8, 10, 3)
    assert tuple(loaded.pixels[4, 5]) == (255, 0, 0)
    assert loaded.warnings == ("animated GIF: only the first of 3 frames was restored",)


def test_animated_webp_warns(tmp_path: Path) -> None:
    frames = [PIL.Image.new("RGB", (10, 8), (i * 60, 0, 0)) for i in range(4)]
    path = tmp_path / "anim.webp"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, lossless=True)
    loaded = load_image(path)
    assert loaded.warnings == ("animated WEBP: only the first of 4 frames was restored",)


# --------------------------------------------------------------------------- size limit


def png_declaring(width: int, height: int) -> bytes:
    """A tiny, well-formed PNG whose IHDR declares width x height (the IDAT holds one row only)."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return (
            struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit grayscale
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\x00" * (width + 1)))
        + chunk(b"IEND", b"")
    )


def test_decompression_bomb_refused_before_decoding(tmp_path: Path) -> None:
    path = tmp_path / "bomb.png"
    path.write_bytes(png_declaring(60000, 60000))
    assert path.stat().st_size < 2000
    with pytest.raises(ImageTooLargeError, match=r"60000x60000 \(3600 MP\), over the 178 MP limit") as info:
        load_image(path)
    assert "bomb.png" in str(info.value) and "\n" not in str(info.value)


def test_max_pixels_configurable(tmp_path: Path, photo: np.ndarray) -> None:
    path = tmp_path / "small.png"
    save_image(Image(pixels=photo), path)
    with pytest.raises(ImageTooLargeError, match="64x48"):
        load_image(path, max_pixels=1000)
    assert load_image(path, max_pixels=64 * 48).width == 64


# --------------------------------------------------------------------------- errors


def test_error_messages(tmp_path: Path, photo: np.ndarray) -> None:
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    text = tmp_path / "notes.jpg"
    text.write_text("Dear diary,\nthis is not a photo at all.\n", encoding="utf-8")
    noise = tmp_path / "noise.png"
    noise.write_bytes(np.random.default_rng(3).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    full = io.BytesIO()
    PIL.Image.fromarray(photo).save(full, "JPEG", quality=95)
    truncated_jpeg = tmp_path / "cut.jpg"
    truncated_jpeg.write_bytes(full.getvalue()[: len(full.getvalue()) // 2])
    full_png = io.BytesIO()
    PIL.Image.fromarray(photo).save(full_png, "PNG")
    truncated_png = tmp_path / "cut.png"
    truncated_png.write_bytes(full_png.getvalue()[: len(full_png.getvalue()) // 2])

    cases = {
        empty: "empty file",
        text: r"not an image \(looks like text\)",
        noise: "not an image: unknown format",
        truncated_jpeg: "truncated JPEG",
        truncated_png: "truncated PNG",
        tmp_path / "missing.png": "file not found",
        tmp_path: "is a folder",
    }
    for path, expected in cases.items():
        with pytest.raises(ImageError, match=expected) as info:
            load_image(path)
        message = str(info.value)
        assert str(path) in message and "\n" not in message
        assert not isinstance(info.value, ImageTooLargeError)


def test_permission_denied(tmp_path: Path, photo: np.ndarray, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "locked.png"
    save_image(Image(pixels=photo), path)
    if os.name == "posix" and os.geteuid() != 0:
        path.chmod(0)
    else:  # root (or Windows) reads anything: simulate the refusal where the file is opened

        def refuse(*args: object, **kwargs: object) -> None:
            raise PermissionError(13, "Permission denied")

        monkeypatch.setattr(imageio, "open", refuse, raising=False)
    try:
        with pytest.raises(ImageError, match="permission denied") as info:
            load_image(path)
        assert "locked.png" in str(info.value)
    finally:
        path.chmod(0o644)


def test_broken_body_maps_to_image_error(tmp_path: Path, photo: np.ndarray) -> None:
    data = io.BytesIO()
    PIL.Image.fromarray(photo).save(data, "PNG")
    corrupt = bytearray(data.getvalue())
    middle = len(corrupt) // 2
    corrupt[middle : middle + 64] = bytes(64)
    path = tmp_path / "corrupt.png"
    path.write_bytes(bytes(corrupt))
    with pytest.raises(ImageError, match=r"corrupt\.png"):
        load_image(path)


# --------------------------------------------------------------------------- atomic writes


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".part"))


def test_save_replaces_existing_file_whole(tmp_path: Path, photo: np.ndarray) -> None:
    out = tmp_path / "out.png"
    out.write_bytes(b"old")
    save_image(Image(pixels=photo), out)
    np.testing.assert_array_equal(load_image(out).pixels, photo)
    assert leftovers(tmp_path) == []
    if os.name == "posix":
        assert out.stat().st_mode & 0o044  # readable by others like any new file (umask permitting)


@pytest.mark.parametrize("suffix", [".jpg", ".png"])  # libjpeg-turbo's encoder, Pillow's
def test_encoder_failure_leaves_nothing(
    tmp_path: Path, photo: np.ndarray, monkeypatch: pytest.MonkeyPatch, suffix: str
) -> None:
    def broken_save(*args: object, **kwargs: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(PIL.Image.Image, "save", broken_save)
    monkeypatch.setattr(simplejpeg, "encode_jpeg", broken_save)
    out = tmp_path / f"out{suffix}"
    with pytest.raises(OutputError, match=rf"out\{suffix}"):
        save_image(Image(pixels=photo), out)
    assert not out.exists() and leftovers(tmp_path) == []


def test_replace_failure_leaves_no_part_and_keeps_old(
    tmp_path: Path, photo: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "out.png"
    out.write_bytes(b"previous version")

    def full_disk(src: object, dst: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(imageio.os, "replace", full_disk)
    with pytest.raises(OutputError, match=r"cannot write .*out.png: No space left on device"):
        save_image(Image(pixels=photo), out)
    assert out.read_bytes() == b"previous version"
    assert leftovers(tmp_path) == []


def test_write_failure_midway_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def failing_fsync(fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(imageio.os, "fsync", failing_fsync)
    target = tmp_path / "report.json"
    with pytest.raises(OutputError, match="Input/output error"):
        atomic_write_bytes(target, b"{}")
    assert not target.exists() and leftovers(tmp_path) == []


def test_atomic_write_into_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(OutputError, match="cannot write"):
        atomic_write_bytes(tmp_path / "nope" / "a.json", b"{}")


def test_atomic_write_bytes(tmp_path: Path) -> None:
    target = tmp_path / "report.json"
    atomic_write_bytes(target, b'{"ok": true}')
    atomic_write_bytes(target, b'{"ok": false}')
    assert target.read_bytes() == b'{"ok": false}' and leftovers(tmp_path) == []


# --------------------------------------------------------------------------- resize


def test_resize_image(photo: np.ndarray) -> None:
    alpha = np.full(photo.shape[:2], 200, np.uint8)
    image = Image(pixels=photo, alpha=alpha, exif=b"Exif\x00\x00", format="JPEG")
    up = resize_image(image, 2.0)
    assert up.pixels.shape == (96, 128, 3) and up.alpha is not None and up.alpha.shape == (96, 128)
    assert up.exif == image.exif and up.format == "JPEG"
    assert np.all(up.alpha == 200)
    down = resize_image(image, 0.5)
    assert down.pixels.shape == (24, 32, 3)
    np.testing.assert_allclose(down.pixels.mean(axis=(0, 1)), photo.mean(axis=(0, 1)), atol=1.0)
    deep = resize_image(Image(pixels=gradient16(3)), 1.5)
    assert deep.pixels.dtype == np.uint16 and deep.pixels.shape == (30, 45, 3)
    assert resize_image(image, 1.0) is image
    with pytest.raises(ValueError):
        resize_image(image, 0.0)


# --------------------------------------------------------------------------- JPEGs through libjpeg-turbo


@pytest.mark.parametrize("gray", [False, True])
def test_jpegs_go_through_libjpeg_turbo_with_the_same_pixels_and_metadata(
    tmp_path: Path, astronaut: np.ndarray, srgb_icc: bytes, gray: bool
) -> None:
    source = tmp_path / "big.jpg"
    picture = PIL.Image.fromarray(astronaut).convert("L") if gray else PIL.Image.fromarray(astronaut)
    picture.save(source, quality=92, exif=camera_exif(6))
    with PIL.Image.open(source) as im:
        pillow_pixels = np.asarray(ImageOps.exif_transpose(im).convert("RGB"))
    loaded = load_image(source)
    assert loaded.pixels.flags.writeable, "decoded straight into a numpy array of its own"
    np.testing.assert_array_equal(loaded.pixels, pillow_pixels)  # same decoder settings as Pillow
    assert loaded.mode == ("L" if gray else "RGB") and loaded.width == 512

    out = tmp_path / "out.jpg"
    big_icc = srgb_icc * 40  # over one APP2 segment: the profile is split into chunks
    save_image(replace(loaded, icc=None if gray else big_icc), out, quality=95)
    with PIL.Image.open(out) as written:
        assert written.mode == ("L" if gray else "RGB")
        assert written.getexif()[MAKE] == "Restora Camera Co" and written.getexif()[0x0112] == 1
        if not gray:
            assert written.info["icc_profile"] == big_icc
        again = np.asarray(written.convert("RGB")).astype(int)
    assert np.abs(again - loaded.pixels).mean() < 1.5, "quality 95, 4:4:4"


def test_a_jpeg_is_decoded_once(tmp_path: Path, astronaut: np.ndarray, monkeypatch: pytest.MonkeyPatch) -> None:
    """Pillow's decoder does not run before libjpeg-turbo's: for big photos it did, a second full
    decode (about 0.6 s and a 190 MB RGBX frame held beside the array at 48 MP)."""
    source = tmp_path / "photo.jpg"
    PIL.Image.fromarray(astronaut).save(source, quality=90)
    pillow_decodes: list[str] = []
    original = PIL.ImageFile.ImageFile.load

    def counting_load(self: PIL.ImageFile.ImageFile) -> object:
        if self.tile:  # tiles left means this call decodes; later calls return the loaded frame
            pillow_decodes.append(self.format or "")
        return original(self)

    monkeypatch.setattr(PIL.ImageFile.ImageFile, "load", counting_load)
    loaded = load_image(source)
    assert pillow_decodes == [] and loaded.pixels.shape == (512, 512, 3)

    # A damaged JPEG goes down Pillow's path and gets its specific error.
    data = source.read_bytes()
    damaged = tmp_path / "damaged.jpg"
    damaged.write_bytes(data[: len(data) // 3])
    with pytest.raises(ImageError, match=r"damaged\.jpg: truncated JPEG"):
        load_image(damaged)
    assert pillow_decodes == ["JPEG"]
