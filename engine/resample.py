"""Resampling pixel arrays: resize and affine warps, through Pillow.

OpenCV did this before, but its wheel (150 MB with its video codecs and its own BLAS) was most of
the packaged app's size for a handful of calls. Pillow, already needed for metadata, has the same
filters in C; this module adapts them to numpy arrays of any channel count and dtype, and adds
what Pillow lacks: a replicated border for warps and bounded memory on very large photos.

Sizes are ``(width, height)`` and matrices are 2x3 source -> destination maps with pixel centres
at integer coordinates, as in OpenCV, so call sites read the same as before. Results may be
read-only views of Pillow's output (copying a 48 MP result once more only to make it writable
would cost 144 MB): copy before writing into one.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
from PIL import Image

Interpolation = Literal["area", "linear", "cubic", "lanczos"]
Border = Literal["replicate", "constant"]

_FILTERS = {
    "area": Image.Resampling.BOX,
    "linear": Image.Resampling.BILINEAR,
    "cubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
}
_WARP_FILTERS = {"linear": Image.Resampling.BILINEAR, "cubic": Image.Resampling.BICUBIC}
_SUPPORT = {"area": 0.5, "linear": 1.0, "cubic": 2.0, "lanczos": 3.0}  # filter radius, in output pixels
# Above this many source pixels a resize runs in horizontal strips: Pillow would otherwise copy a
# whole 48 MP photo into its own 4-byte-per-pixel storage (190 MB) just to make a small copy of it.
_STRIP_PIXELS = 8_000_000
_STRIP_OUTPUT_ROWS = 128


def resize(pixels: np.ndarray, size: tuple[int, int], interpolation: Interpolation = "area") -> np.ndarray:
    """``pixels`` (H, W) or (H, W, C) resampled to ``size`` = (width, height), same dtype.

    Downscaling filters are widened by the scale (antialiased), unlike OpenCV's linear/cubic.
    "area" is Pillow's box filter: exact block means at whole-number ratios; at other ratios it
    gives whole source pixels equal weight rather than weighing their coverage as OpenCV's
    INTER_AREA does, so where that matters (MTCNN's 0.7x pyramid) "linear" is the closer match.
    """
    width, height = int(size[0]), int(size[1])
    if width < 1 or height < 1:
        raise ValueError(f"resize to {width}x{height}: both sides must be at least 1")
    if pixels.shape[1] == width and pixels.shape[0] == height:
        return pixels.copy()
    src_h, src_w = pixels.shape[:2]
    if interpolation == "area" and (width > src_w or height > src_h):
        interpolation = "linear"  # see pillow_filter
    if interpolation == "area" and src_w % width == 0 and src_w // width == src_h // height and src_h % height == 0:
        # A whole-number ratio: the box filter is a block mean, which Pillow's ``reduce`` does about
        # 3x faster than its ``resize`` (a 48 MP photo's detection copy: 141 -> 49 ms).
        return block_means(pixels, src_w // width)
    resample = _FILTERS[interpolation]
    if src_h * src_w <= _STRIP_PIXELS or height < 2 * _STRIP_OUTPUT_ROWS:
        return _per_image(pixels, lambda im: im.resize((width, height), resample))
    # Strip by strip: Pillow's ``box`` resamples part of an image exactly as the whole would, as
    # long as the strip holds every source row that the filter reaches.
    step = src_h / height
    reach = math.ceil(_SUPPORT[interpolation] * max(step, 1.0)) + 2
    strips = []
    for top in range(0, height, _STRIP_OUTPUT_ROWS):
        bottom = min(top + _STRIP_OUTPUT_ROWS, height)
        first = max(math.floor(top * step) - reach, 0)
        last = min(math.ceil(bottom * step) + reach, src_h)
        box = (0.0, top * step - first, float(src_w), bottom * step - first)
        rows = bottom - top

        def part(im: Image.Image, box: tuple[float, float, float, float] = box, rows: int = rows) -> Image.Image:
            return im.resize((width, rows), resample, box=box)

        strips.append(_per_image(pixels[first:last], part))
    return np.concatenate(strips, axis=0)


def pillow_filter(
    interpolation: Interpolation, source: tuple[float, float], target: tuple[int, int]
) -> Image.Resampling:
    """The Pillow filter ``resize`` uses to bring a ``source`` (w, h) region to ``target`` (w, h).

    Enlarging, a box filter is a blocky nearest-neighbour; OpenCV's INTER_AREA, which the call
    sites were written for, interpolates bilinearly there, and so does "area" here.
    """
    if interpolation == "area" and (target[0] > source[0] or target[1] > source[1]):
        return _FILTERS["linear"]
    return _FILTERS[interpolation]


def invert_affine(matrix: np.ndarray) -> np.ndarray:
    """The inverse of a 2x3 affine matrix (float64)."""
    full = np.vstack([np.asarray(matrix, np.float64).reshape(2, 3), [0.0, 0.0, 1.0]])
    return np.linalg.inv(full)[:2]


def warp_affine(
    pixels: np.ndarray,
    matrix: np.ndarray,
    size: tuple[int, int],
    *,
    interpolation: Literal["linear", "cubic"] = "linear",
    border: Border = "constant",
    value: float = 0.0,
) -> np.ndarray:
    """``pixels`` mapped through ``matrix`` (source -> destination) into a ``size`` = (width, height) array.

    Destination pixels that fall outside the source take ``value`` (``border="constant"``) or the
    nearest edge pixel (``"replicate"``). Only the window of the source that the destination covers
    is read and converted, so warping a face out of a 48 MP photo touches just that face. A warp that
    shrinks by more than 2x first reduces that window by block means (``antialias_reduction``): a big
    face aligned down to a 512 px crop would otherwise be point-sampled into jagged hair and moire.
    """
    width, height = int(size[0]), int(size[1])
    reduction = antialias_reduction(matrix)
    # The kernel's reach is counted in reduced pixels, so the window's margin grows with the reduction.
    plan = _warp_plan(pixels, matrix, width, height, border, value, _WARP_MARGIN * reduction)
    if plan is None:
        return np.full((height, width, *pixels.shape[2:]), value, pixels.dtype)
    window, (x0, y0) = plan
    inverse = invert_affine(reduced_matrix(_shifted(matrix, x0, y0), reduction))
    data = _pillow_coefficients(inverse, 0, 0)
    resample = _WARP_FILTERS[interpolation]

    def transform(im: Image.Image) -> Image.Image:
        fill = value if im.mode == "F" else round(value)
        return im.transform(
            (width, height), Image.Transform.AFFINE, data, resample=resample,
            fillcolor=(fill,) * 3 if im.mode == "RGB" else fill,
        )

    return _per_image(block_means(window, reduction), transform)


def block_means(pixels: np.ndarray, factor: int) -> np.ndarray:
    """``pixels`` reduced ``factor`` times each way by the means of factor x factor blocks (Pillow's
    ``reduce``, integer C: 2-3 ms for 4 MP of RGB); the same array when ``factor`` is 1. A partial
    last block is averaged as it is; warps keep it beyond their reach."""
    if factor <= 1:
        return pixels
    # In strips of whole blocks: a big face's window (a view into a 48 MP photo) is never copied whole.
    rows = factor * max(1, _STRIP_OUTPUT_ROWS // 4)
    parts = [_per_image(pixels[top : top + rows], lambda im: im.reduce(factor))
             for top in range(0, pixels.shape[0], rows)]
    return parts[0] if len(parts) == 1 else np.concatenate(parts, axis=0)


def reduced_matrix(matrix: np.ndarray, factor: int) -> np.ndarray:
    """``matrix`` (source -> destination) for the source reduced ``factor`` times by block means:
    reduced pixel centre x stands where source pixel centre (x + 0.5) * factor - 0.5 was."""
    matrix = np.asarray(matrix, np.float64).reshape(2, 3)
    if factor <= 1:
        return matrix
    offset = matrix[:, :2].sum(axis=1, keepdims=True) * (0.5 * factor - 0.5)
    return np.concatenate([matrix[:, :2] * factor, matrix[:, 2:] + offset], axis=1)


def _shifted(matrix: np.ndarray, x0: int, y0: int) -> np.ndarray:
    """``matrix`` (source -> destination) for a window of the source whose first pixel is (x0, y0)."""
    matrix = np.asarray(matrix, np.float64).reshape(2, 3)
    return np.concatenate([matrix[:, :2], matrix[:, 2:] + matrix[:, :2] @ np.array([[x0], [y0]], np.float64)], axis=1)


_WARP_MARGIN = 3  # the widest kernel (bicubic) reaches two pixels out; one more for rounding


@dataclass(frozen=True)
class Premultiplied:
    """An RGB + alpha image as Pillow's premultiplied "RGBa", with a transparent border of
    ``_WARP_MARGIN`` pixels: made once, then warped band by band (``warp_premultiplied``).

    Resampling premultiplied colour is what keeps a masked image's edges clean, and one pass over
    4-byte pixels costs what an RGB warp does (Pillow stores RGB in 4 bytes too), so a crop and its
    paste mask warp for the price of the crop alone.
    """

    image: Image.Image
    width: int  # of the image inside the border
    height: int
    reduction: int = 1  # pixels of the arrays it came from per pixel of it, each way


def premultiply(rgb: np.ndarray, alpha: np.ndarray, *, reduce: int = 1) -> Premultiplied:
    """(H, W, 3) uint8 colour and (H, W) uint8 alpha as a ``Premultiplied`` image, first reduced
    ``reduce`` times (Pillow's box ``reduce`` on the premultiplied pixels) when above 1.
    ``warp_premultiplied`` still takes matrices in the arrays' own pixels; see ``antialias_reduction``."""
    if rgb.dtype != np.uint8 or alpha.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape != (*alpha.shape, 3):
        raise ValueError(f"expected (H, W, 3) and (H, W) uint8, got {rgb.shape} {rgb.dtype} and "
                         f"{alpha.shape} {alpha.dtype}")
    image = Image.fromarray(np.ascontiguousarray(rgb))
    image.putalpha(Image.fromarray(np.ascontiguousarray(alpha)))
    image = image.convert("RGBa")
    if reduce > 1:
        image = image.reduce(reduce)  # r x r block means; a partial last block is averaged as it is
    width, height = image.size
    padded = Image.new("RGBa", (width + 2 * _WARP_MARGIN, height + 2 * _WARP_MARGIN))
    padded.paste(image, (_WARP_MARGIN, _WARP_MARGIN))
    return Premultiplied(padded, width, height, max(reduce, 1))


def antialias_reduction(matrix: np.ndarray) -> int:
    """By how many times to reduce a source before warping it through ``matrix`` (source -> destination).

    A bilinear warp reads 2 x 2 source pixels per destination pixel, so a warp that shrinks by more
    than 2x skips source pixels and aliases fine detail (a restored 512 px face pasted into a 150 px
    one: lashes and hair turn to jagged noise). Reduced first by whole block means, the warp is left at
    most a 2x reduction. Pillow's ``reduce`` costs 0.2-0.5 ms on a 512 px RGBa crop, against 3.5 ms for
    an antialiased bicubic resize to the same end.
    """
    shrink = linear_scale(matrix)
    return max(1, math.ceil(0.5 / shrink)) if 0.0 < shrink < 0.5 else 1


def linear_scale(matrix: np.ndarray) -> float:
    """How much ``matrix`` (source -> destination) enlarges lengths, on average over directions:
    the square root of its linear part's area factor (below 1: it shrinks)."""
    return math.sqrt(abs(float(np.linalg.det(np.asarray(matrix, np.float64).reshape(2, 3)[:, :2]))))


def warp_premultiplied(source: Premultiplied, matrix: np.ndarray, size: tuple[int, int]) -> Image.Image | None:
    """``source`` mapped through ``matrix`` (source -> destination, bilinear) into a ``size`` =
    (width, height) "RGBa" image; None when the footprint misses the source (all transparent).
    Beyond the border Pillow fills with transparent black, as the border itself is.

    A matrix that only enlarges and shifts (what ``premultiply_upright`` leaves) is a separable resize:
    Pillow's ``resize`` costs about 7 ns per output pixel here against 22 for its affine ``transform``.
    """
    width, height = int(size[0]), int(size[1])
    matrix = reduced_matrix(matrix, source.reduction)
    inverse = invert_affine(matrix)
    low, high = _source_footprint(inverse, width, height)
    if (high[0] < -_WARP_MARGIN or high[1] < -_WARP_MARGIN
            or low[0] > source.width + _WARP_MARGIN or low[1] > source.height + _WARP_MARGIN):
        return None
    resample = Image.Resampling.BILINEAR
    if matrix[0, 1] == 0.0 and matrix[1, 0] == 0.0 and matrix[0, 0] >= 1.0 and matrix[1, 1] >= 1.0:
        # The destination's pixel edges, in the padded image's pixel-edge coordinates (centres at +0.5).
        box = (low[0] + 0.5 + _WARP_MARGIN, low[1] + 0.5 + _WARP_MARGIN,
               high[0] + 0.5 + _WARP_MARGIN, high[1] + 0.5 + _WARP_MARGIN)
        padded_w, padded_h = source.image.size
        if box[0] >= 0.0 and box[1] >= 0.0 and box[2] <= padded_w and box[3] <= padded_h:
            return source.image.resize((width, height), resample, box=box)
    return source.image.transform((width, height), Image.Transform.AFFINE,
                                  _pillow_coefficients(inverse, -_WARP_MARGIN, -_WARP_MARGIN), resample=resample)


# Above this enlargement ``premultiply_upright`` pays: its bicubic rotation of a 512 px crop (about
# 20 ms) costs what Pillow's general transform loses to a separable resize on a paste this much bigger.
UPRIGHT_MIN_SCALE = 2.5


def premultiply_upright(
    rgb: np.ndarray, alpha: np.ndarray, matrix: np.ndarray
) -> tuple[Premultiplied, np.ndarray] | None:
    """When ``matrix`` (source -> destination) is a similarity that enlarges more than
    ``UPRIGHT_MIN_SCALE`` times: colour and alpha (as for ``premultiply``) turned upright at their own
    scale, premultiplied, and the matrix left for them, a scale and a shift, which
    ``warp_premultiplied`` does as a separable resize. None for any other matrix.

    Why: a face pasted back into a big photo (a 512 px crop into a 2000 px box at 12 MP) is mostly
    Pillow's general transform. Turning 512 px and then resizing costs about half. The turn is bicubic,
    so the two resamplings together stay as sharp as one bilinear warp, and it runs before
    premultiplying: bicubic overshoot is clipped per channel, so colour never ends above its alpha
    (Pillow's premultiplied paste would wrap such a pixel around).
    """
    matrix = np.asarray(matrix, np.float64).reshape(2, 3)
    (a, b), (c, d) = matrix[:, :2]
    scale = math.hypot(a, c)
    if scale <= UPRIGHT_MIN_SCALE or abs(a - d) > 1e-6 * scale or abs(b + c) > 1e-6 * scale:
        return None
    rotation = np.array([[a, b], [c, d]]) / scale
    height, width = alpha.shape
    # The turned content's box: the corners of the source's outer pixel edges, turned.
    corners = np.array([[-0.5, -0.5], [width - 0.5, -0.5], [-0.5, height - 0.5], [width - 0.5, height - 0.5]])
    turned_corners = corners @ rotation.T
    low = turned_corners.min(axis=0)
    turned_w, turned_h = (int(v) for v in np.ceil(turned_corners.max(axis=0) - low))
    # Source pixel p lands on padded canvas pixel R p - low - 0.5 + margin: the box starts at the margin.
    turn = np.concatenate([rotation, (-low - 0.5 + _WARP_MARGIN)[:, None]], axis=1)
    image = Image.fromarray(np.ascontiguousarray(rgb))
    image.putalpha(Image.fromarray(np.ascontiguousarray(alpha)))
    canvas = image.transform((turned_w + 2 * _WARP_MARGIN, turned_h + 2 * _WARP_MARGIN), Image.Transform.AFFINE,
                             _pillow_coefficients(invert_affine(turn), 0, 0), resample=Image.Resampling.BICUBIC)
    # Canvas content pixel q = R p - low - 0.5, and the destination is scale * R p + t.
    left = np.concatenate([np.eye(2) * scale, (matrix[:, 2] + scale * (low + 0.5))[:, None]], axis=1)
    return Premultiplied(canvas.convert("RGBa"), turned_w, turned_h), left


def _source_footprint(inverse: np.ndarray, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """The (x, y) minimum and maximum, in source pixels, that a width x height destination's outer
    pixel edges map to through ``inverse`` (destination -> source)."""
    corners = np.array([[-0.5, -0.5], [width - 0.5, -0.5], [-0.5, height - 0.5], [width - 0.5, height - 0.5]])
    mapped = corners @ inverse[:, :2].T + inverse[:, 2]
    return mapped.min(axis=0), mapped.max(axis=0)


def _pillow_coefficients(inverse: np.ndarray, x0: int, y0: int) -> tuple[float, ...]:
    """Pillow's AFFINE data for the destination -> source map ``inverse`` read from a window whose
    first pixel is source pixel (x0, y0)."""
    a, b, c = inverse[0]
    d, e, f = inverse[1]
    c -= x0
    f -= y0
    # Pillow samples at the centre of each destination pixel and puts source pixel centres at
    # +0.5; OpenCV's convention (centres at integers) differs by this shift.
    return (a, b, c + 0.5 - 0.5 * (a + b), d, e, f + 0.5 - 0.5 * (d + e))


def _warp_plan(
    pixels: np.ndarray, matrix: np.ndarray, width: int, height: int, border: Border, value: float, margin: int
) -> tuple[np.ndarray, tuple[int, int]] | None:
    """The source window a warp reads, ``margin`` pixels beyond its footprint, and the window's first
    pixel (x0, y0) in the source (None: it reads nothing)."""
    inverse = invert_affine(matrix)
    low, high = _source_footprint(inverse, width, height)
    x0, y0 = np.floor(low).astype(int) - margin
    x1, y1 = np.ceil(high).astype(int) + margin + 1
    if border == "constant":
        # Samples beyond the photo plus the margin all read ``value``: Pillow's fill gives it there,
        # so the window never grows past the photo however far the footprint reaches.
        src_h, src_w = pixels.shape[:2]
        x0, x1 = max(x0, -margin), min(x1, src_w + margin)
        y0, y1 = max(y0, -margin), min(y1, src_h + margin)
        if x1 <= x0 or y1 <= y0:
            return None
    return _window(pixels, x0, x1, y0, y1, border, value), (int(x0), int(y0))


def _window(
    pixels: np.ndarray, x0: int, x1: int, y0: int, y1: int, border: Border, value: float
) -> np.ndarray:
    """``pixels[y0:y1, x0:x1]`` where the range may reach outside: edge pixels or ``value`` there."""
    src_h, src_w = pixels.shape[:2]
    if x0 >= 0 and y0 >= 0 and x1 <= src_w and y1 <= src_h:
        return pixels[y0:y1, x0:x1]
    cx0, cx1, cy0, cy1 = max(x0, 0), min(x1, src_w), max(y0, 0), min(y1, src_h)
    if cx0 < cx1 and cy0 < cy1:
        # Padding the part inside copies whole rows; gathering every pixel by index cost 2.6 ms for
        # a 512 px crop, more than the warp itself.
        pad = [(cy0 - y0, y1 - cy1), (cx0 - x0, x1 - cx1)] + [(0, 0)] * (pixels.ndim - 2)
        inner = pixels[cy0:cy1, cx0:cx1]
        if border == "constant":
            return np.pad(inner, pad, mode="constant", constant_values=np.asarray(value).astype(pixels.dtype))
        return np.pad(inner, pad, mode="edge")
    xs = np.clip(np.arange(x0, x1), 0, src_w - 1)
    ys = np.clip(np.arange(y0, y1), 0, src_h - 1)
    window = pixels[ys[:, None], xs[None, :]]
    if border == "constant":
        window[...] = value
    return window


PillowOperation = Callable[[Image.Image], Image.Image]


def _per_image(pixels: np.ndarray, operation: PillowOperation) -> np.ndarray:
    """Apply a Pillow operation to an array: whole for uint8 gray/RGB, else one channel at a time."""
    if pixels.dtype == np.uint8 and (pixels.ndim == 2 or pixels.shape[2] == 3):
        return np.asarray(operation(Image.fromarray(np.ascontiguousarray(pixels))))
    if pixels.ndim == 2:
        return _one_channel(pixels, operation)
    return np.dstack([_one_channel(pixels[..., i], operation) for i in range(pixels.shape[2])])


def _one_channel(channel: np.ndarray, operation: PillowOperation) -> np.ndarray:
    if channel.dtype == np.uint8:
        return np.asarray(operation(Image.fromarray(np.ascontiguousarray(channel))))
    if channel.dtype == np.uint16:
        # As 32-bit integers: no float round trip, and Pillow's "I;16" mode cannot do everything
        # (its bilinear transform returns garbage, its reduce refuses).
        result = np.asarray(operation(Image.fromarray(channel.astype(np.int32))))
        return np.clip(result, 0, 65535).astype(np.uint16)
    result = np.asarray(operation(Image.fromarray(np.ascontiguousarray(channel, dtype=np.float32))))
    if channel.dtype.kind == "f":
        return result.astype(channel.dtype)
    info = np.iinfo(channel.dtype)
    return np.clip(np.rint(result), info.min, info.max).astype(channel.dtype)
