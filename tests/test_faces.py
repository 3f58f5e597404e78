"""Alignment, paste-back, feathering and colour matching on the real astronaut portrait."""

from __future__ import annotations

import numpy as np
import pytest

import engine.faces as facelib
from engine.faces import (
    Face,
    align_face,
    color_match,
    content_crop_size,
    crop_size_for,
    estimate_alignment,
    face_region,
    feather_mask,
    fine_detail_ratio,
    paste_area,
    paste_back,
    scale_matrix,
    select_faces,
    template_points,
)
from engine.resample import resize

# Hand-placed on skimage.data.astronaut(): eyes, nose tip, mouth corners.
ASTRONAUT_LANDMARKS = np.array([[204, 103], [248, 104], [226, 128], [206, 151], [245, 152]], np.float32)


def astronaut_face() -> Face:
    return Face((178.0, 55.0, 273.0, 180.0), ASTRONAUT_LANDMARKS.copy(), 0.99)


def test_alignment_maps_landmarks_onto_the_template() -> None:
    for template, size in (("ffhq", 512), ("ffhq", 256), ("arcface", 128)):
        matrix = estimate_alignment(ASTRONAUT_LANDMARKS, template, size)
        mapped = ASTRONAUT_LANDMARKS @ matrix[:, :2].T + matrix[:, 2]
        # A similarity transform cannot fit five points exactly; a few pixels at 512 is right.
        assert np.abs(mapped - template_points(template, size)).max() < size * 0.03


def test_paste_back_of_the_untouched_crop_changes_nothing_visible(astronaut: np.ndarray) -> None:
    aligned = align_face(astronaut, astronaut_face(), 512)
    out = paste_back(astronaut, aligned.crop, aligned.matrix)
    x1, y1, x2, y2 = paste_area(aligned.matrix, 512, astronaut.shape)  # type: ignore[misc]
    outside = np.ones(astronaut.shape[:2], bool)
    outside[y1:y2, x1:x2] = False
    assert np.array_equal(out[outside], astronaut[outside]), "pixels outside the face box must not change"
    # Inside, a down-and-up resample of the same pixels: tiny differences only.
    assert np.abs(out.astype(int) - astronaut).mean() < 0.5
    assert out.dtype == astronaut.dtype


def test_paste_back_changes_the_face_and_feathers_the_edge(astronaut: np.ndarray) -> None:
    aligned = align_face(astronaut, astronaut_face(), 512)
    white = np.full_like(aligned.crop, 255)
    out = paste_back(astronaut, white, aligned.matrix)
    nose = ASTRONAUT_LANDMARKS[2].astype(int)
    assert (out[nose[1], nose[0]] == 255).all(), "the centre of the face takes the pasted crop"
    x2 = paste_area(aligned.matrix, 512, astronaut.shape)[2]  # type: ignore[index]
    # Walking out from the nose to the box edge the paste weight only falls: no hard seam.
    row = out[nose[1], nose[0] : x2].astype(float).mean(axis=1)
    weight = (row - astronaut[nose[1], nose[0] : x2].astype(float).mean(axis=1))
    assert weight[0] > weight[-1]
    steps = np.abs(np.diff(out[nose[1], nose[0] : x2].astype(float).mean(axis=1)))
    assert steps.max() < 60, "a seam would show as one big jump"


def test_paste_back_keeps_16_bit(astronaut: np.ndarray) -> None:
    deep = astronaut.astype(np.uint16) * 257
    aligned = align_face(astronaut, astronaut_face(), 256)
    out = paste_back(deep, aligned.crop, aligned.matrix)
    assert out.dtype == np.uint16
    assert np.abs(out.astype(np.int64) - deep).mean() < 0.5 * 257


def test_face_touching_the_border_is_handled(astronaut: np.ndarray) -> None:
    shifted = ASTRONAUT_LANDMARKS - np.array([200, 95], np.float32)  # eyes near the top-left corner
    crop_image = astronaut[95:, 200:].copy()
    face = Face((-22.0, -40.0, 73.0, 85.0), shifted, 0.9)
    aligned = align_face(crop_image, face, 512)
    assert aligned.crop.shape == (512, 512, 3)
    out = paste_back(crop_image, aligned.crop, aligned.matrix)
    assert out.shape == crop_image.shape


def test_feather_mask_is_one_inside_zero_at_edges() -> None:
    mask = feather_mask(512)
    assert mask[256, 256] == pytest.approx(1.0, abs=1e-3)
    assert mask[0, 0] == pytest.approx(0.0, abs=1e-3) and mask[0, 256] < 0.01
    profile = mask[256, :256]
    assert (np.diff(profile) >= -1e-6).all(), "the mask rises monotonically towards the centre"


