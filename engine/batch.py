"""Folder batches: list inputs, plan output names, run load -> restore -> save overlapped, report.

Loading and saving run on a small thread pool while the calling thread detects and restores, with
bounded queues on both sides so memory stays flat on any folder size. One bad file never stops the
batch: it becomes an ``error`` item with a one-line reason.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

from engine.errors import CancelledError, OutputError, RestoraError
from engine.imageio import (
    DEFAULT_MAX_PIXELS,
    PART_PREFIX,
    atomic_write_bytes,
    is_supported_path,
    load_image,
    output_format_for,
    save_image,
)
from engine.pipeline import CancelToken, Enhancer, FaceRestoration, PreparedPhoto, engine_info

OUTPUT_FORMATS = ("keep", "png", "jpg", "webp", "tiff")
REPORT_VERSION = 1

# Input extension -> the format name used to pick an output format before decoding, so that
# --skip-existing can decide without opening the photo.
_FORMAT_BY_EXTENSION = {
    ".jpg": "JPEG", ".jpeg": "JPEG", ".jpe": "JPEG", ".png": "PNG", ".webp": "WEBP",
    ".tif": "TIFF", ".tiff": "TIFF", ".bmp": "BMP", ".gif": "GIF",
}


class InputError(RestoraError):
    """An input path given on the command line does not exist (a usage error)."""


@dataclass(frozen=True)
class BatchOptions:
    output_dir: Path
    recursive: bool = False
    format: str = "keep"
    quality: int = 95
    suffix: str = ""
    skip_existing: bool = False
    workers: int | None = None
    max_pixels: int = DEFAULT_MAX_PIXELS

    def __post_init__(self) -> None:
        if self.format not in OUTPUT_FORMATS:
            raise ValueError(f"format must be one of {', '.join(OUTPUT_FORMATS)}, not {self.format!r}")
        if not 1 <= self.quality <= 100:
            raise ValueError(f"quality must be between 1 and 100, not {self.quality}")
        if os.sep in self.suffix or (os.altsep and os.altsep in self.suffix):
            raise ValueError(f"suffix must not contain a path separator: {self.suffix!r}")

    @property
    def worker_count(self) -> int:
        return self.workers or min(4, os.cpu_count() or 1)


@dataclass(frozen=True)
class InputItem:
    """One photo to process and where its output goes, relative to the output folder."""

    path: Path
    relative: Path  # e.g. "holiday/img_001.jpg" when walking recursively


@dataclass
class ItemResult:
    input: str
    output: str | None
    status: str  # ok | error | skipped | cancelled
    faces: int = 0
    seconds: float = 0.0
    error: str | None = None
    warnings: list[str] = field(default_factory=list)
    # The failure's formatted traceback, for --verbose; left out of the report otherwise.
    details: str | None = field(default=None, repr=False)

    def to_dict(self, verbose: bool = False) -> dict[str, object]:
        data = asdict(self)
        if data["error"] is None:
            del data["error"]
        if not verbose or data["details"] is None:
            del data["details"]
        if not data["warnings"]:
            del data["warnings"]
        if self.status in ("skipped", "cancelled"):
            del data["seconds"]
        return data


@dataclass(frozen=True)
class BatchProgress:
    done: int
    total: int
    faces: int
    elapsed: float
    last: ItemResult


@dataclass
class BatchReport:
    model: str
    detector: str | None
    precision: str
    provider: str
    seconds: float
    items: list[ItemResult]
    notes: list[str] = field(default_factory=list)

    @property
    def failed(self) -> int:
        return sum(1 for item in self.items if item.status == "error")

    @property
    def faces(self) -> int:
        return sum(item.faces for item in self.items)

    def count(self, status: str) -> int:
        return sum(1 for item in self.items if item.status == status)

    def to_dict(self, verbose: bool = False) -> dict[str, object]:
        data: dict[str, object] = {
            "version": REPORT_VERSION,
            "model": self.model,
            "detector": self.detector,
            "precision": self.precision,
            "provider": self.provider,
            "seconds": round(self.seconds, 3),
            "items": [item.to_dict(verbose) for item in self.items],
        }
        if self.notes:
            data["notes"] = list(self.notes)
        return data

    def write_json(self, path: Path, verbose: bool = False) -> None:
        text = json.dumps(self.to_dict(verbose), indent=2, ensure_ascii=False)
        atomic_write_bytes(path, text.encode("utf-8"))


# -- listing -----------------------------------------------------------------------------------


def collect_inputs(paths: Sequence[Path], recursive: bool = False) -> list[InputItem]:
    """Expand files and folders into input items, in a stable (sorted) order.

    Files named explicitly are always kept (an unsupported one fails later with a clear error);
    files found in folders are kept only when their extension is a supported image type. Symbolic
    links to folders are not followed, so a link loop cannot make the walk endless.
    """
    return list(iter_inputs(paths, recursive))


def iter_inputs(paths: Sequence[Path], recursive: bool = False) -> Iterator[InputItem]:
    """``collect_inputs`` one item at a time, for folders too big to list in memory.

    Every path is checked up front, so a typo is a usage error before the first photo.
    """
    for raw in paths:
        path = Path(raw)
        if not (path.exists() or path.is_symlink()):
            raise InputError(f"no such file or folder: {path}")
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            yield from _walk_folder(path, recursive)
        else:
            yield InputItem(path=path, relative=Path(path.name))


def count_inputs(paths: Sequence[Path], recursive: bool = False) -> int:
    """How many items ``iter_inputs`` yields (a walk that keeps nothing, for progress and ETA)."""
    return sum(1 for _ in iter_inputs(paths, recursive))


def _walk_folder(root: Path, recursive: bool) -> Iterator[InputItem]:
    for folder, subfolders, files in os.walk(root, followlinks=False):
        subfolders.sort()
        if not recursive:
            subfolders.clear()
        base = Path(folder)
        for name in sorted(files):
            path = base / name
            if is_supported_path(path):
                yield InputItem(path=path, relative=path.relative_to(root))


def output_extension(path: Path, requested: str) -> str:
    source_format = _FORMAT_BY_EXTENSION.get(path.suffix.lower(), "PNG")
    return output_format_for(source_format, requested)[1]


class OutputPlanner:
    """Names outputs one item at a time: the output folder mirrors the input tree, and two inputs
    that would get the same name (a.jpg and a.png with --format png) both keep an output.

    Only the names given in the current output folder are remembered, so planning a folder walk of
    any size takes memory bounded by its largest folder.
    """

    def __init__(self, options: BatchOptions) -> None:
        self.options = options
        self._folder: Path | None = None
        self._taken: set[str] = set()

    def plan(self, item: InputItem) -> Path:
        options = self.options
        folder = options.output_dir / item.relative.parent
        if folder != self._folder:
            self._folder, self._taken = folder, set()
        extension = output_extension(item.path, options.format)
        stem = item.relative.stem
        name = f"{stem}{options.suffix}{extension}"
        if name in self._taken:
            source_ext = item.path.suffix.lower().lstrip(".")
            name = f"{stem}_{source_ext}{options.suffix}{extension}"
            number = 2
            while name in self._taken:  # the same name from more than two inputs
                name = f"{stem}_{source_ext}-{number}{options.suffix}{extension}"
                number += 1
        self._taken.add(name)
        return folder / name


def plan_outputs(items: Sequence[InputItem], options: BatchOptions) -> list[Path]:
    """Output path of each item. Refuses (OutputError) any plan that would write over an input."""
    planner = OutputPlanner(options)
    planned = [planner.plan(item) for item in items]
    refuse_outputs_onto_inputs(items, planned)
    return planned


def refuse_outputs_onto_inputs(items: Sequence[InputItem], planned: Sequence[Path]) -> None:
    """OutputError when any output path is, or leads to, any input.

    Compared three ways: the path as written, the path with every link resolved (an output folder
    that is a link to the input folder), and the file's identity (an existing hard link or symbolic
    link in the output folder to an input). Writes are renames, which replace a link rather than
    its target, but a plan that points at an original is refused anyway: it is always a mistake.
    """
    by_path: dict[str, Path] = {}
    by_identity: dict[tuple[int, int], Path] = {}
    for item in items:
        by_path[os.path.normcase(os.path.abspath(item.path))] = item.path
        by_path[os.path.normcase(os.path.realpath(item.path))] = item.path
        identity = _identity(item.path)
        if identity is not None:
            by_identity[identity] = item.path
    for target in planned:
        original = (by_path.get(os.path.normcase(os.path.abspath(target)))
                    or by_path.get(os.path.normcase(os.path.realpath(target))))
        if original is None:
            identity = _identity(target)
            original = by_identity.get(identity) if identity is not None else None
        if original is None:
            # A dangling or unreadable link: if it resolves to nothing we know, the rename is harmless.
            continue
        raise OutputError(
            f"output {target} would overwrite the input {original}; choose another output folder "
            "or add --suffix"
        )


def _identity(path: Path) -> tuple[int, int] | None:
    """(device, inode) of what `path` leads to, or None when it does not exist."""
    try:
        info = os.stat(path)
    except (OSError, ValueError):
        return None
    return (info.st_dev, info.st_ino) if info.st_ino else None


def check_output_dir(path: Path) -> None:
    """Create the output folder and prove it is writable, before any work starts."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path, prefix=".restora-probe-"):
            pass
    except OSError as error:
        reason = error.strerror or error.__class__.__name__
        raise OutputError(f"cannot write to the output folder {path}: {reason}") from None


