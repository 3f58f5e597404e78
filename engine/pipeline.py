"""The Enhancer: settings in, restored photos out. Detection, alignment, batched restoration, paste-back.

Everything here is plain data in, plain data out: the CLI, the batch runner and the GUI share it.
An ``Enhancer`` holds only read-only state after construction (sessions, specs), so one instance may
serve several threads.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import TypeVar

import numpy as np

from engine import faces as facelib
from engine.detectors import build_detector
from engine.detectors.base import Detector
from engine.errors import CancelledError, ModelNotFoundError
from engine.faces import Face
from engine.imageio import Image, resize_image, to_uint8
from engine.models import ModelSpec, ModelStore
from engine.resample import resize
from engine.restorers import load_restorer
from engine.runtime import create_session, resolve_providers

DEFAULT_RESTORER = "restora-lite"
DEFAULT_DETECTOR = "mtcnn"
PRECISIONS = ("auto", "fp32", "fp16", "int8")
PROVIDERS = ("auto", "cpu", "cuda", "directml", "coreml", "openvino")
UPSCALES = (1, 2, 4)
# Faces per restorer call when --batch-size is auto. 2, not 4: with restora-lite's INT8 head conv in
# float, each face in a batch holds about 95 MB of activations (peak RSS on a folder of 1 MP photos
# 517 MB at 2, 706 MB at 4), and 4 was no faster (photos/s within run-to-run noise on all sets).
DEFAULT_BATCH_SIZE = 2

K = TypeVar("K")


@dataclass(frozen=True)
class EnhanceSettings:
    """Everything that decides what a photo's output looks like (and which models make it).

    One snapshot is taken per job: the GUI and the CLI build it, nothing mutates it.
    """

    model: str = DEFAULT_RESTORER
    detector: str = DEFAULT_DETECTOR
    precision: str = "auto"
    provider: str = "auto"
    fidelity: float | None = None  # None: the model's default
    batch_size: int | None = None  # None: auto
    min_face: int | None = None  # None: auto (effective_min_face)
    only_largest: bool = False
    max_faces: int | None = None
    aligned: bool = False
    upscale: int = 1
    color_correction: bool = True
    detect_max_side: int = 640  # detection copy: this long side, or larger where min_face needs it
    threads: int | None = None

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, not {self.precision!r}")
        if self.provider not in PROVIDERS:
            raise ValueError(f"provider must be one of {', '.join(PROVIDERS)}, not {self.provider!r}")
        if self.fidelity is not None and not 0.0 <= self.fidelity <= 1.0:
            raise ValueError(f"fidelity must be between 0 and 1, not {self.fidelity}")
        if self.upscale not in UPSCALES:
            raise ValueError(f"upscale must be one of {', '.join(map(str, UPSCALES))}, not {self.upscale}")
        if self.batch_size is not None and self.batch_size < 1:
            raise ValueError(f"batch size must be at least 1, not {self.batch_size}")
        if self.min_face is not None and self.min_face < 0:
            raise ValueError(f"minimum face size must not be negative, not {self.min_face}")


class CancelToken:
    """A flag a job checks between photos and batches; set it from any thread to stop the work."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def raise_if_cancelled(self) -> None:
        if self._event.is_set():
            raise CancelledError("cancelled")


@dataclass(frozen=True, eq=False)
class FaceRestoration:
    """One face's model input and output, kept so fidelity can be re-blended without re-running."""

    face: Face  # in the source image's pixel coordinates
    matrix: np.ndarray  # (2, 3) source image -> crop
    crop: np.ndarray  # (S, S, 3) uint8: what the model saw
    restored: np.ndarray  # (S, S, 3) uint8: what the model gave back
    native_fidelity: float | None = None  # set when the model applied fidelity itself (CodeFormer)
    coarse: bool = False  # restored smaller as it holds no finer detail (facelib.AlignedFace.coarse)