def test_color_match_moves_colour_towards_the_reference(astronaut: np.ndarray) -> None:
    from skimage.color import rgb2lab  # an independent colour measure: CIE Lab, not the match's YCbCr

    aligned = align_face(astronaut, astronaut_face(), 256)
    tinted = np.clip(aligned.crop.astype(int) + np.array([40, -20, -20]), 0, 255).astype(np.uint8)
    matched = color_match(tinted, aligned.crop)
    ref = rgb2lab(aligned.crop).reshape(-1, 3).mean(0)
    before = np.abs(rgb2lab(tinted).reshape(-1, 3).mean(0) - ref).sum()
    after = np.abs(rgb2lab(matched).reshape(-1, 3).mean(0) - ref).sum()
    assert after < before * 0.25


def test_paste_back_blends_the_warped_crop_through_the_feather(astronaut: np.ndarray) -> None:
    """The one-pass premultiplied paste equals warping crop and mask apart and blending in float."""
    from engine.resample import invert_affine, warp_affine

    aligned = align_face(astronaut, astronaut_face(), 256)
    restored = np.ascontiguousarray(255 - aligned.crop)  # a crop that differs everywhere
    pasted = paste_back(astronaut, restored, aligned.matrix, strength=0.8)
    inverse = invert_affine(aligned.matrix)
    size = astronaut.shape[1], astronaut.shape[0]
    weight = warp_affine(feather_mask(256), inverse, size, value=0.0)[..., None] * 0.8
    crop = warp_affine(restored, inverse, size, border="replicate").astype(np.float64)
    expected = astronaut * (1.0 - weight) + crop * weight
    assert np.abs(pasted - expected).max() <= 2.5
    changed = np.abs(pasted.astype(int) - astronaut).max(axis=2) > 0
    assert changed[ASTRONAUT_LANDMARKS[2, 1].astype(int), ASTRONAUT_LANDMARKS[2, 0].astype(int)]
    assert not changed[-100:].any() and not changed[:, -100:].any(), "away from the face nothing moves"


def test_paste_strength_zero_keeps_the_photo_and_half_is_in_between(astronaut: np.ndarray) -> None:
    aligned = align_face(astronaut, astronaut_face(), 256)
    white = np.full_like(aligned.crop, 255)
    assert np.array_equal(paste_back(astronaut, white, aligned.matrix, strength=0.0), astronaut)
    nose = ASTRONAUT_LANDMARKS[2].astype(int)
    half = paste_back(astronaut, white, aligned.matrix, strength=0.5)[nose[1], nose[0]].astype(int)
    expected = (astronaut[nose[1], nose[0]].astype(int) + 255) / 2
    assert np.abs(half - expected).max() <= 1


def test_scale_matrix_matches_an_upscaled_image(astronaut: np.ndarray) -> None:
    matrix = estimate_alignment(ASTRONAUT_LANDMARKS, "ffhq", 512)
    doubled = scale_matrix(matrix, 2.0)
    point = ASTRONAUT_LANDMARKS[0]
    assert np.allclose(matrix[:, :2] @ point + matrix[:, 2], doubled[:, :2] @ (point * 2) + doubled[:, 2], atol=1e-3)


def test_select_faces_by_size_and_count() -> None:
    def face(size: float) -> Face:
        return Face((0.0, 0.0, size, size), np.zeros((5, 2), np.float32), 0.9)

    faces = [face(10), face(40), face(20)]
    assert [f.size for f in select_faces(faces, min_size=16)] == [40, 20]
    assert [f.size for f in select_faces(faces, only_largest=True)] == [40]
    assert [f.size for f in select_faces(faces, max_faces=2)] == [40, 20]


def test_paste_back_into_a_much_smaller_face_does_not_alias(monkeypatch: pytest.MonkeyPatch) -> None:
    """A 512 px crop of 1 px stripes pasted at a quarter of its size must come out as their mean
    grey: a bilinear warp alone samples every fourth column, all black or all white."""
    import engine.faces as facelib

    stripes = np.zeros((512, 512, 3), np.uint8)
    stripes[:, 1::2] = 255
    photo = np.full((300, 300, 3), 128, np.uint8)
    # photo -> crop: a 128 px face at (80, 80)
    matrix = np.array([[4.0, 0.0, -4.0 * 80], [0.0, 4.0, -4.0 * 80]], np.float32)
    centre = (slice(112, 176), slice(112, 176))  # where the feather is 1
    pasted = paste_back(photo, stripes, matrix)[centre].astype(float)
    assert np.abs(pasted - 127.5).max() <= 3.0
    monkeypatch.setattr(facelib, "antialias_reduction", lambda _matrix: 1)  # the warp alone
    aliased = paste_back(photo, stripes, matrix)[centre].astype(float)
    assert np.abs(aliased - 127.5).max() > 100


