"""Pool jobs: everything slow (decode, detect, restore, compose, save, thumbnails) runs here.

Jobs receive frozen snapshots (``AppSettings``, ``Restoration``) and report back only through Qt
signals on a ``JobEvents`` hub that lives on the UI thread, carrying exception objects (never
strings or tracebacks). Each enhance job has its own ``CancelToken``, checked between steps, and
outputs are written by the engine's atomic ``save_image``, so a cancelled job leaves no file.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from PySide6.QtCore import QObject, QRunnable, QThreadPool, Signal
from PySide6.QtGui import QImage

from engine.errors import CancelledError
from engine.faces import scale_matrix
from engine.imageio import Image, load_image, save_image
from engine.models import ModelStore, environment_model_dirs
from engine.pipeline import (
    CancelToken,
    ComposeOptions,
    Enhancer,
    EnhanceSettings,
    Restoration,
    compose,
)
from engine.resample import resize
from gui.imaging import file_thumbnail, shrink, to_qimage
from gui.settings import AppSettings

FACE_THUMBNAIL = 96


class EnginePool:
    """Loaded Enhancers, shared by all jobs and built on first use (in a pool thread).

    The key leaves out what only ``compose`` uses (fidelity for blended models, upscale, colour
    correction), so moving the fidelity slider never reloads a model. A lock makes concurrent jobs
    wait for one load instead of each loading the models.
    """

    def __init__(self, store: ModelStore | None = None, capacity: int = 2) -> None:
        self._store = store
        self._capacity = capacity
        self._enhancers: OrderedDict[EnhanceSettings, Enhancer] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def store(self) -> ModelStore:
        with self._lock:
            if self._store is None:
                self._store = ModelStore.default(environment_model_dirs())
            return self._store

    def set_store(self, store: ModelStore) -> None:
        """Use a new store (after an import); loaded models are dropped."""
        with self._lock:
            self._store = store
            self._enhancers.clear()

    def key(self, settings: EnhanceSettings) -> EnhanceSettings:
        native = False
        with contextlib.suppress(Exception):  # an unknown model: Enhancer() reports it with its own message
            native = self.store.get(settings.model).weight_input is not None
        return replace(settings, fidelity=settings.fidelity if native else None, upscale=1, color_correction=True)

    def seed(self, enhancer: Enhancer) -> None:
        """Add an already loaded Enhancer (tests share one across windows)."""
        key = self.key(enhancer.settings)
        with self._lock:
            self._enhancers[key] = enhancer

    def get(self, settings: EnhanceSettings) -> Enhancer:
        key = self.key(settings)
        with self._lock:
            found = self._enhancers.get(key)
            if found is not None:
                self._enhancers.move_to_end(key)
                return found
            if self._store is None:
                self._store = ModelStore.default(environment_model_dirs())
            enhancer = Enhancer(key, self._store)  # raises ModelError subclasses
            self._enhancers[key] = enhancer
            while len(self._enhancers) > self._capacity:
                self._enhancers.popitem(last=False)
            return enhancer


class ResultCache:
    """Restorations of finished photos, least recently used first out, bounded in bytes.

    A photo pushed out is re-processed when it is shown or saved again.
    """

    def __init__(self, limit_bytes: int = 1536 << 20) -> None:
        self.limit_bytes = limit_bytes
        self._entries: OrderedDict[int, tuple[Restoration, int]] = OrderedDict()
        self._bytes = 0

    @staticmethod
    def size_of(restoration: Restoration) -> int:
        total = restoration.source.pixels.nbytes
        total += sum(f.crop.nbytes + f.restored.nbytes for f in restoration.faces)
        return total

    def put(self, item_id: int, restoration: Restoration) -> None:
        self.pop(item_id)
        size = self.size_of(restoration)
        self._entries[item_id] = (restoration, size)
        self._bytes += size
        while self._bytes > self.limit_bytes and len(self._entries) > 1:
            _, (_, dropped) = self._entries.popitem(last=False)
            self._bytes -= dropped

    def get(self, item_id: int) -> Restoration | None:
        entry = self._entries.get(item_id)
        if entry is None:
            return None
        self._entries.move_to_end(item_id)
        return entry[0]

    def pop(self, item_id: int) -> None:
        entry = self._entries.pop(item_id, None)
        if entry is not None:
            self._bytes -= entry[1]

    def clear(self) -> None:
        self._entries.clear()
        self._bytes = 0

    @property
    def bytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._entries)


# -- plain functions the jobs run ------------------------------------------------------------


def rerun_native(enhancer: Enhancer, restoration: Restoration, fidelity: float) -> Restoration:
    """Re-run a model that takes fidelity as an input (CodeFormer) on the cached crops."""
    if not restoration.faces:
        return restoration
    faces = restoration.faces
    restored = enhancer.restore_aligned([f.crop for f in faces], [f.coarse for f in faces], fidelity=fidelity)
    rerun = tuple(replace(f, restored=out, native_fidelity=fidelity) for f, out in zip(faces, restored, strict=True))
    return replace(restoration, faces=rerun)


def needs_native_rerun(restoration: Restoration, fidelity: float) -> bool:
    return any(
        face.native_fidelity is not None and abs(face.native_fidelity - fidelity) > 1e-6
        for face in restoration.faces
    )


def compose_output(
    restoration: Restoration, settings: AppSettings, include: Sequence[bool] | None, *, upscale: int | None = None
) -> Image:
    """The output photo at the settings' fidelity with the chosen faces (cached model outputs only)."""
    options = ComposeOptions(
        fidelity=settings.fidelity,
        upscale=settings.upscale if upscale is None else upscale,
        color_correction=settings.color_correction,
        include=list(include) if include is not None and len(include) == len(restoration.faces) else None,
    )
    return compose(restoration.source, restoration.faces, options, aligned=restoration.aligned)


