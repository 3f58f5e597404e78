"""The Enhancer on the real astronaut portrait with the shipped models (restora-lite + MTCNN)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from engine.imageio import Image
from engine.pipeline import ComposeOptions, Enhancer, EnhanceSettings, compose
from engine.resample import resize
from tests.conftest import ASTRONAUT_FACE_BOX, box_iou
from tests.helpers import far_from_face_mask


def test_astronaut_has_exactly_one_face_with_landmarks_on_eyes_and_mouth(enhancer: Enhancer,
                                                                        astronaut: np.ndarray) -> None:
    faces = enhancer.detect(astronaut)
    assert len(faces) == 1
    face = faces[0]
    assert box_iou(face.box, ASTRONAUT_FACE_BOX) > 0.5
    left_eye, right_eye, nose, mouth_left, mouth_right = face.landmarks
    assert 190 < left_eye[0] < 222 and 88 < left_eye[1] < 118
    assert 232 < right_eye[0] < 265 and 88 < right_eye[1] < 118
    assert left_eye[1] < nose[1] < mouth_left[1]
    assert 138 < mouth_left[1] < 168 and 138 < mouth_right[1] < 168
    assert mouth_left[0] < mouth_right[0]


def test_restoring_changes_the_face_and_nothing_far_from_it(enhancer: Enhancer, astronaut: np.ndarray) -> None:
    result = enhancer.enhance(Image(pixels=astronaut))
    assert result.face_count == 1
    out = result.output.pixels
    assert out.shape == astronaut.shape and out.dtype == np.uint8
    x1, y1, x2, y2 = (int(v) for v in ASTRONAUT_FACE_BOX)
    face_change = np.abs(out[y1:y2, x1:x2].astype(int) - astronaut[y1:y2, x1:x2]).mean()
    assert face_change > 1.0, "the model must visibly change the face"
    far = far_from_face_mask(astronaut.shape, ASTRONAUT_FACE_BOX, 0.6)
    assert np.array_equal(out[far], astronaut[far]), "pixels far from the face stay exactly as they were"


def test_faces_from_several_photos_share_batches_with_identical_results(store, astronaut: np.ndarray) -> None:  # type: ignore[no-untyped-def]
    photos = [astronaut, np.ascontiguousarray(astronaut[:, ::-1]), astronaut]
    one_by_one = Enhancer(EnhanceSettings(batch_size=1, color_correction=False), store)
    batched = Enhancer(EnhanceSettings(batch_size=3, color_correction=False), store)
    single = [one_by_one.enhance(Image(pixels=p)).output.pixels for p in photos]
    many = [r.output.pixels for _, r in batched.enhance_many((i, Image(pixels=p)) for i, p in enumerate(photos))]
    assert len(many) == 3
    for a, b in zip(single, many, strict=True):
        assert np.abs(a.astype(int) - b).max() <= 2  # same model, other batch shape: rounding only


def test_fidelity_one_gives_back_the_input_face(enhancer: Enhancer, astronaut: np.ndarray) -> None:
    result = enhancer.enhance(Image(pixels=astronaut))
    strong = compose(result.source, result.faces, ComposeOptions(fidelity=0.0, color_correction=False))
    faithful = compose(result.source, result.faces, ComposeOptions(fidelity=1.0, color_correction=False))
    x1, y1, x2, y2 = (int(v) for v in ASTRONAUT_FACE_BOX)
    diff_strong = np.abs(strong.pixels[y1:y2, x1:x2].astype(int) - astronaut[y1:y2, x1:x2]).mean()
    diff_faithful = np.abs(faithful.pixels[y1:y2, x1:x2].astype(int) - astronaut[y1:y2, x1:x2]).mean()
    assert diff_faithful < diff_strong
    assert np.array_equal(faithful.pixels, astronaut), "fidelity 1 is the photo itself"


def test_excluded_faces_are_left_alone(enhancer: Enhancer, astronaut: np.ndarray) -> None:
    result = enhancer.enhance(Image(pixels=astronaut))
    out = compose(result.source, result.faces, ComposeOptions(fidelity=0.0, include=[False]))
    assert np.array_equal(out.pixels, astronaut)


def test_upscale_doubles_the_photo_and_keeps_the_face(store, astronaut: np.ndarray) -> None:  # type: ignore[no-untyped-def]
    result = Enhancer(EnhanceSettings(upscale=2), store).enhance(Image(pixels=astronaut))
    assert result.output.pixels.shape == (1024, 1024, 3)
    assert result.face_count == 1


def test_sixteen_bit_photo_stays_sixteen_bit(enhancer: Enhancer, astronaut: np.ndarray) -> None:
    deep = astronaut.astype(np.uint16) * 257
    result = enhancer.enhance(Image(pixels=deep, mode="RGB"))
    assert result.output.pixels.dtype == np.uint16
    assert result.face_count == 1
    far = far_from_face_mask(astronaut.shape, ASTRONAUT_FACE_BOX, 0.6)
    assert np.array_equal(result.output.pixels[far], deep[far])


def test_aligned_mode_restores_the_whole_crop_and_keeps_its_size(store, astronaut: np.ndarray) -> None:  # type: ignore[no-untyped-def]
    crop = np.ascontiguousarray(astronaut[40:200, 150:310])  # 160x160 "aligned" face crop
    result = Enhancer(EnhanceSettings(aligned=True, color_correction=False), store).enhance(Image(pixels=crop))
    assert result.output.pixels.shape == crop.shape
    assert result.faces[0].crop.shape == (512, 512, 3)  # 160 px: 384 would sample it only 2.4x
    small = Enhancer(EnhanceSettings(aligned=True), store).enhance(Image(pixels=resize(crop, (96, 96), "area")))
    assert small.faces[0].crop.shape == (384, 384, 3) and small.output.pixels.shape == (96, 96, 3)
    assert np.abs(result.output.pixels.astype(int) - crop).mean() > 0.5


def test_alpha_is_kept_untouched(enhancer: Enhancer, astronaut: np.ndarray) -> None:
    alpha = np.tile(np.linspace(0, 255, 512, dtype=np.uint8), (512, 1))
    result = enhancer.enhance(Image(pixels=astronaut, alpha=alpha, mode="RGBA"))
    assert result.output.alpha is not None and np.array_equal(result.output.alpha, alpha)


def test_photo_without_a_face_comes_back_unchanged(enhancer: Enhancer) -> None:
    gradient = np.tile(np.linspace(0, 255, 300, dtype=np.uint8)[:, None], (1, 400))
    pixels = np.dstack([gradient] * 3)
    result = enhancer.enhance(Image(pixels=pixels))
    assert result.face_count == 0
    assert np.array_equal(result.output.pixels, pixels)


def test_only_largest_and_min_face(store, astronaut: np.ndarray) -> None:  # type: ignore[no-untyped-def]
    canvas = np.full((700, 1100, 3), 128, np.uint8)
    canvas[:512, :512] = astronaut
    small = resize(astronaut, (256, 256))
    canvas[300:556, 700:956] = small
    both = Enhancer(EnhanceSettings(), store).enhance(Image(pixels=canvas))
    assert both.face_count == 2
    largest = Enhancer(EnhanceSettings(only_largest=True), store).enhance(Image(pixels=canvas))
    assert largest.face_count == 1 and largest.faces[0].face.box[0] < 512
    big_only = Enhancer(EnhanceSettings(min_face=80), store).enhance(Image(pixels=canvas))
    assert big_only.face_count == 1


@pytest.mark.parametrize("bad", [{"fidelity": 1.5}, {"upscale": 3}, {"precision": "int4"}, {"batch_size": 0}])
def test_bad_settings_are_refused(bad: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        EnhanceSettings(**bad)  # type: ignore[arg-type]


def test_settings_are_a_frozen_snapshot() -> None:
    settings = EnhanceSettings()
    with pytest.raises(AttributeError):
        settings.fidelity = 0.2  # type: ignore[misc]
    assert replace(settings, fidelity=0.2).fidelity == 0.2


def test_a_small_face_in_a_big_photo_is_found_down_to_an_explicit_min_face(store, astronaut: np.ndarray) -> None:  # type: ignore[no-untyped-def]
    canvas = np.full((2400, 3200, 3), 120, np.uint8)  # 7.7 MP, well above the 1280 px detection size
    tiny = resize(astronaut, (128, 128))  # face about 24 px
    canvas[1500:1628, 2000:2128] = tiny
    big = resize(astronaut, (640, 640))  # face about 120 px
    canvas[200:840, 200:840] = big
    faces = Enhancer(EnhanceSettings(min_face=16), store).detect(canvas)
    assert len(faces) == 2
    centres = sorted(((f.box[0] + f.box[2]) / 2, (f.box[1] + f.box[3]) / 2) for f in faces)
    assert 2030 < centres[1][0] < 2090 and 1510 < centres[1][1] < 1570
    # By default (auto: 40 px on a photo this size) the 24 px face is left alone.
    auto = Enhancer(EnhanceSettings(), store).enhance(Image(pixels=canvas))
    assert auto.face_count == 1 and auto.faces[0].face.box[0] < 840


def test_detection_scale_honours_min_face_and_the_ceiling() -> None:
    from engine.pipeline import detection_scale, effective_min_face

    assert detection_scale(1000, 800, 1280, 16) == 1.0
    assert detection_scale(4000, 3000, 1280, 16) == 1.0  # 16 px faces must stay visible
    assert detection_scale(4000, 3000, 1280, 64) == 0.32  # bigger min face: detection on 1280 px
    assert detection_scale(8000, 6000, 1280, 16) == 4096 / 8000  # memory ceiling on 48 MP
    assert effective_min_face(None, 600, 400) == 16  # small photos: full resolution, 16 px faces
    assert effective_min_face(None, 1000, 800) == 25 and detection_scale(1000, 800, 640, 25) == 0.64
    assert effective_min_face(None, 1600, 1200) == 40 and effective_min_face(None, 4000, 3000) == 40
    assert effective_min_face(None, 8000, 6000) == 80
    assert effective_min_face(16, 4000, 3000) == 16 and effective_min_face(0, 4000, 3000) == 0


def test_a_re_encoded_astronaut_still_has_one_face(enhancer: Enhancer, astronaut: np.ndarray) -> None:
    """A second JPEG generation once made MTCNN see a 0.81-score 'face' on the suit (O-Net threshold 0.9 now)."""
    import io

    from PIL import Image as PILImage

    pixels = astronaut
    for _ in range(2):
        buffer = io.BytesIO()
        PILImage.fromarray(pixels).save(buffer, "JPEG", quality=92)
        pixels = np.asarray(PILImage.open(buffer).convert("RGB"))
    assert len(enhancer.detect(pixels)) == 1


def test_reuse_source_pastes_into_the_loaded_frame(enhancer: Enhancer, astronaut: np.ndarray) -> None:
    restoration = enhancer.enhance(Image(pixels=astronaut.copy()))
    options = ComposeOptions(enhancer.fidelity, 1, True)
    expected = compose(restoration.source, restoration.faces, options).pixels
    assert np.array_equal(restoration.source.pixels, astronaut), "by default the source is left as it was"
    own = Image(pixels=astronaut.copy())
    reused = compose(own, restoration.faces, options, reuse_source=True)
    assert reused.pixels is own.pixels, "no second full frame"
    np.testing.assert_array_equal(reused.pixels, expected)


def test_aligned_mode_keeps_the_detail_of_a_crop_bigger_than_the_model(store, astronaut: np.ndarray) -> None:  # type: ignore[no-untyped-def]
    """A 1024 px aligned crop with pixel-fine grain: the model (512 px) cannot hold the grain, and
    only its change is enlarged onto the crop, so the grain survives; at fidelity 1 nothing moves."""
    rng = np.random.default_rng(11)
    big = np.repeat(np.repeat(astronaut, 2, axis=0), 2, axis=1).astype(np.int16)
    big = np.clip(big + rng.integers(-15, 16, big.shape), 0, 255).astype(np.uint8)
    kept = Enhancer(EnhanceSettings(aligned=True, fidelity=1.0), store).enhance(Image(pixels=big)).output.pixels
    assert np.array_equal(kept, big)
    output = Enhancer(EnhanceSettings(aligned=True), store).enhance(Image(pixels=big)).output.pixels
    assert output.shape == big.shape

    def finest(pixels: np.ndarray) -> np.ndarray:
        """What a 512 px crop cannot hold: each pixel minus its 2 x 2 block's mean."""
        values = pixels.astype(float)
        means = values.reshape(512, 2, 512, 2, 3).mean(axis=(1, 3))
        return values - np.repeat(np.repeat(means, 2, axis=0), 2, axis=1)

    # The grain is still there (the whole restored crop, enlarged, kept 27 % of that band's energy).
    grain, left = finest(big), finest(output)
    assert (left**2).mean() / (grain**2).mean() > 0.8 and np.corrcoef(grain.ravel(), left.ravel())[0, 1] > 0.9