@dataclass(frozen=True, eq=False)
class PreparedPhoto:
    """A photo with its faces found, chosen and aligned: everything before the restorer runs."""

    image: Image
    faces: tuple[Face, ...]  # the chosen faces
    detected: int  # faces the detector found before selection
    aligned: tuple[facelib.AlignedFace, ...]


@dataclass(frozen=True, eq=False)
class Restoration:
    """A processed photo: its source, the faces restored, and the composed output image."""

    source: Image
    faces: tuple[FaceRestoration, ...]
    output: Image
    detected: int  # faces the detector found before selection
    aligned: bool = False

    @property
    def face_count(self) -> int:
        return len(self.faces)


@dataclass(frozen=True)
class ComposeOptions:
    fidelity: float
    upscale: float = 1
    color_correction: bool = True
    include: Sequence[bool] | None = None  # per face; None = all


def resolve_precision(store: ModelStore, model: str, precision: str, provider: str) -> str:
    """The precision variant to load: ``auto`` is int8 on a CPU and fp16 on a GPU, when present."""
    available = store.precisions(model)
    if not available:
        raise ModelNotFoundError(f"unknown model {model!r}; known: {', '.join(store.names('restorer'))}")
    if precision != "auto":
        if precision not in available:
            raise ModelNotFoundError(
                f"model {model} has no {precision} variant; available: {', '.join(available)}"
            )
        return precision
    providers, _ = resolve_providers(provider)
    on_gpu = providers[0] not in ("CPUExecutionProvider", "OpenVINOExecutionProvider")
    preference = ("fp16", "fp32", "int8") if on_gpu else ("int8", "fp32", "fp16")
    for candidate in preference:
        if candidate in available:
            spec = store.get(model, candidate)
            if all(store.locate(spec, f.role) is not None for f in spec.files):
                return candidate
    return next(c for c in preference if c in available)


def load_detector(
    store: ModelStore, spec: ModelSpec, provider: str = "auto", threads: int | None = None
) -> Detector:
    """Build a detector from its manifest entry (files verified by sha256 first)."""
    if spec.family != "detector":
        raise ModelNotFoundError(f"{spec.name} is a {spec.family}, not a face detector")
    paths = store.require(spec)
    return build_detector(
        spec, paths, lambda path: create_session(path, provider, threads)
    )


# The smallest face the detectors find reliably, in pixels of the image they are given (MTCNN's
# default minimum; YuNet and SCRFD do about as well), and the largest copy detection ever runs on.
DETECTOR_MIN_FACE = 16
DETECT_SIDE_CEILING = 4096


def effective_min_face(min_face: int | None, width: int, height: int) -> float:
    """The smallest face to find and restore in a photo of this size.

    ``None`` (the default) is the largest of 16 px, 2.5 % of the long side up to 1600 px (40 px),
    and 1 % of the long side: detection then runs on a copy of at least 640 px, as CodeFormer and
    FaceFusion detect, which finds every face of the real test photos that full resolution finds
    (docs/BENCHMARKS.md) in a fraction of the time; a face smaller than that holds too little to
    restore. An explicit value is always honoured.
    """
    if min_face is not None:
        return float(min_face)
    longest = max(width, height)
    return max(float(DETECTOR_MIN_FACE), 0.025 * min(longest, 1600), 0.01 * longest)


def detection_scale(width: int, height: int, max_side: int, min_face: float) -> float:
    """How much to shrink a photo before detection, at most 1.

    Big photos are shrunk to ``max_side``, but never so far that a face of ``min_face`` pixels falls
    below what the detector can see: ``--min-face`` is a promise that such faces are found. Raising
    it is how a user trades small faces for speed on big photos. A ceiling keeps memory bounded on
    huge (48 MP) photos, where faces under about ``min_face * longest / 4096`` px may be missed.
    """
    longest = max(width, height)
    factor = max_side / longest
    if min_face > 0:
        factor = max(factor, DETECTOR_MIN_FACE / min_face)
    return min(1.0, factor, DETECT_SIDE_CEILING / longest)


