"""Resampling (engine.resample): OpenCV's conventions, replicated borders, strips on big photos."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image as PILImage

from engine import resample
from engine.resample import invert_affine, premultiply, resize, warp_affine, warp_premultiplied


def bilinear_reference(pixels: np.ndarray, matrix: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Textbook bilinear sampling with pixel centres at integers and edge replication (float64)."""
    inverse = invert_affine(matrix)
    ys, xs = np.mgrid[0 : size[1], 0 : size[0]].astype(np.float64)
    sx = inverse[0, 0] * xs + inverse[0, 1] * ys + inverse[0, 2]
    sy = inverse[1, 0] * xs + inverse[1, 1] * ys + inverse[1, 2]
    height, width = pixels.shape[:2]
    x0, y0 = np.floor(sx).astype(int), np.floor(sy).astype(int)
    fx, fy = (sx - x0)[..., None], (sy - y0)[..., None]

    def at(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        return pixels[np.clip(y, 0, height - 1), np.clip(x, 0, width - 1)].astype(np.float64)

    top = at(x0, y0) * (1 - fx) + at(x0 + 1, y0) * fx
    bottom = at(x0, y0 + 1) * (1 - fx) + at(x0 + 1, y0 + 1) * fx
    return top * (1 - fy) + bottom * fy


@pytest.mark.parametrize(
    "matrix",
    [
        [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]],
        [[0.9, 0.2, -30.5], [-0.2, 0.9, 40.25]],  # rotated, shrunk, reaching outside the photo
        [[2.5, 0.0, -400.0], [0.0, 2.5, -300.0]],  # enlarged
    ],
)
def test_warp_matches_bilinear_sampling_with_replicated_border(astronaut: np.ndarray, matrix: list) -> None:
    m = np.array(matrix)
    warped = warp_affine(astronaut, m, (300, 280), border="replicate")
    expected = bilinear_reference(astronaut, m, (300, 280))
    assert warped.shape == (280, 300, 3) and warped.dtype == np.uint8
    difference = np.abs(warped.astype(np.float64) - expected)
    assert difference.max() <= 1.5, "within Pillow's fixed-point rounding of the exact value"


def test_constant_border_fills_outside_and_blends_at_the_edge() -> None:
    mask = np.ones((64, 64), np.float32)
    shift = np.array([[1.0, 0.0, 10.5], [0.0, 1.0, 0.0]])  # half a pixel past column 10
    warped = warp_affine(mask, shift, (100, 64), value=0.0)
    assert warped.dtype == np.float32
    assert np.all(warped[:, :10] == 0.0) and np.all(warped[:, 12:74] == pytest.approx(1.0))
    assert 0.0 < warped[5, 10] < 1.0 and np.all(warped[:, 76:] == 0.0)
    far = warp_affine(mask, np.array([[1.0, 0, 5000.0], [0, 1.0, 0]]), (20, 20), value=0.25)
    assert np.all(far == 0.25)


def test_premultiplied_warp_carries_a_mask_as_alpha(astronaut: np.ndarray) -> None:
    """Colour comes back multiplied by the warped alpha; alpha is the warped mask, transparent outside."""
    ys, xs = np.mgrid[0:200, 0:200]
    alpha = np.clip(255 - np.hypot(ys - 100, xs - 100) * 3.0, 0, 255).astype(np.uint8)  # a soft disc
    rgba = np.dstack([astronaut[:200, 150:350], alpha])
    m = np.array([[0.9, 0.2, 20.5], [-0.2, 0.9, 60.25]])  # rotated, shrunk, shifted
    image = warp_premultiplied(premultiply(rgba[..., :3], alpha), m, (260, 260))
    assert image is not None and image.mode == "RGBa"
    warped = np.asarray(image)
    assert warped.shape == (260, 260, 4) and warped.dtype == np.uint8
    # The disc is transparent at the patch's edges, so the reference's replicated border agrees.
    expected_alpha = bilinear_reference(alpha[..., None], m, (260, 260))[..., 0]
    expected_colour = bilinear_reference(rgba[..., :3] * (alpha[..., None] / 255.0), m, (260, 260))
    assert np.abs(warped[..., 3] - expected_alpha).max() <= 1.5
    assert np.abs(warped[..., :3] - expected_colour).max() <= 2.5
    assert warped[:5, :5].max() == 0 and warped[..., 3].max() >= 250
    assert warp_premultiplied(premultiply(rgba[..., :3], alpha), np.array([[1.0, 0, 900.0], [0, 1.0, 0]]),
                              (40, 40)) is None  # the footprint misses the patch: nothing to paste
    with pytest.raises(ValueError, match="uint8"):
        premultiply(astronaut.astype(np.float32), alpha)


def test_warp_reads_only_the_footprint() -> None:
    # A 48 MP photo is never copied whole: a small warp of a read-only view must not need it.
    photo = np.zeros((6000, 8000, 3), np.uint8)
    photo[3000:3100, 4000:4100] = 200
    photo.flags.writeable = False
    crop = warp_affine(photo, np.array([[1.0, 0, -3950.0], [0, 1.0, -2950.0]]), (200, 200), border="replicate")
    assert crop[50:150, 50:150].min() == 200 and crop[:40].max() == 0