def scaled_restoration(restoration: Restoration, factor: float) -> Restoration:
    """The same faces over a smaller copy of the photo, for composing a screen-sized preview fast.

    Only the source and the image->crop matrices change; the model outputs are shared, not copied.
    """
    source = restoration.source
    size = (max(1, round(source.width * factor)), max(1, round(source.height * factor)))
    pixels = resize(source.pixels, size, "area")
    faces = [replace(face, matrix=scale_matrix(face.matrix, factor)) for face in restoration.faces]
    return replace(restoration, source=replace(source, pixels=pixels, alpha=None), faces=tuple(faces))


def display_size(width: int, height: int, zoom: float) -> tuple[int, int]:
    """The size the compare view draws an image at ``zoom`` (it must match CompareView's cache key)."""
    return max(1, round(width * zoom)), max(1, round(height * zoom))


def process_photo(
    engine: EnginePool, path: Path, settings: AppSettings, cancel: CancelToken, max_pixels: int
) -> Restoration:
    """Decode, detect and restore one photo, checking ``cancel`` between steps."""
    cancel.raise_if_cancelled()
    image = load_image(path, max_pixels=max_pixels)
    cancel.raise_if_cancelled()
    enhancer = engine.get(settings.enhance_settings())
    cancel.raise_if_cancelled()
    return enhancer.enhance(image, cancel)


def face_thumbnails(restoration: Restoration) -> list[QImage]:
    return [to_qimage(shrink(face.restored, FACE_THUMBNAIL)) for face in restoration.faces]


def write_output(
    restoration: Restoration, settings: AppSettings, include: Sequence[bool] | None, target: Path,
    cancel: CancelToken | None = None,
) -> Path:
    output = compose_output(restoration, settings, include)
    if cancel is not None:
        cancel.raise_if_cancelled()
    target.parent.mkdir(parents=True, exist_ok=True)
    save_image(output, target, quality=settings.quality)  # atomic: the file is whole or absent
    return target


# -- the events hub ----------------------------------------------------------------------------


@dataclass(frozen=True)
class EnhanceResult:
    item_id: int
    restoration: Restoration
    seconds: float
    face_thumbnails: list[QImage]
    saved: Path | None


@dataclass(frozen=True)
class PreviewResult:
    item_id: int
    generation: int
    after: QImage | None  # full resolution; None in a partial (screen-sized only) result
    before: QImage | None
    restoration: Restoration | None  # set when the job had to (re-)run the model
    face_thumbnails: list[QImage] | None
    milliseconds: float
    zoom: float | None = None  # the view zoom the *_display images were made for
    after_display: QImage | None = None
    before_display: QImage | None = None
    display_source: Restoration | None = None  # the scaled-down photo, kept for the next change
    partial: bool = False