_STALE_PART = re.compile(re.escape(PART_PREFIX) + r"(\d+)-[^/]*\.part")


def remove_stale_parts(folders: Sequence[Path]) -> int:
    """Delete temporary files that a killed run left in these folders; returns how many.

    Only Restora's own ``.restora-<pid>-*.part`` files go, and only when that process no longer
    exists, so a second run writing into the same folder at the same time is never disturbed.
    """
    removed = 0
    for folder in dict.fromkeys(folders):
        try:
            names = os.listdir(folder)
        except OSError:
            continue
        for name in names:
            match = _STALE_PART.fullmatch(name)
            if match is None or _process_alive(int(match.group(1))):
                continue
            try:
                os.unlink(folder / name)
                removed += 1
            except OSError:
                pass  # gone already, or not ours to delete: it is hidden and harmless
    return removed


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True  # this process may be writing it now (another batch, the GUI)
    if os.name != "posix":
        return True  # no cheap liveness check: leave the file
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, OSError):
        return True
    return True


# -- running -----------------------------------------------------------------------------------


def run_batch(
    items: Sequence[InputItem],
    enhancer: Enhancer,
    options: BatchOptions,
    *,
    progress: Callable[[BatchProgress], None] | None = None,
    cancel: CancelToken | None = None,
    outputs: Sequence[Path] | None = None,
) -> BatchReport:
    """Process every item; returns the report. Raises only for cancellation (CancelledError).

    ``outputs`` gives each item's output path when the caller planned them (a cluster driver plans
    names across all chunks); otherwise ``plan_outputs`` names them. ``progress`` is called once per
    photo, one call at a time, with ``done`` counting up; it should return quickly.
    """
    started = time.perf_counter()
    if outputs is None:
        outputs = plan_outputs(items, options)
    else:
        refuse_outputs_onto_inputs(items, outputs)
    check_output_dir(options.output_dir)
    stale = remove_stale_parts([options.output_dir, *(target.parent for target in outputs)])
    results: list[ItemResult | None] = [None] * len(items)
    begun: dict[int, float] = {}
    lock = threading.Lock()
    counters = {"done": 0, "faces": 0}
    cancel = cancel or CancelToken()

    def finish(index: int, result: ItemResult) -> None:
        # The callback runs under the lock: workers finish photos at the same moment (a shared
        # inference batch), and a reporter must see one snapshot at a time, in the order of `done`,
        # or its lines interleave and count backwards.
        with lock:
            results[index] = result
            counters["done"] += 1
            counters["faces"] += result.faces
            if progress is not None:
                progress(BatchProgress(counters["done"], len(items), counters["faces"],
                                       time.perf_counter() - started, result))

    # Photos handed to the enhancer and not yet out of it: the ones lost if a shared inference
    # batch fails as a whole.
    handed: set[int] = set()

    def fail(index: int, error: BaseException) -> None:
        handed.discard(index)
        details = "".join(traceback.format_exception(error))
        finish(index, ItemResult(str(items[index].path), None, "error", seconds=_since(begun.get(index)),
                                 error=describe_error(error), details=details))

    todo: list[int] = []
    for index, (item, target) in enumerate(zip(items, outputs, strict=True)):
        if options.skip_existing and target.is_file():
            finish(index, ItemResult(str(item.path), str(target), "skipped"))
        else:
            todo.append(index)

    workers = options.worker_count
    loaders = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="restora-load")
    savers = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="restora-save")
    saving: deque[Future[None]] = deque()
    try:
        def load_and_prepare(path: Path) -> PreparedPhoto:
            # Detection and alignment run here, in the loader threads, so they overlap the
            # restorer's work on earlier photos instead of waiting for it.
            return enhancer.prepare(load_image(path, max_pixels=options.max_pixels))

        def loaded() -> Iterator[tuple[int, PreparedPhoto]]:
            window: deque[tuple[int, Future[PreparedPhoto]]] = deque()
            pending = iter(todo)
            prefetch = workers * 2

            def submit_next() -> None:
                index = next(pending, None)
                if index is not None:
                    begun[index] = time.perf_counter()
                    window.append((index, loaders.submit(load_and_prepare, items[index].path)))

            for _ in range(prefetch):
                submit_next()
            while window:
                cancel.raise_if_cancelled()
                index, future = window.popleft()
                submit_next()
                try:
                    image = future.result()
                except Exception as error:
                    fail(index, error)
                    continue
                handed.add(index)
                yield index, image

        def compose_and_save(index: int, job: list[tuple[PreparedPhoto, tuple[FaceRestoration, ...]]]) -> None:
            # Colour match and paste-back run here, in the saver threads, so they overlap the
            # restorer's next batch instead of waiting in line with it. The photo comes in a list
            # and is popped: the executor keeps its call's arguments until the call returns, and
            # the source (a second full frame when upscaling) must be free while the output encodes.
            prepared, records = job.pop()
            target = outputs[index]
            try:
                # reuse_source: the output is pasted into the loaded frame, which nothing else needs.
                output = enhancer.compose_result(prepared.image, records, prepared.detected, reuse_source=True).output
                warnings, faces = list(prepared.image.warnings), len(records)
                del prepared, records  # the source, crops and restored faces go before encoding
                target.parent.mkdir(parents=True, exist_ok=True)
                save_image(output, target, quality=options.quality)
            except Exception as error:
                fail(index, error)
                return
            finish(index, ItemResult(str(items[index].path), str(target), "ok",
                                     faces=faces, seconds=_since(begun.get(index)), warnings=warnings))

        stream = loaded()
        while True:
            try:
                for index, prepared, records in enhancer.restore_many(stream, cancel, on_error=fail):
                    handed.discard(index)
                    cancel.raise_if_cancelled()
                    # Back-pressure: never hold more finished photos in memory than savers can take.
                    while len(saving) >= workers * 2:
                        saving.popleft().result()
                    saving.append(savers.submit(compose_and_save, index, [(prepared, records)]))
                    del prepared, records
                break
            except Exception as error:
                # A failure while restoring a batch of faces costs the photos in that batch, not the
                # run: they are reported and the same stream of loaded photos goes on.
                lost = sorted(handed)
                if isinstance(error, CancelledError) or cancel.cancelled or not lost:
                    raise
                for index in lost:
                    fail(index, error)
        while saving:
            saving.popleft().result()
    except BaseException:
        # Ctrl-C or cancel: let saves in flight finish (each is atomic), drop the rest.
        cancel.cancel()
        loaders.shutdown(wait=True, cancel_futures=True)
        savers.shutdown(wait=True, cancel_futures=True)
        raise
    finally:
        loaders.shutdown(wait=True)
        savers.shutdown(wait=True)

    info = engine_info(enhancer)
    final = [r if r is not None else ItemResult(str(items[i].path), None, "cancelled")
             for i, r in enumerate(results)]
    notes = list(info.notes)
    if stale:
        notes.append(f"removed {stale} temporary file{'s' if stale != 1 else ''} left by an interrupted run")
    return BatchReport(info.model, info.detector, info.precision, info.provider,
                       time.perf_counter() - started, final, notes)


def _since(start: float | None) -> float:
    return round(time.perf_counter() - start, 3) if start is not None else 0.0


def describe_error(error: BaseException) -> str:
    """One line for the report: typed engine errors carry their own message."""
    if isinstance(error, RestoraError):
        return _one_line(str(error)) or error.__class__.__name__
    if isinstance(error, MemoryError):
        return "out of memory while processing this photo"
    if isinstance(error, OSError):
        name = getattr(error, "filename", None)
        return f"{error.strerror or error.__class__.__name__}{f': {name}' if name else ''}"
    return _one_line(f"{error.__class__.__name__}: {error}")


def _one_line(text: str) -> str:
    return " ".join(text.split())


__all__ = [
    "OUTPUT_FORMATS",
    "BatchOptions",
    "BatchProgress",
    "BatchReport",
    "CancelledError",
    "InputError",
    "InputItem",
    "ItemResult",
    "OutputPlanner",
    "check_output_dir",
    "collect_inputs",
    "count_inputs",
    "describe_error",
    "iter_inputs",
    "plan_outputs",
    "refuse_outputs_onto_inputs",
    "remove_stale_parts",
    "run_batch",
]