def test_area_resize_averages(astronaut: np.ndarray) -> None:
    half = resize(astronaut, (256, 256), "area")
    blocks = astronaut.reshape(256, 2, 256, 2, 3).mean(axis=(1, 3))
    assert np.abs(half.astype(float) - blocks).max() <= 1.0


@pytest.mark.parametrize("dtype", [np.uint16, np.float32])
def test_resize_keeps_the_dtype_and_range(astronaut: np.ndarray, dtype: type) -> None:
    scale = 257 if dtype == np.uint16 else 1 / 255
    deep = (astronaut.astype(np.float64) * scale).astype(dtype)
    small = resize(deep, (128, 100), "area")
    assert small.dtype == dtype and small.shape == (100, 128, 3)
    eight = resize(astronaut, (128, 100), "area").astype(np.float64) * scale
    assert np.abs(small.astype(np.float64) - eight).max() <= 1.01 * scale


@pytest.mark.parametrize("interpolation", ["area", "linear", "cubic", "lanczos"])
def test_big_photos_resize_in_strips_exactly_as_whole(
    astronaut: np.ndarray, interpolation: resample.Interpolation, monkeypatch: pytest.MonkeyPatch
) -> None:
    photo = np.tile(astronaut, (3, 2, 1))[:1500, :1001]
    whole = np.asarray(PILImage.fromarray(photo).resize((313, 470), resample._FILTERS[interpolation]))
    monkeypatch.setattr(resample, "_STRIP_PIXELS", 100_000)
    monkeypatch.setattr(resample, "_STRIP_OUTPUT_ROWS", 64)
    strips = resize(photo, (313, 470), interpolation)
    assert np.abs(strips.astype(int) - whole).max() <= 1


def test_resize_rejects_an_empty_size(astronaut: np.ndarray) -> None:
    with pytest.raises(ValueError, match="at least 1"):
        resize(astronaut, (0, 10))


def test_a_reduced_premultiplied_source_warps_to_the_same_place() -> None:
    """Reducing the source first (antialiasing) must not move what it shows: matrices stay in the
    source's own pixels and a bright square lands where the full-size warp puts it."""
    from engine.resample import antialias_reduction

    rgb = np.zeros((512, 512, 3), np.uint8)
    rgb[256:320, 256:320] = 255
    alpha = np.full((512, 512), 255, np.uint8)
    m = np.array([[0.2, 0.0, 10.0], [0.0, 0.2, 20.0]])  # source -> destination, a 5x reduction
    assert antialias_reduction(m) == 3 and antialias_reduction(np.array([[0.6, 0, 0], [0, 0.6, 0]])) == 1

    def centroid(reduce: int) -> np.ndarray:
        image = warp_premultiplied(premultiply(rgb, alpha, reduce=reduce), m, (120, 120))
        assert image is not None
        grey = np.asarray(image)[..., 0].astype(float)
        ys, xs = np.mgrid[0:120, 0:120]
        return np.array([(xs * grey).sum(), (ys * grey).sum()]) / grey.sum()

    expected = np.array([0.2 * 287.5 + 10.0, 0.2 * 287.5 + 20.0])  # the square's centre, mapped
    # (Without the half-pixel offset of the reduced grid the square lands 0.22 px off.)
    assert np.abs(centroid(1) - expected).max() < 0.05
    assert np.abs(centroid(3) - expected).max() < 0.05


def test_a_warp_that_shrinks_a_lot_does_not_alias(monkeypatch: pytest.MonkeyPatch) -> None:
    """A big face aligned down to its crop: 1 px stripes shrunk 4x must come out as their mean, grey,
    not as whole black or white bands (what point sampling, two pixels read of every four, gives)."""
    stripes = np.zeros((2048, 2048, 3), np.uint8)
    stripes[:, ::2] = 255
    m = np.array([[0.25, 0.0, 0.0], [0.0, 0.25, 0.0]])
    crop = warp_affine(stripes, m, (512, 512), border="replicate")[8:-8, 8:-8].astype(float)
    assert np.abs(crop - 127.5).max() <= 3
    monkeypatch.setattr(resample, "antialias_reduction", lambda _matrix: 1)
    aliased = warp_affine(stripes, m, (512, 512), border="replicate")[8:-8, 8:-8].astype(float)
    assert np.abs(aliased - 127.5).max() > 100


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
def test_an_antialiased_warp_lands_where_the_plain_warp_does(dtype: type) -> None:
    """Reduced first, the source keeps its geometry: a bright square's centroid stays put (rotated,
    a 5x shrink, reaching past the photo's edge, for every dtype)."""
    top = 1.0 if dtype == np.float32 else float(np.iinfo(dtype).max)
    photo = np.zeros((700, 900, 3), dtype)
    photo[300:420, 500:620] = top
    angle = np.deg2rad(20)
    m = 0.2 * np.array([[np.cos(angle), -np.sin(angle), 0.0], [np.sin(angle), np.cos(angle), 0.0]])
    m[:, 2] = [-40.0, 30.0]
    assert resample.antialias_reduction(m) == 3
    warped = warp_affine(photo, m, (160, 160)).astype(np.float64)[..., 1]
    assert warped.max() > 0.9 * top
    ys, xs = np.mgrid[0:160, 0:160]
    centroid = np.array([(xs * warped).sum(), (ys * warped).sum()]) / warped.sum()
    expected = m[:, :2] @ np.array([559.5, 359.5]) + m[:, 2]
    assert np.abs(centroid - expected).max() < 0.1
    assert warp_affine(photo, m, (160, 160)).dtype == dtype