def record_detail_kept(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """For each face pasted from now on, whether paste_back was given the crop to keep the photo's detail."""
    import engine.faces as facelib

    seen: list[bool] = []
    original = facelib.paste_back

    def spy(*args: object, original_crop: np.ndarray | None = None, **kwargs: object) -> np.ndarray:
        seen.append(original_crop is not None)
        return original(*args, original_crop=original_crop, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(facelib, "paste_back", spy)
    return seen


def test_only_detail_the_photo_itself_holds_is_kept(store, astronaut: np.ndarray,  # type: ignore[no-untyped-def]
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """``--upscale`` enlarges the photo, not its detail: a face the crop out-resolves in the photo gets
    the whole restored crop even where the enlarged output's face is bigger than the crop; a face
    bigger than the crop in the photo itself keeps its detail, enlarged or not."""
    seen = record_detail_kept(monkeypatch)
    small_face = Enhancer(EnhanceSettings(upscale=4), store).enhance(Image(pixels=astronaut))
    assert small_face.faces and seen == [False] * len(small_face.faces)
    seen.clear()
    # Cubic, not nearest: a 4x nearest enlargement's pixel steps sit on the 8 px grid and read as
    # JPEG blocks (test_a_big_face_in_a_blocky_jpeg_gets_the_whole_restored_crop).
    big = resize(astronaut, (2048, 2048), "cubic")
    for upscale in (1.0, 2.0):
        Enhancer(EnhanceSettings(upscale=upscale), store).enhance(Image(pixels=big))
    assert seen and all(seen)

    # The same in aligned mode: a 256 px crop enlarged 4x gets the whole restored crop.
    crop = np.ascontiguousarray(astronaut[::2, ::2])
    enlarged = Enhancer(EnhanceSettings(aligned=True, upscale=4, fidelity=0.0, color_correction=False), store)
    result = enlarged.enhance(Image(pixels=crop))
    record = result.faces[0]
    whole = resize(record.restored, (1024, 1024), "cubic").astype(float)
    assert np.abs(result.output.pixels.astype(float) - whole).max() <= 1.0


def test_a_big_face_in_a_blocky_jpeg_gets_the_whole_restored_crop(  # type: ignore[no-untyped-def]
    store, astronaut: np.ndarray, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A face bigger than the crop keeps the photo's finer detail, unless that detail is JPEG blocks
    (faces.BLOCKY_FACE): the crop cannot see an 8 px grid at that scale, so keeping the photo's band
    would keep every block. At JPEG 5 the whole restored crop goes in and the blocks go; at JPEG 90
    the detail stays. Aligned crops bigger than the model's follow the same rule."""
    import engine.faces as facelib
    from tests.helpers import decoded_jpeg as jpeg

    seen = record_detail_kept(monkeypatch)
    threshold = facelib.BLOCKY_FACE
    big = resize(astronaut, (2560, 2560), "cubic")  # the face about 460 px, its crop about 1,000
    enhancer = Enhancer(EnhanceSettings(), store)
    blocky = enhancer.enhance(Image(pixels=jpeg(big, 5)))
    fine = enhancer.enhance(Image(pixels=jpeg(big, 90)))
    assert len(blocky.faces) == len(fine.faces) == 1 and seen == [False, True]
    record = blocky.faces[0]
    assert facelib.keeps_photo_detail(record.matrix), "the paste enlarges this crop"
    before = facelib.jpeg_blockiness(blocky.source.pixels, record.face.box)
    after = facelib.jpeg_blockiness(blocky.output.pixels, record.face.box)
    assert before > 1.5 * threshold and after < before / 2, (before, after)
    monkeypatch.setattr(facelib, "BLOCKY_FACE", float("inf"))  # the rule off: the blocks stay
    kept = compose(blocky.source, blocky.faces, ComposeOptions(enhancer.fidelity)).pixels
    assert facelib.jpeg_blockiness(kept, record.face.box) > 1.5 * after

    # Aligned: a 1024 px crop at JPEG 3 gets the whole restored crop, enlarged.
    crop = jpeg(resize(astronaut[40:360, 100:420], (1024, 1024), "cubic"), 3)
    assert facelib.jpeg_blockiness(crop) > 1.5 * threshold
    kept_crop = Enhancer(EnhanceSettings(aligned=True), store).enhance(Image(pixels=crop)).output.pixels
    blocks_kept = facelib.jpeg_blockiness(kept_crop)
    monkeypatch.undo()
    aligned = Enhancer(EnhanceSettings(aligned=True), store).enhance(Image(pixels=crop))
    assert facelib.jpeg_blockiness(aligned.output.pixels) < 0.75 * blocks_kept


def test_a_face_in_an_enlarged_small_photo_is_restored_at_half_size_and_comes_out_closer_to_the_clean_face(  # type: ignore[no-untyped-def]
    store, astronaut: np.ndarray,
) -> None:
    """A 128 px JPEG thumbnail blown up to 512 px: the face's 512 px crop holds nothing finer than a
    256 px one (faces.content_crop_size), and restora-lite restores it better there, pasting the whole
    restored crop. Aligned crops (--aligned) take the same route; a sharp photo keeps the full size."""
    from tests.helpers import decoded_jpeg

    fixed_store = store.at_full_size()
    settings = EnhanceSettings(fidelity=0.0, color_correction=False)
    photo = resize(decoded_jpeg(resize(astronaut, (128, 128), "area"), 60), (512, 512), "cubic")
    coarse = Enhancer(settings, store).enhance(Image(pixels=photo))
    full = Enhancer(settings, fixed_store).enhance(Image(pixels=photo))
    sharp = Enhancer(settings, store).enhance(Image(pixels=astronaut))
    assert coarse.face_count == full.face_count == sharp.face_count == 1
    assert coarse.faces[0].crop.shape == coarse.faces[0].restored.shape == (256, 256, 3) and coarse.faces[0].coarse
    assert full.faces[0].crop.shape == sharp.faces[0].crop.shape == (512, 512, 3)
    assert not sharp.faces[0].coarse

    x1, y1, x2, y2 = (round(v) for v in ASTRONAUT_FACE_BOX)

    def psnr(pixels: np.ndarray, clean: np.ndarray, box: tuple[int, int, int, int] = (x1, y1, x2, y2)) -> float:
        error = pixels[box[1] : box[3], box[0] : box[2]].astype(np.float64) - clean[box[1] : box[3], box[0] : box[2]]
        return float(10 * np.log10(255.0**2 / np.mean(error**2)))

    before, at_256, at_512 = (psnr(p, astronaut) for p in (photo, coarse.output.pixels, full.output.pixels))
    assert at_256 > at_512 + 0.2 and at_256 > before + 0.5, (before, at_256, at_512)

    # An aligned crop enlarged 8x, with grain at its own scale: the whole restored crop is pasted, so the
    # grain goes too (adding only the restorer's change would keep it).
    from engine.faces import align_face
    from tests.test_faces import astronaut_face

    crop = align_face(astronaut, astronaut_face(), 512).crop
    small = resize(decoded_jpeg(resize(crop, (64, 64), "area"), 60), (512, 512), "cubic").astype(np.float32)
    grainy = np.clip(np.rint(small + np.random.default_rng(0).normal(0, 6, small.shape)), 0, 255).astype(np.uint8)
    aligned = replace(settings, aligned=True)
    coarse_crop = Enhancer(aligned, store).enhance(Image(pixels=grainy))
    full_crop = Enhancer(aligned, fixed_store).enhance(Image(pixels=grainy))
    assert coarse_crop.faces[0].crop.shape == (256, 256, 3) and coarse_crop.faces[0].coarse
    inner = (51, 51, 461, 461)
    outputs = (grainy, coarse_crop.output.pixels, full_crop.output.pixels)
    before, at_256, at_512 = (psnr(p, crop, inner) for p in outputs)
    assert at_256 > at_512 + 1.0 and at_256 > before + 1.5, (before, at_256, at_512)

    # A coarse face is restored as itself and mirrored, averaged (Enhancer.restore_aligned), which brings
    # it closer to the clean face than one pass; at 512 px a face gets the single pass.
    enlarged = resize(decoded_jpeg(resize(crop, (64, 64), "area"), 60), (512, 512), "cubic")
    enhancer = Enhancer(aligned, store)
    face = enhancer.enhance(Image(pixels=enlarged)).faces[0]
    assert face.coarse
    assert np.array_equal(face.restored, enhancer.restorer.restore(face.crop[None], mirrored=True)[0])
    once = enhancer.restorer.restore(face.crop[None])[0]
    clean = resize(crop, (256, 256), "area")
    inner = (25, 25, 231, 231)
    assert psnr(face.restored, clean, inner) > psnr(once, clean, inner) + 0.08
    assert np.array_equal(full_crop.faces[0].restored, enhancer.restorer.restore(full_crop.faces[0].crop[None])[0])


def test_a_small_face_is_restored_at_a_small_crop_and_comes_out_closer_to_the_clean_face(  # type: ignore[no-untyped-def]
    store, astronaut: np.ndarray,
) -> None:
    """restora-lite on a face whose crop covers about 70 photo pixels: blown up to 512 px its blur spans
    more pixels than the model learnt to undo; at 256 px it restores more of it (faces.crop_size_for)."""
    import io

    from PIL import Image as PILImage
    from PIL import ImageFilter

    clean = resize(astronaut, (192, 192), "area")
    blurred = np.asarray(PILImage.fromarray(clean).filter(ImageFilter.GaussianBlur(0.8)), np.float32)
    noisy = np.clip(blurred + np.random.default_rng(3).normal(0, 6, blurred.shape) + 0.5, 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    PILImage.fromarray(noisy).save(buffer, "JPEG", quality=50)
    degraded = np.asarray(PILImage.open(buffer).convert("RGB"))

    fixed_store = store.at_full_size()
    small = Enhancer(EnhanceSettings(), store).enhance(Image(pixels=degraded))
    full = Enhancer(EnhanceSettings(), fixed_store).enhance(Image(pixels=degraded))
    assert small.face_count == full.face_count == 1
    assert small.faces[0].crop.shape == small.faces[0].restored.shape == (256, 256, 3)
    assert full.faces[0].crop.shape == (512, 512, 3)

    x1, y1, x2, y2 = (round(v * 192 / 512) for v in ASTRONAUT_FACE_BOX)

    def psnr(pixels: np.ndarray) -> float:
        error = pixels[y1:y2, x1:x2].astype(np.float64) - clean[y1:y2, x1:x2]
        return float(10 * np.log10(255.0**2 / np.mean(error**2)))

    before, at_256, at_512 = psnr(degraded), psnr(small.output.pixels), psnr(full.output.pixels)
    assert at_256 > at_512 + 0.2 and at_256 > before + 0.5, (before, at_256, at_512)
