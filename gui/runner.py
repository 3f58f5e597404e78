"""Runs the queue: keeps up to ``workers`` enhance jobs in flight, in queue order, live.

Photos added or reordered while a run is going are picked up in their new place. Cancel stops
the jobs at their next step and puts their photos back to ``queued``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from PySide6.QtCore import QObject, QThreadPool, Signal

from engine.batch import describe_error, plan_outputs
from engine.errors import ModelError
from engine.imageio import DEFAULT_MAX_PIXELS
from engine.pipeline import CancelToken
from gui.queue_model import QueueItem, QueueModel, Status
from gui.settings import AppSettings
from gui.workers import EnginePool, EnhanceJob, EnhanceRequest, EnhanceResult, JobEvents, ResultCache


@dataclass(frozen=True)
class RunProgress:
    done: int
    total: int
    faces: int
    elapsed: float
    running: bool

    @property
    def eta(self) -> float | None:
        if self.done == 0 or self.total <= self.done:
            return None
        return self.elapsed / self.done * (self.total - self.done)

    @property
    def faces_per_second(self) -> float:
        return self.faces / self.elapsed if self.elapsed > 0 else 0.0


def plan_targets(items: list[QueueItem], settings: AppSettings) -> dict[int, Path]:
    """Output path of every queued photo (OutputError if one would overwrite an original)."""
    if not items:
        return {}
    paths = plan_outputs([item.input_item() for item in items], settings.batch_options())
    return {item.id: path for item, path in zip(items, paths, strict=True)}


class QueueRunner(QObject):
    progress = Signal(object)  # RunProgress
    item_done = Signal(int)  # an item reached done / error / skipped
    run_finished = Signal()
    run_failed = Signal(object)  # an exception that stops the whole run (a missing model...)
    log = Signal(str, str)  # level, message

    def __init__(self, model: QueueModel, engine: EnginePool, events: JobEvents, results: ResultCache) -> None:
        super().__init__()
        self.model, self.engine, self.events, self.results = model, engine, events, results
        self.pool = QThreadPool(self)
        self.pool.setObjectName("restora-jobs")
        self.settings = AppSettings()
        self.running = False  # taking new photos from the queue
        self.active = False  # a run is going (jobs may still be finishing after a cancel)
        self._tokens: dict[int, CancelToken] = {}
        self._targets: dict[int, Path] = {}
        self._started = 0.0
        self._done = 0
        self._faces = 0
        events.started.connect(self._on_started)
        events.finished.connect(self._on_finished)
        events.failed.connect(self._on_failed)
        events.cancelled.connect(self._on_cancelled)
        events.skipped.connect(self._on_skipped)

    # -- control -------------------------------------------------------------------------------

    def start(self, settings: AppSettings) -> bool:
        """Start (or widen) a run over every queued photo; False when there is nothing to do."""
        queued = [item for item in self.model.items if item.status == Status.QUEUED]
        if not queued and not self._tokens:
            return False
        self.settings = settings
        try:
            self._targets = plan_targets(self.model.items, settings)
        except Exception as error:
            self.run_failed.emit(error)
            return False
        if not self.active:
            self.active = True
            self._started = time.perf_counter()
            self._done = self._faces = 0
            self.log.emit("info", f"Started {len(queued)} photo(s) with {settings.model}, "
                                  f"{settings.worker_count} worker(s)")
        self.running = True
        self.pool.setMaxThreadCount(max(1, settings.worker_count))
        self._fill()
        self._emit_progress()
        return True

    def cancel_all(self) -> None:
        for token in self._tokens.values():
            token.cancel()
        if self.running:
            self.log.emit("info", "Cancelling…")
        self.running = False
        self._finish_if_idle()

    def cancel(self, item_id: int) -> None:
        token = self._tokens.get(item_id)
        if token is not None:
            token.cancel()

    def is_busy(self, item_id: int) -> bool:
        return item_id in self._tokens

    def wait(self, msecs: int = -1) -> bool:
        return self.pool.waitForDone(msecs)

    # -- scheduling ----------------------------------------------------------------------------

    def _fill(self) -> None:
        if not self.running:
            self._finish_if_idle()
            return
        for item in self.model.items:
            if len(self._tokens) >= max(1, self.settings.worker_count):
                break
            if item.status != Status.QUEUED:
                continue
            if item.id not in self._targets:
                try:
                    self._targets = plan_targets(self.model.items, self.settings)
                except Exception as error:
                    self.run_failed.emit(error)
                    self.cancel_all()
                    return
            token = CancelToken()
            self._tokens[item.id] = token
            item.status, item.error, item.note = Status.WORKING, None, None
            self.model.refresh(item.id)
            request = EnhanceRequest(item.id, item.path, self.settings, token, self._targets.get(item.id),
                                     DEFAULT_MAX_PIXELS)
            self.pool.start(EnhanceJob(request, self.engine, self.events))
        self._finish_if_idle()

    def _finish_if_idle(self) -> None:
        pending = self.running and any(item.status == Status.QUEUED for item in self.model.items)
        if self.active and not self._tokens and not pending:
            self.running = self.active = False
            self._emit_progress()
            self.run_finished.emit()

    def _emit_progress(self) -> None:
        queued = sum(1 for item in self.model.items if item.status == Status.QUEUED) if self.running else 0
        total = self._done + len(self._tokens) + queued
        elapsed = time.perf_counter() - self._started if self._started else 0.0
        self.progress.emit(RunProgress(self._done, total, self._faces, elapsed, self.active))

    def _settle(self, item_id: int) -> QueueItem | None:
        self._tokens.pop(item_id, None)
        return self.model.find(item_id)

    def _after(self, item_id: int, counted: bool) -> None:
        if counted:
            self._done += 1
            self.item_done.emit(item_id)
        self._fill()
        self._emit_progress()

    # -- job events ----------------------------------------------------------------------------

    def _on_started(self, item_id: int) -> None:
        item = self.model.find(item_id)
        if item is not None:
            item.note = "restoring…"
            self.model.refresh(item_id)

    def _on_finished(self, result: EnhanceResult) -> None:
        item = self._settle(result.item_id)
        if item is not None:
            restoration = result.restoration
            item.status = Status.DONE
            item.faces = restoration.face_count
            item.seconds = result.seconds
            item.include = [True] * restoration.face_count
            item.note = "saved" if result.saved else None
            item.output = result.saved
            self._faces += restoration.face_count
            self.results.put(item.id, restoration)
            self.model.refresh(item.id)
        self._after(result.item_id, item is not None)

    def _on_failed(self, item_id: int, error: Exception) -> None:
        item = self._settle(item_id)
        message = describe_error(error)
        if isinstance(error, ModelError):
            # No photo can succeed without the model: stop here, once, with the reason.
            if item is not None:
                item.status, item.note = Status.QUEUED, None
                self.model.refresh(item_id)
            self.cancel_all()
            self.run_failed.emit(error)
            self._after(item_id, False)
            return
        if item is not None:
            item.status, item.error, item.note = Status.ERROR, message, None
            self.model.refresh(item_id)
            self.log.emit("error", f"{item.name}: {message}")
        self._after(item_id, item is not None)

    def _on_cancelled(self, item_id: int) -> None:
        item = self._settle(item_id)
        if item is not None:
            item.status, item.note = Status.QUEUED, "cancelled"
            self.model.refresh(item_id)
        self._after(item_id, False)

    def _on_skipped(self, item_id: int, target: Path) -> None:
        item = self._settle(item_id)
        if item is not None:
            item.status, item.note, item.output = Status.SKIPPED, "output exists", target
            self.model.refresh(item_id)
            self.log.emit("info", f"{item.name}: skipped, {target} already exists")
        self._after(item_id, item is not None)