def detect_faces(
    detector: Detector, image: Image | np.ndarray, max_side: int, min_face: int | None = None
) -> list[Face]:
    """Detect on a copy shrunk by ``detection_scale`` and map the faces back to full resolution."""
    pixels = to_uint8(image.pixels if isinstance(image, Image) else image)
    height, width = pixels.shape[:2]
    factor = detection_scale(width, height, max_side, effective_min_face(min_face, width, height))
    if factor >= 1.0:
        return detector.detect(pixels)
    small = resize(pixels, (max(round(width * factor), 1), max(round(height * factor), 1)), "area")
    return [face.scaled(1.0 / factor) for face in detector.detect(small)]


class Enhancer:
    """Loads the detector and restorer once, then restores any number of photos.

    Construction raises ModelError subclasses (unknown, missing, corrupt model) before any photo is
    touched, which is what lets the CLI report those as usage errors.
    """

    def __init__(self, settings: EnhanceSettings, store: ModelStore | None = None) -> None:
        self.settings = settings
        self.store = store if store is not None else ModelStore.default()
        self.notes: list[str] = []
        _, note = resolve_providers(settings.provider)
        if note:
            self.notes.append(note)
        self.precision = resolve_precision(self.store, settings.model, settings.precision, settings.provider)
        self.restorer_spec: ModelSpec = self.store.get(settings.model, self.precision)
        if self.restorer_spec.family != "restorer":
            raise ModelNotFoundError(f"{settings.model} is a {self.restorer_spec.family}, not a face restorer")
        self.restorer = load_restorer(self.store, settings.model, self.precision, settings.provider, settings.threads)
        self.provider = self.restorer.session.get_providers()[0]
        self.detector_spec: ModelSpec | None = None
        self.detector: Detector | None = None
        if not settings.aligned:
            self.detector_spec = self.store.get(settings.detector)
            self.detector = load_detector(self.store, self.detector_spec, settings.provider, settings.threads)

    @property
    def fidelity(self) -> float:
        if self.settings.fidelity is not None:
            return self.settings.fidelity
        return float(self.restorer_spec.default_fidelity)

    @property
    def batch_size(self) -> int:
        return self.settings.batch_size or DEFAULT_BATCH_SIZE

    # -- detection -----------------------------------------------------------------------------

    def detect(self, image: Image | np.ndarray) -> list[Face]:
        """All faces in the photo, in its pixel coordinates (detection on a downscaled copy)."""
        if self.detector is None:
            raise ModelNotFoundError("no detector loaded (aligned mode)")
        return detect_faces(self.detector, image, self.settings.detect_max_side, self.settings.min_face)

    def select(self, found: list[Face], width: int, height: int) -> list[Face]:
        """The faces to restore in a photo of this size (min face, only largest, max faces)."""
        return facelib.select_faces(
            found,
            min_size=effective_min_face(self.settings.min_face, width, height),
            only_largest=self.settings.only_largest,
            max_faces=self.settings.max_faces,
        )

    # -- restoration ---------------------------------------------------------------------------

    def restore_crops(
        self, crops: np.ndarray, cancel: CancelToken | None = None, *, mirrored: bool = False,
        fidelity: float | None = None,
    ) -> np.ndarray:
        """Restore (N, S, S, 3) uint8 crops in batches of ``batch_size`` (``OnnxRestorer.restore``);
        ``fidelity`` overrides the settings' for a model that takes it as an input."""
        if len(crops) == 0:
            return crops
        if fidelity is None:
            fidelity = self.fidelity
        native = fidelity if self.restorer.has_native_weight else None
        outputs = []
        for start in range(0, len(crops), self.batch_size):
            if cancel is not None:
                cancel.raise_if_cancelled()
            outputs.append(self.restorer.restore(crops[start : start + self.batch_size], native, mirrored=mirrored))
        return np.concatenate(outputs, axis=0)

    def restore_aligned(
        self, crops: Sequence[np.ndarray], coarse: Sequence[bool], cancel: CancelToken | None = None,
        fidelity: float | None = None,
    ) -> list[np.ndarray]:
        """The restored crop of each aligned face crop, in order: one batch per crop size (small faces
        get smaller crops, faces.crop_size_for). A coarse face (``AlignedFace.coarse``) is restored as
        itself and mirrored, averaged: on the validation faces that adds 0.06 dB to the severe tier, and
        at half size the pair costs about half of one full-size pass (restora bench, INT8: 13.6 against
        28.5 ms)."""
        restored: list[np.ndarray] = [np.empty(0, np.uint8)] * len(crops)
        for size, mirrored in sorted(set(zip(map(len, crops), coarse, strict=True))):
            where = [i for i, crop in enumerate(crops) if len(crop) == size and coarse[i] == mirrored]
            batch = np.stack([crops[i] for i in where])
            outputs = self.restore_crops(batch, cancel, mirrored=mirrored, fidelity=fidelity)
            for i, out in zip(where, outputs, strict=True):
                restored[i] = out
        return restored

    def crop_size(self, region: float) -> int:
        """The crop size for a face whose crop covers ``region`` photo pixels (faces.crop_size_for)."""
        return facelib.crop_size_for(region, self.restorer.sizes, self.settings.upscale)

    def prepare(self, image: Image) -> PreparedPhoto:
        """Detect, select and align one photo's faces. Safe to call from several threads at once,
        so a batch can prepare the next photos while the restorer works on this one's faces."""
        if self.settings.aligned:
            pixels = to_uint8(image.pixels)
            size = self.crop_size(max(image.width, image.height))
            crop = facelib.resize_aligned(pixels, size)
            smaller = facelib.content_crop_size(crop, self.restorer.sizes)
            coarse = smaller != size
            if coarse:
                size, crop = smaller, facelib.resize_aligned(pixels, smaller)
            matrix = np.array([[size / image.width, 0, 0], [0, size / image.height, 0]], np.float32)
            whole = Face((0.0, 0.0, float(image.width), float(image.height)), np.zeros((5, 2), np.float32), 1.0)
            return PreparedPhoto(image, (whole,), 1, (facelib.AlignedFace(crop, matrix, coarse),))
        pixels = to_uint8(image.pixels)  # once: a 16-bit photo is converted for detection and alignment alike
        found = self.detect(pixels)
        chosen = self.select(found, image.width, image.height)
        template = self.restorer_spec.template or "ffhq"
        full = self.restorer.size
        aligned = tuple(
            self.align(pixels, face, self.crop_size(facelib.face_region(face, template, full)), template)
            for face in chosen
        )
        return PreparedPhoto(image, tuple(chosen), len(found), aligned)

    def align(self, pixels: np.ndarray, face: Face, size: int, template: str) -> facelib.AlignedFace:
        """``face``'s crop at ``size``, or at a smaller size the restorer takes where the crop holds
        no more detail than that (an enlarged or heavily blurred face, facelib.content_crop_size)."""
        aligned = facelib.align_face(pixels, face, size, template)
        smaller = facelib.content_crop_size(aligned.crop, self.restorer.sizes)
        if smaller == size:
            return aligned
        return replace(facelib.align_face(pixels, face, smaller, template), coarse=True)

    def enhance(self, image: Image, cancel: CancelToken | None = None) -> Restoration:
        """Restore every selected face of one photo."""
        return next(iter(self.enhance_many([(0, image)], cancel)))[1]

    def enhance_many(
        self, images: Iterable[tuple[K, Image | PreparedPhoto]], cancel: CancelToken | None = None,
        on_error: Callable[[K, Exception], None] | None = None, *, reuse_source: bool = False,
    ) -> Iterator[tuple[K, Restoration]]:
        """Restore a stream of photos, batching faces across photos into shared inference calls.

        Items may come already prepared (``prepare``, e.g. in loader threads).
        Results come out in input order. A photo whose preparation fails is passed to ``on_error``
        (or re-raised when there is none) and the stream goes on. With ``reuse_source`` each
        output may be pasted into its source's pixels (see ``compose``): the caller must not use
        ``Restoration.source``'s pixels afterwards.
        """
        for key, prepared, records in self.restore_many(images, cancel, on_error):
            yield key, self.compose_result(prepared.image, records, prepared.detected, reuse_source=reuse_source)

    def restore_many(
        self, images: Iterable[tuple[K, Image | PreparedPhoto]], cancel: CancelToken | None = None,
        on_error: Callable[[K, Exception], None] | None = None,
    ) -> Iterator[tuple[K, PreparedPhoto, tuple[FaceRestoration, ...]]]:
        """``enhance_many`` without the composition: each photo with its restored faces.

        ``compose_result`` turns them into the output; it is safe to call from other threads, so the
        batch engine composes in its saver threads while the restorer works on the next faces.
        """
        pending: list[tuple[K, PreparedPhoto]] = []
        queued_faces = 0
        for key, item in images:
            if cancel is not None:
                cancel.raise_if_cancelled()
            try:
                prepared = item if isinstance(item, PreparedPhoto) else self.prepare(item)
            except Exception as error:
                if on_error is None:
                    raise
                on_error(key, error)
                continue
            pending.append((key, prepared))
            queued_faces += len(prepared.aligned)
            if queued_faces >= self.batch_size:
                yield from self._flush(pending, cancel)
                pending, queued_faces = [], 0
        if pending:
            yield from self._flush(pending, cancel)

    def _flush(
        self, pending: list[tuple[K, PreparedPhoto]], cancel: CancelToken | None,
    ) -> Iterator[tuple[K, PreparedPhoto, tuple[FaceRestoration, ...]]]:
        aligned = [a for _, prepared in pending for a in prepared.aligned]
        restored = self.restore_aligned([a.crop for a in aligned], [a.coarse for a in aligned], cancel)
        native = self.fidelity if self.restorer.has_native_weight else None
        index = 0
        pending.reverse()
        while pending:
            # Popped, not iterated: a photo handed on is no longer held here (48 MP frames add up).
            key, prepared = pending.pop()
            records = []
            for face, item in zip(prepared.faces, prepared.aligned, strict=True):
                records.append(FaceRestoration(face, item.matrix, item.crop, restored[index], native, item.coarse))
                index += 1
            yield key, prepared, tuple(records)
            del prepared

    def compose_result(
        self, image: Image, records: tuple[FaceRestoration, ...], detected: int, *, reuse_source: bool = False
    ) -> Restoration:
        options = ComposeOptions(self.fidelity, self.settings.upscale, self.settings.color_correction)
        output = compose(image, records, options, aligned=self.settings.aligned, reuse_source=reuse_source)
        return Restoration(image, records, output, detected, self.settings.aligned)