class JobEvents(QObject):
    """One hub on the UI thread; jobs emit on it from pool threads (queued to the UI thread)."""

    started = Signal(int)
    finished = Signal(object)  # EnhanceResult
    failed = Signal(int, object)  # item id, exception
    cancelled = Signal(int)
    skipped = Signal(int, object)  # item id, existing output path
    thumbnail = Signal(int, object, object)  # item id, QImage | None, file size | None
    preview = Signal(object)  # PreviewResult (a partial one first when the view is zoomed out)
    preview_failed = Signal(int, int, object)  # item id, generation, exception
    saved = Signal(int, object)  # item id, path
    save_failed = Signal(int, object)  # item id, exception


@dataclass(frozen=True)
class EnhanceRequest:
    item_id: int
    path: Path
    settings: AppSettings
    cancel: CancelToken
    target: Path | None  # planned output (for skip-existing and auto-save)
    max_pixels: int


class EnhanceJob(QRunnable):
    def __init__(self, request: EnhanceRequest, engine: EnginePool, events: JobEvents) -> None:
        super().__init__()
        self.request, self.engine, self.events = request, engine, events

    def run(self) -> None:
        request = self.request
        started = time.perf_counter()
        self.events.started.emit(request.item_id)
        try:
            settings = request.settings
            if settings.skip_existing and request.target is not None and request.target.is_file():
                self.events.skipped.emit(request.item_id, request.target)
                return
            restoration = process_photo(self.engine, request.path, settings, request.cancel, request.max_pixels)
            thumbnails = face_thumbnails(restoration)
            saved = None
            if settings.auto_save and request.target is not None:
                saved = write_output(restoration, settings, None, request.target, request.cancel)
            result = EnhanceResult(request.item_id, restoration, time.perf_counter() - started, thumbnails, saved)
            self.events.finished.emit(result)
        except CancelledError:
            self.events.cancelled.emit(request.item_id)
        except Exception as error:  # every failure becomes an error row, never a crash
            self.events.failed.emit(request.item_id, error)


@dataclass(frozen=True)
class PreviewRequest:
    item_id: int
    generation: int
    path: Path
    settings: AppSettings
    include: tuple[bool, ...] | None
    restoration: Restoration | None
    want_before: bool
    want_after: bool  # False for photos not processed yet: show the original only
    max_pixels: int
    zoom: float | None = None  # the view's zoom when below 100 %: also make screen-sized images
    display_source: Restoration | None = None  # scaled_restoration() at ``zoom``, from a previous job


class PreviewJob(QRunnable):
    """Compose the preview (and the original) of one photo; re-runs the model only when it must."""

    def __init__(self, request: PreviewRequest, engine: EnginePool, events: JobEvents) -> None:
        super().__init__()
        self.request, self.engine, self.events = request, engine, events

    def run(self) -> None:
        request = self.request
        started = time.perf_counter()
        try:
            self._run(request, started)
        except Exception as error:
            self.events.preview_failed.emit(request.item_id, request.generation, error)

    def _run(self, request: PreviewRequest, started: float) -> None:
        restoration = request.restoration
        ran_model = False
        source: Image | None = restoration.source if restoration is not None else None
        if request.want_after and restoration is None:
            # Pushed out of the result cache: process it again.
            restoration = process_photo(self.engine, request.path, request.settings, CancelToken(), request.max_pixels)
            source, ran_model = restoration.source, True
        fidelity = request.settings.fidelity
        if restoration is not None and request.want_after and needs_native_rerun(restoration, fidelity):
            enhancer = self.engine.get(request.settings.enhance_settings())
            restoration = rerun_native(enhancer, restoration, fidelity)
            ran_model = True
        zoom = request.zoom if request.zoom is not None and request.zoom < 1.0 else None

        before = before_display = None
        if request.want_before:
            if source is None:
                source = load_image(request.path, max_pixels=request.max_pixels)
            before = to_qimage(source.pixels)
            if zoom is not None:
                size = display_size(source.width, source.height, zoom)
                before_display = to_qimage(resize(source.pixels, size, "area"))

        after_display = small = None
        if request.want_after and restoration is not None and zoom is not None:
            # Screen-sized first: composing over a scaled-down photo is what makes fidelity instant.
            small = request.display_source
            expected = display_size(restoration.source.width, restoration.source.height, zoom)
            if small is None or (small.source.width, small.source.height) != expected or ran_model:
                small = scaled_restoration(restoration, zoom)
            after_display = to_qimage(compose_output(small, request.settings, request.include, upscale=1).pixels)
            if not request.want_before:  # the view already shows this photo: update it now
                self.events.preview.emit(PreviewResult(
                    request.item_id, request.generation, None, None, None, None,
                    (time.perf_counter() - started) * 1000.0, zoom, after_display, None, small, partial=True,
                ))

        after = None
        if request.want_after and restoration is not None:
            after = to_qimage(compose_output(restoration, request.settings, request.include, upscale=1).pixels)
        self.events.preview.emit(PreviewResult(
            request.item_id, request.generation, after, before,
            restoration if ran_model else None,
            face_thumbnails(restoration) if ran_model and restoration is not None else None,
            (time.perf_counter() - started) * 1000.0, zoom, after_display, before_display, small,
        ))