def test_paste_back_into_a_much_bigger_face_matches_the_plain_blend(astronaut: np.ndarray) -> None:
    """A 128 px crop pasted 4x enlarged goes through premultiply_upright (turned, then resized): the
    photo must look as the one-warp float blend makes it, with nothing moved away from the face."""
    from engine.resample import UPRIGHT_MIN_SCALE, invert_affine, warp_affine

    photo = np.ascontiguousarray(np.repeat(np.repeat(astronaut, 4, axis=0), 4, axis=1)[:1400, :1400])
    aligned = align_face(photo, astronaut_face().scaled(4.0), 128)
    inverse = invert_affine(aligned.matrix)
    assert np.hypot(inverse[0, 0], inverse[1, 0]) > UPRIGHT_MIN_SCALE  # the upright path
    restored = np.ascontiguousarray(255 - aligned.crop)
    pasted = paste_back(photo, restored, aligned.matrix)
    size = photo.shape[1], photo.shape[0]
    weight = warp_affine(feather_mask(128), inverse, size, value=0.0)[..., None]
    crop = warp_affine(restored, inverse, size, border="replicate").astype(np.float64)
    expected = photo * (1.0 - weight) + crop * weight
    difference = np.abs(pasted - expected)
    assert difference.mean() < 0.5 and np.percentile(difference, 99.9) < 12
    changed = np.abs(pasted.astype(int) - photo).max(axis=2) > 0
    assert not changed[weight[..., 0] == 0.0].any(), "outside the feather nothing moves"


def _crop_centre_in(matrix: np.ndarray) -> tuple[int, int]:
    """The photo pixel (row, column) at the centre of a 128 px crop, where its feather is 1."""
    from engine.resample import invert_affine

    x, y = invert_affine(matrix) @ np.array([63.5, 63.5, 1.0])
    return round(y), round(x)


def _big_face_photo(astronaut: np.ndarray, dtype: type = np.uint8) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A photo with fine texture and the astronaut's face 4x bigger than a 128 px crop of it."""
    rng = np.random.default_rng(7)
    photo = np.repeat(np.repeat(astronaut, 4, axis=0), 4, axis=1)[:1400, :1400].astype(np.int16)
    photo = np.clip(photo + rng.integers(-12, 13, photo.shape), 0, 255).astype(np.uint8)  # pixel-fine grain
    aligned = align_face(photo, astronaut_face().scaled(4.0), 128)
    if dtype == np.uint16:
        return photo.astype(np.uint16) * 257, aligned.crop, aligned.matrix
    return photo, aligned.crop, aligned.matrix


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_paste_back_into_a_bigger_face_keeps_the_photos_own_detail(astronaut: np.ndarray, dtype: type) -> None:
    """Given the crop the restorer saw, a paste that enlarges the crop adds only the restorer's change:
    a crop it left alone leaves the photo (and its pixel-fine grain) exactly as it was, where pasting
    the whole enlarged crop smooths the grain away; a uniform change of +30 comes out as +30, and
    nothing moves outside the crop."""
    photo, crop, matrix = _big_face_photo(astronaut, dtype)
    assert facelib.keeps_photo_detail(matrix)
    unchanged = paste_back(photo, crop, matrix, original_crop=crop)
    assert np.array_equal(unchanged, photo)
    scale = 257 if dtype == np.uint16 else 1
    row, column = _crop_centre_in(matrix)
    centre = (slice(row - 100, row + 100), slice(column - 100, column + 100))
    smoothed = paste_back(photo, crop, matrix)[centre].astype(float)
    assert np.abs(smoothed - photo[centre]).mean() > 4 * scale, "the enlarged crop loses the grain"
    seen = crop // 2  # a crop the restorer saw, and its output 30 levels brighter everywhere
    brighter = seen + np.uint8(30)
    outside = paste_back(photo, brighter, matrix, original_crop=seen)
    expected = np.clip(photo[row, column].astype(float) + 30 * scale, 0, 255 * scale)
    assert np.abs(outside[row, column] - expected).max() <= 1.0 * scale
    from engine.resample import invert_affine, warp_affine

    feather = warp_affine(feather_mask(128), invert_affine(matrix), (photo.shape[1], photo.shape[0]), value=0.0)
    assert (feather == 0.0).mean() > 0.3 and np.array_equal(outside[feather == 0.0], photo[feather == 0.0])


