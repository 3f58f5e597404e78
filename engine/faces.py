"""Faces: the Face record, alignment templates, warp / inverse warp, paste-back, colour match."""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import PIL.Image

from .resample import (
    Premultiplied,
    antialias_reduction,
    block_means,
    invert_affine,
    linear_scale,
    premultiply,
    premultiply_upright,
    resize,
    warp_affine,
    warp_premultiplied,
)


@dataclass(frozen=True, eq=False)
class Face:
    """One detected face, in the pixel coordinates of the image it was found in.

    ``landmarks`` is a (5, 2) float32 array: left eye, right eye, nose, left mouth corner,
    right mouth corner (viewer's left first). ``score`` is the detector's confidence, 0..1.
    """

    box: tuple[float, float, float, float]  # x1, y1, x2, y2
    landmarks: np.ndarray
    score: float

    @property
    def width(self) -> float:
        return self.box[2] - self.box[0]

    @property
    def height(self) -> float:
        return self.box[3] - self.box[1]

    @property
    def size(self) -> float:
        """The face's size in pixels: the larger side of its box."""
        return max(self.width, self.height)

    def scaled(self, factor: float) -> Face:
        """The same face in an image scaled by ``factor`` (maps detections on a resized copy back)."""
        x1, y1, x2, y2 = self.box
        return Face(
            box=(x1 * factor, y1 * factor, x2 * factor, y2 * factor),
            landmarks=(self.landmarks * factor).astype(np.float32),
            score=self.score,
        )

    def to_dict(self) -> dict[str, object]:
        return {
            "box": [round(float(v), 2) for v in self.box],
            "landmarks": [[round(float(x), 2), round(float(y), 2)] for x, y in self.landmarks],
            "score": round(float(self.score), 4),
        }


# Five-point templates, normalised to a unit square, in Face.landmarks order.
# ffhq: the FFHQ 512 template used by GFPGAN/CodeFormer/GPEN (facexlib), divided by 512.
# arcface: the InsightFace ArcFace 112 template, re-centred for a square crop as in FaceFusion's arcface_128.
TEMPLATES: dict[str, np.ndarray] = {
    "ffhq": np.array(
        [
            [192.98138, 239.94708],
            [318.90277, 240.19360],
            [256.63416, 314.01935],
            [201.26117, 371.41043],
            [313.08905, 371.15118],
        ],
        dtype=np.float32,
    )
    / 512.0,
    "arcface": np.array(
        [
            [0.36167656, 0.40387734],
            [0.63696719, 0.40235469],
            [0.50019687, 0.56044219],
            [0.38710391, 0.72160547],
            [0.61507734, 0.72034453],
        ],
        dtype=np.float32,
    ),
}


def template_points(template: str, size: int) -> np.ndarray:
    """The template's five points for a ``size`` x ``size`` crop."""
    try:
        return TEMPLATES[template] * float(size)
    except KeyError:
        raise ValueError(f"unknown alignment template {template!r}; known: {', '.join(TEMPLATES)}") from None


def estimate_alignment(landmarks: np.ndarray, template: str, size: int) -> np.ndarray:
    """The 2x3 similarity transform (rotation, uniform scale, translation) from image to crop.

    Least squares over all five points (Umeyama), as InsightFace and facexlib align: with five
    points a robust estimator has too few to reject any without losing the fit.
    """
    target = template_points(template, size)
    return _umeyama_similarity(landmarks.astype(np.float64), target.astype(np.float64)).astype(np.float32)