@pytest.mark.parametrize("degrees", [0.0, 7.0, 90.0, 143.0])
def test_an_upright_premultiplied_crop_pastes_where_and_as_the_direct_warp_does(
    astronaut: np.ndarray, degrees: float
) -> None:
    """A crop enlarged 3.2x through premultiply_upright (turned at its own scale, then resized): the
    same picture as the one bilinear warp, a bright square at the same place, colour never above alpha."""
    from engine.resample import premultiply_upright

    crop = astronaut[::2, ::2] // 2  # 256 px of real detail, none of it as bright as the square
    crop[100:130, 140:170] = 255
    ys, xs = np.mgrid[0:256, 0:256]
    alpha = np.clip((127.5 - np.maximum(np.abs(ys - 127.5), np.abs(xs - 127.5))) * 4, 0, 255).astype(np.uint8)
    angle, scale = np.deg2rad(degrees), 3.2
    m = scale * np.array([[np.cos(angle), -np.sin(angle), 0.0], [np.sin(angle), np.cos(angle), 0.0]])
    m[:, 2] = np.array([560.3, 540.6]) - m[:, :2] @ np.array([127.5, 127.5])  # centred in 1100 px
    direct = warp_premultiplied(premultiply(crop, alpha), m, (1100, 1100))
    turned = premultiply_upright(crop, alpha, m)
    assert direct is not None and turned is not None
    source, left = turned
    assert left[0, 1] == 0.0 and left[1, 0] == 0.0 and left[0, 0] == pytest.approx(scale)
    upright_image = warp_premultiplied(source, left, (1100, 1100))
    assert upright_image is not None
    a, b = np.asarray(direct).astype(float), np.asarray(upright_image).astype(float)
    assert np.abs(a - b).mean() < 1.0 and np.all(b[..., :3] <= b[..., 3:])

    def square_centre(image: np.ndarray) -> np.ndarray:
        bright = (image[..., :3].min(axis=-1) >= 250) & (image[..., 3] >= 250)
        yy, xx = np.nonzero(bright)
        return np.array([xx.mean(), yy.mean()])

    expected = m[:, :2] @ np.array([154.5, 114.5]) + m[:, 2]
    assert np.abs(square_centre(a) - expected).max() < 0.5
    assert np.abs(square_centre(b) - expected).max() < 0.5


def test_premultiply_upright_is_only_for_enlarging_similarities(astronaut: np.ndarray) -> None:
    from engine.resample import UPRIGHT_MIN_SCALE, premultiply_upright

    crop, alpha = astronaut[:64, :64], np.full((64, 64), 255, np.uint8)
    small = np.array([[UPRIGHT_MIN_SCALE * 0.9, 0.0, 0.0], [0.0, UPRIGHT_MIN_SCALE * 0.9, 0.0]])
    sheared = np.array([[4.0, 1.0, 0.0], [0.0, 4.0, 0.0]])
    assert premultiply_upright(crop, alpha, small) is None
    assert premultiply_upright(crop, alpha, sheared) is None
    assert premultiply_upright(crop, alpha, small * 2) is not None


def test_block_means_in_strips_equal_one_reduce_of_the_whole() -> None:
    rng = np.random.default_rng(3)
    tall = rng.integers(0, 256, (1000, 203, 3), dtype=np.uint8)  # several strips, partial last blocks
    whole = np.asarray(PILImage.fromarray(tall).reduce(3))
    assert np.array_equal(resample.block_means(tall, 3), whole)
    assert resample.block_means(tall, 1) is tall


@pytest.mark.parametrize("shape", [(600, 800, 3), (600, 800), (90, 120, 3)])
def test_an_area_resize_by_a_whole_ratio_is_the_box_filters_block_mean(shape: tuple[int, ...]) -> None:
    rng = np.random.default_rng(5)
    photo = rng.integers(0, 256, shape, dtype=np.uint8)
    height, width = shape[0] // 5, shape[1] // 5
    box = np.asarray(PILImage.fromarray(photo).resize((width, height), PILImage.Resampling.BOX))
    reduced = resize(photo, (width, height), "area")
    assert reduced.shape == box.shape and np.abs(reduced.astype(int) - box).max() <= 1
    assert resize(photo.astype(np.uint16) * 257, (width, height), "area").dtype == np.uint16