def finish_face(record: FaceRestoration, fidelity: float, color_correction: bool) -> tuple[np.ndarray, float]:
    """The crop to paste for one face and how strongly to paste it.

    Fidelity mixes the restored face with the photo in image space (paste strength 1 - fidelity),
    not with the aligned input crop: the crop is a resampled copy, so mixing with it would blur the
    original even at fidelity 1. Models with a native weight input applied fidelity themselves.
    """
    restored = record.restored
    if color_correction:
        restored = facelib.color_match(restored, record.crop)
    if record.native_fidelity is not None:
        return restored, 1.0
    return restored, 1.0 - fidelity


def compose(
    source: Image, records: Sequence[FaceRestoration], options: ComposeOptions, *, aligned: bool = False,
    reuse_source: bool = False,
) -> Image:
    """Build the output photo from cached face results: cheap, so fidelity changes re-run only this.

    ``options.upscale`` may also be a fraction (a screen-sized preview of a big photo).
    ``reuse_source`` pastes into the source's own (writable) pixels instead of a copy, for callers
    that only want the output: one full frame less in memory (144 MB at 48 MP).
    """
    base = resize_image(source, options.upscale) if options.upscale != 1 else source
    if aligned:
        if not records:
            return base
        finished, strength = finish_face(records[0], options.fidelity, options.color_correction)
        grow = base.width > finished.shape[1]
        size = (base.width, base.height)
        resized = resize(finished, size, "cubic" if grow else "area").astype(np.float32)
        scale = 257.0 if base.pixels.dtype == np.uint16 else 1.0
        limit = 65535.0 if base.pixels.dtype == np.uint16 else 255.0
        original = base.pixels.astype(np.float32)
        if (
            grow and source.width > finished.shape[1] and not records[0].coarse
            and facelib.jpeg_blockiness(source.pixels) < facelib.BLOCKY_FACE
        ):
            # A crop bigger than the model's: add only the model's change, enlarged, so the crop keeps
            # the detail finer than the model's size (as paste_back does for faces in photos). Not for
            # a smaller crop enlarged by ``upscale``: its interpolated copy holds no such detail. Nor
            # for a blocky JPEG, whose finer "detail" is its blocks (facelib.BLOCKY_FACE), nor for a
            # coarse one, whose finer "detail" is noise (facelib.content_crop_size).
            resized -= resize(records[0].crop, size, "cubic")
            mixed = original + resized * np.float32(scale * strength)
        else:
            mixed = original + (resized * scale - original) * strength
        return replace(base, pixels=np.clip(np.rint(mixed), 0, limit).astype(base.pixels.dtype))
    include = options.include
    chosen = [r for i, r in enumerate(records) if include is None or include[i]]
    if not chosen:
        return base
    # One copy, then paste in place; a resized base is already a copy unless it is read-only.
    own = base is not source or reuse_source
    # Into a face bigger than the crop, in the photo itself and in the output, only the restorer's
    # change is pasted and the photo keeps its own finer detail (facelib.keeps_photo_detail), unless
    # that detail is mostly JPEG blocks (facelib.face_detail_worth_keeping). Only the photo itself
    # holds such detail: enlarged (``upscale``), a face the crop out-resolves would keep just the
    # enlarged JPEG blocks and noise of its interpolated copy. Decided before any paste, on the
    # photo as it came (with ``reuse_source`` the pastes write into it).
    keep_detail = [not r.coarse and facelib.face_detail_worth_keeping(source.pixels, r.face, r.matrix) for r in chosen]
    pixels = base.pixels if own and base.pixels.flags.writeable else base.pixels.copy()
    for record, keep in zip(chosen, keep_detail, strict=True):
        finished, strength = finish_face(record, options.fidelity, options.color_correction)
        matrix = facelib.scale_matrix(record.matrix, options.upscale)
        seen = record.crop if keep else None
        facelib.paste_back(pixels, finished, matrix, strength=strength, in_place=True, original_crop=seen)
    return replace(base, pixels=pixels)


@dataclass(frozen=True)
class EngineInfo:
    """What a run used, for reports and the About box."""

    model: str
    detector: str | None
    precision: str
    provider: str
    notes: tuple[str, ...] = field(default_factory=tuple)


def engine_info(enhancer: Enhancer) -> EngineInfo:
    return EngineInfo(
        model=enhancer.settings.model,
        detector=None if enhancer.settings.aligned else enhancer.settings.detector,
        precision=enhancer.precision,
        provider=enhancer.provider.removesuffix("ExecutionProvider").lower(),
        notes=tuple(enhancer.notes),
    )