def _umeyama_similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    src_mean, dst_mean = src.mean(0), dst.mean(0)
    src_c, dst_c = src - src_mean, dst - dst_mean
    var = float((src_c**2).sum()) / len(src) or 1.0
    cov = dst_c.T @ src_c / len(src)
    u, s, vt = np.linalg.svd(cov)
    d = np.eye(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        d[1, 1] = -1
    rotation = u @ d @ vt
    scale = float(np.trace(np.diag(s) @ d)) / var
    translation = dst_mean - scale * rotation @ src_mean
    return np.hstack([scale * rotation, translation[:, None]])


@dataclass(frozen=True, eq=False)
class AlignedFace:
    """A face warped to a model's template: the crop and the image->crop matrix that made it."""

    crop: np.ndarray  # (size, size, 3) uint8 RGB
    matrix: np.ndarray  # (2, 3) float32, image -> crop
    # Made smaller than the face's pixels call for, as it holds no finer detail (content_crop_size):
    # whatever is finer in the photo is noise, so the paste replaces it instead of keeping it.
    coarse: bool = False


def align_face(image: np.ndarray, face: Face, size: int, template: str = "ffhq") -> AlignedFace:
    """Warp ``face`` out of an RGB uint8 image into a square crop matching ``template``."""
    matrix = estimate_alignment(face.landmarks, template, size)
    # Replicate the border: faces that touch the photo's edge get a plausible continuation
    # instead of a black wedge the model would try to "restore".
    crop = warp_affine(image, matrix, (size, size), border="replicate")
    return AlignedFace(crop=crop, matrix=matrix)


def resize_aligned(pixels: np.ndarray, size: int) -> np.ndarray:
    """An already aligned face crop (FFHQ-style, any size) as a ``size`` x ``size`` restorer input:
    box-filtered when it shrinks, bicubic when it grows."""
    return resize(pixels, (size, size), "area" if pixels.shape[0] > size else "cubic")


# A face is restored at the smallest crop size (of those its restorer takes) that still samples the
# face's square of the photo at least this many times along each side. See ``crop_size_for``.
CROP_OVERSAMPLING = 3.0


def crop_size_for(region: float, sizes: tuple[int, ...], upscale: float = 1.0) -> int:
    """The crop size to restore a face at whose crop covers ``region`` photo pixels along a side,
    among ``sizes`` (ascending; the last is the restorer's full size). With ``upscale`` the crop is
    also at least as big as the face will be in the enlarged output, so it is never interpolated up.

    A small face blown up to a 512 px crop is blur spread over 5-10x its pixels, outside what
    restora-lite learnt (downscales up to 8x, on faces near 200 px); at 3x oversampling its crop is
    nearer that scale, and the paste shrinks the crop back to the face's pixels either way.
    ``scripts/small_faces.py`` (16 validation faces, the default engine, PSNR gain over the degraded
    photo, this rule against always 512): crops covering 48 px of the photo +1.35 / +0.43 dB at blur
    0.8 + noise 6 + JPEG 50, +0.91 / +0.21 heavier, +0.73 / +0.50 at JPEG 90 alone, but +1.25 / +1.36
    with noise 3 + JPEG 75 and no blur; at 96 px (384) +1.52 / +1.29, +1.34 / +1.05, +0.34 / +0.27 and
    +0.85 / +0.93; from 144 px on the same. The small faces took about half the time.
    """
    for size in sizes:
        if size >= max(CROP_OVERSAMPLING, upscale) * region:
            return size
    return sizes[-1]


# A crop whose luminance above 1/16 cycle per pixel is under this share of its 1/32-1/16 band holds
# no more than an eighth-size image: an enlarged small photo, or a face blurred as much. See
# ``content_crop_size``.
ENLARGED_DETAIL_RATIO = 0.42


def fine_detail_ratio(crop: np.ndarray) -> float:
    """RMS of a square uint8 RGB crop's luminance above 1/16 cycle per pixel over that of its
    1/32-1/16 band, on the central 80 %.

    On the 64 validation faces at 512 px (``scripts/content_scale.py``): 0.20-0.34 for the severe
    tier (8x downscaled, blurred, noisy, JPEG 40), 0.23-0.28 for clean faces enlarged 8x and 0.26-0.32
    with 6 levels of grain added at the crop's own scale; 0.47-0.65 for the medium tier (4x),
    0.58-0.85 for 4x enlargements, 0.59-0.89 for mild. Real low-quality crops measure 0.26-0.40
    (CodeFormer's twelve numbered test faces, DFDNet's four), sharp photos' faces 0.6-0.86.

    Both bands are measured on a quarter-size copy (block means), which holds them: about 1.3 ms for
    a 512 px crop instead of 4 at full size. Pixel-scale grain averages out there, so it does not
    hide an enlarged face."""
    quarter = block_means(crop, 4).astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    side = quarter.shape[0]
    half = resize(block_means(quarter, 2), (side, side), "cubic")
    eighth = resize(block_means(quarter, 4), (side, side), "cubic")
    edge = round(side * 0.1)
    inner = slice(edge, side - edge)
    fine = float(np.sqrt(np.mean(np.square(quarter - half)[inner, inner])))
    band = float(np.sqrt(np.mean(np.square(half - eighth)[inner, inner])))
    return fine / max(band, 1e-3)


def content_crop_size(crop: np.ndarray, sizes: tuple[int, ...]) -> int:
    """The crop size to restore an aligned ``crop`` at, judged by what it holds rather than by its
    pixel count (``crop_size_for``): half its size where one of ``sizes`` is, when the crop holds no
    detail finer than 1/16 cycle per pixel (``fine_detail_ratio``), else its own size.

    restora-lite learnt degradations up to 8x downscaling of a 512 px face; shrunk to 256 px, an
    8x-degraded face looks 4x-degraded, which it restores better. ``scripts/content_scale.py`` (64
    validation faces through ``restora enhance --aligned``, INT8, ΔPSNR over the degraded face, by
    this rule / always at 512; v9, then v10 trained for it): severe tier +1.07 / +0.94 dB, v10 +1.22 /
    +0.96; a clean face enlarged 8x +0.52 / -0.34, v10 +0.52 / -0.20; the same with grain +1.47 /
    +0.78, v10 +1.50 / +0.80; every one of them below the threshold. The mild and medium tiers and 4x
    enlargements are all above it and unchanged (lowest ratio 0.47, medium).
    """
    size = crop.shape[0]
    smaller = [s for s in sizes if s * 2 <= size]
    if not smaller or size % 16 or fine_detail_ratio(crop) >= ENLARGED_DETAIL_RATIO:
        return size
    return smaller[-1]


def face_region(face: Face, template: str, size: int) -> float:
    """The side, in photo pixels, of the square a ``size`` crop of ``face`` covers."""
    return size / linear_scale(estimate_alignment(face.landmarks, template, size))


def scale_matrix(matrix: np.ndarray, factor: float) -> np.ndarray:
    """The image->crop matrix for the same face in the image scaled by ``factor``."""
    scaled = matrix.astype(np.float64).copy()
    scaled[:, :2] /= factor
    return scaled.astype(np.float32)


def feather_mask(size: int, blur: float = 0.3, padding: float = 0.04) -> np.ndarray:
    """A (size, size) float32 mask, 1 in the middle of the crop, fading to 0 at its edges.

    The fade width is a fraction of the crop, so it scales with the face: a small face gets a
    small feather, a big one a wide one, and no seam shows either way.
    """
    fade = max(int(size * blur * 0.5), 1)
    inset = max(int(size * padding), 1)
    # The mask is a blurred square: the outer product of one blurred 1-D box with itself.
    box = np.zeros(size, np.float64)
    box[inset + fade // 2 : size - inset - fade // 2] = 1.0
    sigma = fade * 0.25
    radius = max(int(np.ceil(4.0 * sigma)), 1)
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    profile = np.convolve(np.pad(box, radius, mode="reflect"), taps / taps.sum(), mode="valid")
    return np.clip(np.outer(profile, profile), 0.0, 1.0).astype(np.float32)


def paste_area(
    matrix: np.ndarray, size: int, image_shape: tuple[int, ...]
) -> tuple[int, int, int, int] | None:
    """The image-space box (x1, y1, x2, y2) a crop covers once warped back, clipped to the image."""
    inverse = invert_affine(matrix)
    corners = np.array([[0, 0], [size, 0], [0, size], [size, size]], np.float32)
    mapped = corners @ inverse[:, :2].T + inverse[:, 2]
    height, width = image_shape[:2]
    x1 = max(int(np.floor(mapped[:, 0].min())) - 1, 0)
    y1 = max(int(np.floor(mapped[:, 1].min())) - 1, 0)
    x2 = min(int(np.ceil(mapped[:, 0].max())) + 1, width)
    y2 = min(int(np.ceil(mapped[:, 1].max())) + 1, height)
    if x2 <= x1 or y2 <= y1:
        return None
    return x1, y1, x2, y2


_PASTE_BAND_ROWS = 256


def mask_to_alpha(mask: np.ndarray) -> np.ndarray:
    """A [0, 1] float mask as 8-bit alpha."""
    return np.rint(np.clip(mask, 0.0, 1.0) * 255.0).astype(np.uint8)


@functools.lru_cache(maxsize=8)
def _feather_alpha(size: int) -> np.ndarray:
    alpha = mask_to_alpha(feather_mask(size))
    alpha.flags.writeable = False  # shared between calls and threads
    return alpha


@functools.lru_cache(maxsize=8)
def _feather_samples(size: int) -> np.ndarray:
    """The feather mask at the pixels ``color_match`` takes its statistics from, flattened."""
    samples = np.ascontiguousarray(feather_mask(size)[::2, ::2]).reshape(-1)
    samples.flags.writeable = False
    return samples


def paste_back(
    image: np.ndarray,
    crop: np.ndarray,
    matrix: np.ndarray,
    mask: np.ndarray | None = None,
    strength: float = 1.0,
    *,
    in_place: bool = False,
    original_crop: np.ndarray | None = None,
) -> np.ndarray:
    """Composite a (restored) crop back into ``image`` through the inverse of ``matrix``.

    Works only on the box the crop covers (never on full-size float copies), so big photos stay
    cheap. ``image`` may be uint8 or uint16 RGB; the crop is uint8 RGB. ``strength`` scales the
    mask: 0 leaves the photo exactly as it was, 1 pastes fully. Returns a new array, or ``image``
    itself with ``in_place`` (compose pastes many faces into one copy of a 48 MP photo).

    ``original_crop`` is the crop the restorer was given. Where the paste enlarges the crop (a face
    bigger in the photo than in the crop), only the restorer's change is pasted, ``crop`` minus
    ``original_crop``: the photo keeps the detail finer than the crop can hold (pores, lashes, grain)
    instead of getting the crop's enlarged, softer copy of it (see ``keeps_photo_detail``).
    """
    size = crop.shape[0]
    result = image if in_place else image.copy()
    area = paste_area(matrix, size, image.shape)
    if area is None or strength <= 0.0:
        return result
    x1, y1, x2, y2 = area
    # The mask rides along as the crop's alpha: one premultiplied warp instead of two (8-bit
    # steps of a smooth feather are invisible). Premultiplied once; each band warps from it.
    alpha = _feather_alpha(size) if mask is None else mask_to_alpha(np.asarray(mask, np.float32))
    opacity = min(float(strength), 1.0)
    eight_bit = image.dtype == np.uint8
    if eight_bit and opacity < 1.0:
        # Pillow composites at full strength: the opacity goes into the 8-bit alpha (within 2
        # levels of the float blend).
        alpha = np.rint(alpha * np.float32(opacity)).astype(np.uint8)
    inverse = invert_affine(matrix)
    change_step = 0
    if original_crop is not None and keeps_photo_detail(matrix):
        # The restorer's change, weighed by the feather, as 8-bit colour around 128 (1 level per
        # level, or 2 when some change is over 127 levels), fully opaque: one warp, as for the crop.
        change = (crop.astype(np.float32) - original_crop) * (alpha[..., None] * np.float32(1.0 / 255.0))
        change_step = 1 if float(np.abs(change).max()) <= 127.0 else 2
        coded = np.clip(np.rint(change * np.float32(1.0 / change_step)) + 128.0, 0, 255).astype(np.uint8)
        source = _paste_source(coded, np.full(alpha.shape, 255, np.uint8), inverse)
    else:
        source = _paste_source(crop, alpha, inverse)
    colour_scale = np.float32(opacity) * np.float32(257.0 if image.dtype == np.uint16 else 1.0)
    limit = 65535.0 if image.dtype == np.uint16 else 255.0
    # Row bands keep the scratch small: a face of 2000 px in a 48 MP photo has a paste box of about
    # 3000 x 3000, whose float copies would otherwise cost hundreds of MB.
    for top in range(y1, y2, _PASTE_BAND_ROWS):
        bottom = min(top + _PASTE_BAND_ROWS, y2)
        size_band = (x2 - x1, bottom - top)
        warped = _warp_band(source, x1, top, size_band)  # crop -> band
        if warped is None or warped.getchannel(3).getbbox() is None:
            continue
        region = result[top:bottom, x1:x2]
        if change_step:
            # photo + change. Where the crop only partly covers a pixel (its own edge, where the
            # feather and so the change are 0) the coded 128 is premultiplied away: no change there.
            coded_pixels = np.asarray(warped)
            delta = np.subtract(coded_pixels[..., :3], 128, dtype=np.int16)
            delta[coded_pixels[..., 3] < 255] = 0
            if change_step != 1:
                delta *= change_step
            if eight_bit:
                delta += region
                np.clip(delta, 0, 255, out=delta)
                region[...] = delta
                continue
            scaled = delta.astype(np.float32)
            scaled *= colour_scale
            scaled += region
            np.clip(np.rint(scaled, out=scaled), 0, limit, out=scaled)
            region[...] = scaled.astype(image.dtype)
            continue
        if eight_bit:
            # Pillow's "RGBa" paste mask is ``photo * (1 - alpha) + premultiplied colour`` in integer
            # C: bit-identical to the float blend below at full strength. With the crop premultiplied
            # once, per face: 8.0 -> 5.1 ms for a 154 px face in a 1 MP photo (the antialiasing reduce
            # in _paste_source adds 0.4-0.7 ms to small faces).
            band = PIL.Image.fromarray(region)
            band.paste(warped, (0, 0), warped)
            region[...] = np.asarray(band)
            continue
        pixels = np.asarray(warped)
        keep = pixels[..., 3:].astype(np.float32)
        keep *= np.float32(-opacity / 255.0)
        keep += np.float32(1.0)  # 1 - opacity * alpha: how much of the photo stays
        blended = region.astype(np.float32)
        blended *= keep
        pasted = pixels[..., :3].astype(np.float32)  # colour already multiplied by alpha
        pasted *= colour_scale
        blended += pasted
        np.clip(np.rint(blended, out=blended), 0, limit, out=blended)
        region[...] = blended.astype(image.dtype)
    return result


def keeps_photo_detail(matrix: np.ndarray) -> bool:
    """Whether a paste through ``matrix`` (photo -> crop) enlarges the crop, so that the photo holds
    detail the crop cannot, and ``paste_back`` pastes only the restorer's change.

    Measured on data/real's three photos of 4 MP and more, shrunk so their faces are enlarged 1.5-5.9x
    by the paste, through the engine (restora-lite INT8), PSNR against the clean photo where the
    feather is 1: clean faces +5.5 to +8.5 dB over pasting the whole crop, mildly degraded ones (blur
    1 px, noise 6, JPEG 40) +0.02 to +1.2 dB, heavily degraded ones (blur 2.5 px) -0.11 to +0.52 dB:
    the photo's own finest band then holds some of the noise. Below 1x the crop holds more than the
    photo can show, and a degraded small face is what the restorer must replace: the whole crop.
    """
    crop_per_photo = linear_scale(matrix)
    return 0.0 < crop_per_photo < 1.0


# Above this jpeg_blockiness a face's own finest band is mostly JPEG block edges, so pasting the
# whole restored crop beats keeping that band. Measured with scripts/blocky_faces.py (data/real's
# three selfies and the astronaut, faces of 800 and 1150 px, JPEG 10-90, PSNR against the photo
# before compression on the central 60 % of the face); the figures are in docs/BENCHMARKS.md. Below
# about 4 keeping the detail wins on real photos, by up to 3.9 dB on clean ones (JPEG 90).
BLOCKY_FACE = 4.5
_JPEG_BLOCK = 8


def jpeg_blockiness(pixels: np.ndarray, box: tuple[float, float, float, float] | None = None) -> float:
    """How much bigger the luminance steps across an 8 px grid are than those inside it: about 1 for
    a photo without JPEG blocks, 1.2-1.6 at JPEG quality 90, 3.4-19 at quality 10-20 (faces of 750-1200
    px). Measured on the central 60 % of ``box`` (x1, y1, x2, y2), or the whole image.

    The grid's phase is not assumed: a JPEG cropped after compression has its blocks off the origin,
    so each axis takes the strongest of its 8 phases (on an unblocked photo that reads a few percent
    above 1). 0.0 for a region too small to measure (under 4 blocks a side).
    """
    height, width = pixels.shape[:2]
    x1, y1, x2, y2 = (0.0, 0.0, float(width), float(height)) if box is None else box
    inset_x, inset_y = (x2 - x1) * 0.2, (y2 - y1) * 0.2
    left, right = max(int(x1 + inset_x), 0), min(int(x2 - inset_x), width)
    top, bottom = max(int(y1 + inset_y), 0), min(int(y2 - inset_y), height)
    if right - left < 4 * _JPEG_BLOCK or bottom - top < 4 * _JPEG_BLOCK:
        return 0.0
    region = pixels[top:bottom, left:right, :3].astype(np.float32)
    luma = region @ np.array([0.299, 0.587, 0.114], np.float32)
    across = inside = 0.0
    for axis, origin in ((1, left), (0, top)):
        steps = np.abs(np.diff(luma, axis=axis)).mean(axis=1 - axis)  # one mean step per column gap (row gap)
        phase = (origin + np.arange(steps.size)) % _JPEG_BLOCK  # the gap between pixels p and p + 1: p's phase
        by_phase = np.bincount(phase, weights=steps, minlength=_JPEG_BLOCK) / np.bincount(phase, minlength=_JPEG_BLOCK)
        strongest = int(np.argmax(by_phase))
        across += float(by_phase[strongest])
        inside += float(np.delete(by_phase, strongest).mean())
    return across / inside if inside > 0 else 0.0


def face_detail_worth_keeping(pixels: np.ndarray, face: Face, matrix: np.ndarray) -> bool:
    """Whether ``paste_back`` should keep the photo's own finer detail for this face: the paste
    enlarges the crop (``keeps_photo_detail``) and that detail is not mostly JPEG blocks."""
    return keeps_photo_detail(matrix) and jpeg_blockiness(pixels, face.box) < BLOCKY_FACE


def _paste_source(crop: np.ndarray, alpha: np.ndarray, inverse: np.ndarray) -> tuple[Premultiplied, np.ndarray]:
    """The crop premultiplied for pasting through ``inverse`` (crop -> photo), and the matrix to
    warp it with. Into a face under half the crop's size it goes through block means first, as the
    bilinear warp alone would alias the restored detail (see antialias_reduction). Into a face well
    over the crop's size it is turned upright once at its own scale, and each band is then a separable
    resize (see premultiply_upright): a 1,057 px face in a 12 MP photo, 77 -> 56 ms (fastest of 15)."""
    turned = premultiply_upright(crop, alpha, inverse)
    if turned is not None:
        return turned
    return premultiply(crop, alpha, reduce=antialias_reduction(inverse)), inverse


def _warp_band(
    source: tuple[Premultiplied, np.ndarray], x1: int, top: int, size: tuple[int, int]
) -> PIL.Image.Image | None:
    """A paste source warped into the band of the paste box whose first pixel is (x1, top)."""
    image, inverse = source
    shifted = np.array(inverse, np.float64)
    shifted[0, 2] -= x1  # write straight into this band of the paste box
    shifted[1, 2] -= top
    return warp_premultiplied(image, shifted, size)


def color_match(restored: np.ndarray, reference: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Match the restored crop's colour to the reference (mean/std per luma/chroma channel).

    Restorers trained on other data shift skin tones; matching statistics inside the face mask
    brings the colour back to the photo's without touching the restored detail much. Luma's std
    is left alone so that restored contrast (sharpness) is kept. The channels are JPEG's YCbCr:
    a 3x3 matrix away from RGB, where CIE Lab's cube roots cost 110-160 ms per 512 px face, and for
    a mean/std transfer on skin the two behave alike. A per-channel gain and offset in YCbCr is one
    affine map in RGB, so the pixels go through a single 3x3 matrix plus offset; the statistics
    come from every second pixel of every second row (65k samples of a 512 px face, plenty for a
    mean and a std). Both cut the match from about 15 to 4 ms per face here.
    """
    if mask is None:
        weights = _feather_samples(restored.shape[0])
    else:
        weights = np.ascontiguousarray(np.asarray(mask, np.float32)[::2, ::2]).reshape(-1)
    total = float(weights.sum()) or 1.0
    source = _planes(np.ascontiguousarray(restored[::2, ::2]), _RGB_TO_YCC)
    target = _planes(np.ascontiguousarray(reference[::2, ::2]), _RGB_TO_YCC)
    gains, offsets = np.ones(3), np.zeros(3)
    for channel, (src, ref) in enumerate(zip(source, target, strict=True)):
        src_mean = float(np.dot(src, weights)) / total
        ref_mean = float(np.dot(ref, weights)) / total
        if channel:
            src_std = float(np.sqrt(np.dot((src - src_mean) ** 2, weights) / total))
            ref_std = float(np.sqrt(np.dot((ref - ref_mean) ** 2, weights) / total))
            gains[channel] = ref_std / src_std if src_std > 1e-6 else 1.0
        offsets[channel] = ref_mean - gains[channel] * src_mean
    # ycc' = g * ycc + o, ycc = M rgb  =>  rgb' = M^-1 diag(g) M rgb + M^-1 o
    linear = _YCC_TO_RGB.astype(np.float64) @ np.diag(gains) @ _RGB_TO_YCC.astype(np.float64)
    shift = _YCC_TO_RGB.astype(np.float64) @ offsets
    flat = restored.reshape(-1, 3)
    planes = [flat[:, i].astype(np.float32) for i in range(3)]
    out = np.empty_like(flat)
    for channel, plane in enumerate(_combine(planes, linear)):
        plane += np.float32(shift[channel])
        np.clip(np.rint(plane, out=plane), 0, 255, out=plane)
        out[:, channel] = plane
    return out.reshape(restored.shape)


def _planes(rgb: np.ndarray, matrix: np.ndarray) -> list[np.ndarray]:
    """The three planes of ``matrix @ pixel`` over an RGB image, each (N,) float32."""
    flat = rgb.reshape(-1, 3)
    return _combine([flat[:, i].astype(np.float32) for i in range(3)], matrix)


def _combine(planes: list[np.ndarray], matrix: np.ndarray) -> list[np.ndarray]:
    # Plane by plane: a (N, 3) @ (3, 3) matmul goes through BLAS, whose threads fight the model's
    # for the cores and make this 10-50x slower on a busy 2-core machine.
    return [
        planes[0] * np.float32(row[0]) + planes[1] * np.float32(row[1]) + planes[2] * np.float32(row[2])
        for row in matrix
    ]


# Full-range BT.601 (JPEG's YCbCr) without the chroma offset: it cancels in a mean/std transfer.
_RGB_TO_YCC = np.array(
    [[0.299, 0.587, 0.114], [-0.168736, -0.331264, 0.5], [0.5, -0.418688, -0.081312]], np.float32
)
_YCC_TO_RGB = np.linalg.inv(_RGB_TO_YCC)


def select_faces(
    faces: list[Face], *, min_size: float = 0.0, only_largest: bool = False, max_faces: int | None = None
) -> list[Face]:
    """Faces to restore: at least ``min_size`` px, largest first when limited."""
    kept = [face for face in faces if face.size >= min_size]
    kept.sort(key=lambda face: face.size, reverse=True)
    if only_largest:
        return kept[:1]
    if max_faces is not None:
        return kept[:max_faces]
    return kept