@dataclass(frozen=True)
class SaveRequest:
    item_id: int
    path: Path
    settings: AppSettings
    include: tuple[bool, ...] | None
    restoration: Restoration | None
    target: Path
    cancel: CancelToken
    max_pixels: int


class SaveJob(QRunnable):
    def __init__(self, request: SaveRequest, engine: EnginePool, events: JobEvents) -> None:
        super().__init__()
        self.request, self.engine, self.events = request, engine, events

    def run(self) -> None:
        request = self.request
        try:
            restoration = request.restoration
            if restoration is None:
                restoration = process_photo(self.engine, request.path, request.settings, request.cancel,
                                            request.max_pixels)
            if needs_native_rerun(restoration, request.settings.fidelity):
                enhancer = self.engine.get(request.settings.enhance_settings())
                restoration = rerun_native(enhancer, restoration, request.settings.fidelity)
            request.cancel.raise_if_cancelled()
            target = write_output(restoration, request.settings, request.include, request.target, request.cancel)
            self.events.saved.emit(request.item_id, target)
        except Exception as error:
            self.events.save_failed.emit(request.item_id, error)


class ThumbnailJob(QRunnable):
    def __init__(self, item_id: int, path: Path, events: JobEvents) -> None:
        super().__init__()
        self.item_id, self.path, self.events = item_id, path, events

    def run(self) -> None:
        size: int | None = None
        try:
            size = self.path.stat().st_size
            image: QImage | None = file_thumbnail(self.path)
        except Exception:  # not an image: the row shows a placeholder; the job reports the error
            image = None
        self.events.thumbnail.emit(self.item_id, image, size)


# -- small one-off tasks ---------------------------------------------------------------------


class _TaskSignals(QObject):
    done = Signal(object)
    failed = Signal(object)


_live_tasks: set[_TaskSignals] = set()


class Task(QRunnable):
    """Run ``fn()`` in a pool; ``on_done(result)`` or ``on_error(exception)`` run on the UI thread."""

    def __init__(self, fn: Callable[[], Any]) -> None:
        super().__init__()
        self.fn = fn
        self.signals = _TaskSignals()

    def run(self) -> None:
        try:
            result = self.fn()
        except Exception as error:
            self.signals.failed.emit(error)
        else:
            self.signals.done.emit(result)


def run_task(
    pool: QThreadPool, fn: Callable[[], Any], on_done: Callable[[Any], None],
    on_error: Callable[[Exception], None],
) -> Task:
    task = Task(fn)
    signals = task.signals
    _live_tasks.add(signals)  # the signals object must outlive the runnable until delivery

    def finish_done(result: object) -> None:
        _live_tasks.discard(signals)
        on_done(result)

    def finish_error(error: object) -> None:
        _live_tasks.discard(signals)
        on_error(error)  # type: ignore[arg-type]

    signals.done.connect(finish_done)
    signals.failed.connect(finish_error)
    pool.start(task)
    return task