def test_big_changes_keep_their_size_and_shrinking_pastes_take_the_whole_crop(astronaut: np.ndarray) -> None:
    photo, crop, matrix = _big_face_photo(astronaut)
    photo //= 4  # dark enough that +180 does not clip
    dark = (crop // 4).astype(np.uint8)  # a change of 180 levels: coded at 2 levels per step
    pasted = paste_back(photo, dark + np.uint8(180), matrix, original_crop=dark)
    row, column = _crop_centre_in(matrix)
    expected = np.clip(photo[row, column].astype(int) + 180, 0, 255)
    assert np.abs(pasted[row, column].astype(int) - expected).max() <= 2
    small = align_face(astronaut, astronaut_face(), 512)  # the 512 px crop shrinks into the photo
    assert not facelib.keeps_photo_detail(small.matrix)
    restored = np.ascontiguousarray(255 - small.crop)
    assert np.array_equal(paste_back(astronaut, restored, small.matrix, original_crop=small.crop),
                          paste_back(astronaut, restored, small.matrix))


def test_jpeg_blockiness_finds_the_8px_grid_wherever_it_lies(astronaut: np.ndarray) -> None:
    """About 1 without blocks, a little more at JPEG 90, several times that at JPEG 5; the same for a
    JPEG cropped after compression (its grid off the origin); a box is measured on its middle."""
    from tests.helpers import decoded_jpeg as _jpeg

    big = resize(astronaut, (2560, 2560), "cubic")
    face = (1000.0, 330.0, 1460.0, 790.0)  # the astronaut's face, 5x
    clean, fine, blocky = (facelib.jpeg_blockiness(p, face) for p in (big, _jpeg(big, 90), _jpeg(big, 5)))
    assert clean < 1.1 and 1.05 < fine < 1.5 and blocky > 2 * facelib.BLOCKY_FACE
    shifted = _jpeg(big, 5)[3:, 5:]
    moved = (face[0] - 5, face[1] - 3, face[2] - 5, face[3] - 3)
    assert facelib.jpeg_blockiness(shifted, moved) == pytest.approx(blocky, rel=0.02)
    assert facelib.jpeg_blockiness(_jpeg(big, 5), (0.0, 0.0, 40.0, 40.0)) == 0.0, "too small to tell"


def test_small_faces_get_the_smallest_crop_that_oversamples_them_three_times() -> None:
    sizes = (256, 320, 384, 448, 512)
    assert [crop_size_for(region, sizes) for region in (40, 85.3, 100, 128, 150, 160, 2000)] == [
        256, 256, 320, 384, 512, 512, 512,
    ]
    assert crop_size_for(40, (512,)) == 512  # a fixed-size model: always its size
    # --upscale 4: the crop holds at least the output's face (100 px -> 400 px), and 3x still holds.
    assert crop_size_for(100, sizes, upscale=4) == 448 and crop_size_for(40, sizes, upscale=2) == 256


def test_a_crop_enlarged_8x_is_restored_at_half_size_and_sharper_ones_at_their_own(astronaut: np.ndarray) -> None:
    crop = align_face(astronaut, astronaut_face(), 512).crop

    def enlarged(factor: int, grain: float = 0.0) -> np.ndarray:
        big = resize(resize(crop, (512 // factor, 512 // factor), "area"), (512, 512), "cubic").astype(np.float32)
        noise = np.random.default_rng(factor).normal(0.0, grain, big.shape) if grain else 0.0
        return np.clip(np.rint(big + noise), 0, 255).astype(np.uint8)

    sizes = (256, 384, 512)
    ratios = [fine_detail_ratio(c) for c in (crop, enlarged(2), enlarged(4), enlarged(8), enlarged(8, grain=6.0))]
    assert min(ratios[:3]) > facelib.ENLARGED_DETAIL_RATIO > max(ratios[3:]), ratios
    assert [content_crop_size(c, sizes) for c in (crop, enlarged(4), enlarged(8), enlarged(8, 6.0))] == [
        512, 512, 256, 256,
    ]
    assert content_crop_size(enlarged(8), (512,)) == 512, "a fixed-size model: its size"
    at_384 = resize(enlarged(8), (384, 384), "area")
    assert content_crop_size(at_384, sizes) == 384, "no size half as big"


def test_face_region_is_the_photo_side_of_the_crop() -> None:
    face = astronaut_face()
    region = face_region(face, "ffhq", 512)
    x1, y1, x2, y2 = paste_area(estimate_alignment(face.landmarks, "ffhq", 512), 512, (4000, 4000, 3))
    # The astronaut's head is nearly upright, so the crop's footprint is about region x region.
    assert abs((x2 - x1) - region) < 0.1 * region and abs((y2 - y1) - region) < 0.1 * region
    assert region == pytest.approx(face_region(face, "ffhq", 256))  # the region does not depend on the size
    small = face.scaled(0.25)
    assert face_region(small, "ffhq", 512) == pytest.approx(region / 4, rel=1e-4)
