"""The photo queue: a plain Python list of ``QueueItem`` behind a QAbstractListModel adapter.

Rows are painted by ``QueueDelegate`` (no per-row widgets) and thumbnails are asked for lazily,
only for rows a view actually paints, so thousands of photos stay smooth.
"""

from __future__ import annotations

import itertools
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from PySide6.QtCore import (
    QAbstractListModel,
    QByteArray,
    QMimeData,
    QModelIndex,
    QPersistentModelIndex,
    QRect,
    QSize,
    Qt,
    Signal,
)
from PySide6.QtGui import QColor, QFont, QImage, QPainter, QPalette
from PySide6.QtWidgets import QStyle, QStyledItemDelegate, QStyleOptionViewItem

from engine.batch import InputItem

ModelIndex = QModelIndex | QPersistentModelIndex
# Rows dragged inside the queue carry only their row numbers: the default Qt encoding would try to
# serialise every role's value, including the Python QueueItem, which QVariant cannot save.
ROWS_MIME_TYPE = "application/x-restora-queue-rows"


class Status(StrEnum):
    QUEUED = "queued"
    WORKING = "working"
    DONE = "done"
    ERROR = "error"
    SKIPPED = "skipped"


STATUS_COLORS = {
    Status.QUEUED: QColor("#8a8f98"),
    Status.WORKING: QColor("#3d8bfd"),
    Status.DONE: QColor("#2fb672"),
    Status.ERROR: QColor("#e5484d"),
    Status.SKIPPED: QColor("#c99a2e"),
}

_ids = itertools.count(1)


@dataclass(eq=False)
class QueueItem:
    """One photo in the queue. Mutated only on the UI thread."""

    path: Path
    relative: Path  # output name relative to the output folder (keeps sub-folders of a dropped folder)
    id: int = field(default_factory=lambda: next(_ids))
    status: Status = Status.QUEUED
    faces: int | None = None
    seconds: float | None = None
    error: str | None = None
    note: str | None = None  # e.g. "cancelled", "saved"
    output: Path | None = None  # where it was last saved
    include: list[bool] = field(default_factory=list)  # per restored face
    file_size: int | None = None

    @property
    def name(self) -> str:
        return self.path.name

    def input_item(self) -> InputItem:
        return InputItem(path=self.path, relative=self.relative)

    def reset(self) -> None:
        self.status = Status.QUEUED
        self.faces = self.seconds = self.error = self.note = None
        self.include = []


ItemRole = Qt.ItemDataRole.UserRole + 1


class QueueModel(QAbstractListModel):
    """List adapter over ``items``; emits ``thumbnail_wanted(id, path)`` when a row is painted."""

    thumbnail_wanted = Signal(int, object)

    def __init__(self, thumbnail_cache_size: int = 4000) -> None:
        super().__init__()
        self.items: list[QueueItem] = []
        self._thumbnails: OrderedDict[int, QImage | None] = OrderedDict()
        self._thumbnail_limit = thumbnail_cache_size
        self._wanted: set[int] = set()

    # -- Qt model interface ------------------------------------------------------------------

    def rowCount(self, parent: ModelIndex = QModelIndex()) -> int:  # noqa: B008 (Qt's signature)
        return 0 if parent.isValid() else len(self.items)

    def data(self, index: ModelIndex, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid() or not 0 <= index.row() < len(self.items):
            return None
        item = self.items[index.row()]
        if role == Qt.ItemDataRole.DisplayRole:
            return item.name
        if role == ItemRole:
            return item
        if role == Qt.ItemDataRole.DecorationRole:
            return self.thumbnail(item)
        if role == Qt.ItemDataRole.ToolTipRole:
            return item.error or str(item.path)
        return None

    def flags(self, index: ModelIndex) -> Qt.ItemFlag:
        base = super().flags(index)
        # Rows drag; the gaps between them (the root) take drops, so a row can be dragged to a new place.
        return base | Qt.ItemFlag.ItemIsDragEnabled if index.isValid() else base | Qt.ItemFlag.ItemIsDropEnabled

    def supportedDropActions(self) -> Qt.DropAction:
        return Qt.DropAction.MoveAction

    def mimeTypes(self) -> list[str]:
        return [ROWS_MIME_TYPE]

    def mimeData(self, indexes: Sequence[ModelIndex]) -> QMimeData:
        data = QMimeData()
        rows = sorted({index.row() for index in indexes if index.isValid()})
        data.setData(ROWS_MIME_TYPE, QByteArray(",".join(map(str, rows)).encode()))
        return data

    def moveRows(
        self, source_parent: ModelIndex, source_row: int, count: int, destination_parent: ModelIndex,
        destination_child: int,
    ) -> bool:
        """Qt's row move (QListView's internal drag and drop calls it): ``destination_child`` is the row
        before which the moved rows land, counted before they leave."""
        end = source_row + count
        if (source_parent.isValid() or destination_parent.isValid() or count < 1 or source_row < 0
                or end > len(self.items) or not 0 <= destination_child <= len(self.items)
                or source_row <= destination_child <= end):
            return False
        self.beginMoveRows(QModelIndex(), source_row, end - 1, QModelIndex(), destination_child)
        moved = self.items[source_row:end]
        del self.items[source_row:end]
        insert_at = destination_child if destination_child < source_row else destination_child - count
        self.items[insert_at:insert_at] = moved
        self.endMoveRows()
        return True

    # -- thumbnails ----------------------------------------------------------------------------

    def thumbnail(self, item: QueueItem) -> QImage | None:
        if item.id in self._thumbnails:
            self._thumbnails.move_to_end(item.id)
            return self._thumbnails[item.id]
        if item.id not in self._wanted:
            self._wanted.add(item.id)
            self.thumbnail_wanted.emit(item.id, item.path)
        return None

    def set_thumbnail(self, item_id: int, image: QImage | None) -> None:
        self._wanted.discard(item_id)
        self._thumbnails[item_id] = image
        while len(self._thumbnails) > self._thumbnail_limit:
            self._thumbnails.popitem(last=False)
        self.refresh(item_id)

    # -- list operations -----------------------------------------------------------------------

    def add(self, inputs: Iterable[InputItem]) -> list[QueueItem]:
        """Append photos not already queued (same path); returns the new items."""
        known = {item.path for item in self.items}
        new: list[QueueItem] = []
        for entry in inputs:
            path = Path(entry.path)
            if path in known:
                continue
            known.add(path)
            new.append(QueueItem(path=path, relative=Path(entry.relative)))
        if new:
            start = len(self.items)
            self.beginInsertRows(QModelIndex(), start, start + len(new) - 1)
            self.items.extend(new)
            self.endInsertRows()
        return new

    def row_of(self, item_id: int) -> int:
        for row, item in enumerate(self.items):
            if item.id == item_id:
                return row
        return -1

    def find(self, item_id: int) -> QueueItem | None:
        row = self.row_of(item_id)
        return self.items[row] if row >= 0 else None

    def refresh(self, item_id: int) -> None:
        row = self.row_of(item_id)
        if row >= 0:
            index = self.index(row)
            self.dataChanged.emit(index, index)

    def remove_rows(self, rows: Sequence[int]) -> list[QueueItem]:
        removed = []
        for row in sorted(set(rows), reverse=True):
            if 0 <= row < len(self.items):
                self.beginRemoveRows(QModelIndex(), row, row)
                item = self.items.pop(row)
                self.endRemoveRows()
                self._thumbnails.pop(item.id, None)
                self._wanted.discard(item.id)
                removed.append(item)
        return removed

    def remove_where(self, status: Status) -> list[QueueItem]:
        return self.remove_rows([row for row, item in enumerate(self.items) if item.status == status])

    def move(self, row: int, delta: int) -> int:
        """Move one row up (-1) or down (+1); returns its new row."""
        target = row + delta
        if not (0 <= row < len(self.items) and 0 <= target < len(self.items)):
            return row
        # Qt's destination is the row *before which* the moved row lands.
        destination = target + 1 if delta > 0 else target
        return target if self.moveRows(QModelIndex(), row, 1, QModelIndex(), destination) else row

    def counts(self) -> dict[Status, int]:
        counts = dict.fromkeys(Status, 0)
        for item in self.items:
            counts[item.status] += 1
        return counts


def _format_size(size: int | None) -> str:
    if size is None:
        return ""
    value = float(size)
    for unit in ("B", "KB", "MB"):
        if value < 1024:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GB"


def describe_item(item: QueueItem) -> str:
    """The second line of a row: faces, time, size or the error."""
    if item.status == Status.ERROR and item.error:
        # Engine messages name the file; the row already does.
        return item.error.removeprefix(f"{item.path}: ").removeprefix(f"{item.name}: ")
    parts = []
    if item.faces is not None:
        parts.append("1 face" if item.faces == 1 else f"{item.faces} faces")
    if item.seconds is not None:
        parts.append(f"{item.seconds:.1f} s")
    if item.note:
        parts.append(item.note)
    size = _format_size(item.file_size)
    if size and not parts:
        parts.append(size)
    return " · ".join(parts)


class QueueDelegate(QStyledItemDelegate):
    """Paints one queue row: thumbnail, name, details and a status chip."""

    ROW_HEIGHT = 64
    THUMB = 52

    def sizeHint(self, option: QStyleOptionViewItem, index: ModelIndex) -> QSize:
        return QSize(240, self.ROW_HEIGHT)

    def paint(self, painter: QPainter, option: QStyleOptionViewItem, index: ModelIndex) -> None:
        item: QueueItem | None = index.data(ItemRole)
        if item is None:
            return
        palette = option.palette
        rect: QRect = option.rect
        state = option.state
        painter.save()
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        selected = bool(state & QStyle.StateFlag.State_Selected)
        if selected:
            painter.fillRect(rect, palette.color(QPalette.ColorRole.Highlight))
        elif state & QStyle.StateFlag.State_MouseOver:
            painter.fillRect(rect, palette.color(QPalette.ColorRole.AlternateBase))
        text_color = palette.color(
            QPalette.ColorRole.HighlightedText if selected else QPalette.ColorRole.Text
        )

        thumb_rect = QRect(rect.left() + 8, rect.top() + (rect.height() - self.THUMB) // 2, self.THUMB, self.THUMB)
        thumbnail = index.data(Qt.ItemDataRole.DecorationRole)
        painter.fillRect(thumb_rect, palette.color(QPalette.ColorRole.Base).darker(115))
        if isinstance(thumbnail, QImage) and not thumbnail.isNull():
            scaled = thumbnail.scaled(thumb_rect.size(), Qt.AspectRatioMode.KeepAspectRatio,
                                      Qt.TransformationMode.SmoothTransformation)
            x = thumb_rect.left() + (thumb_rect.width() - scaled.width()) // 2
            y = thumb_rect.top() + (thumb_rect.height() - scaled.height()) // 2
            painter.drawImage(x, y, scaled)
        else:
            placeholder = QColor(text_color)
            placeholder.setAlpha(110)
            painter.setPen(placeholder)
            label = "!" if item.status == Status.ERROR else (item.path.suffix.lstrip(".").upper()[:4] or "?")
            painter.drawText(thumb_rect, Qt.AlignmentFlag.AlignCenter, label)

        chip_text = item.status.value
        chip_font = QFont(option.font)
        chip_font.setPointSizeF(max(chip_font.pointSizeF() * 0.8, 7.0))
        chip_font.setBold(True)
        painter.setFont(chip_font)
        chip_width = painter.fontMetrics().horizontalAdvance(chip_text) + 14
        chip = QRect(rect.right() - chip_width - 8, rect.top() + 10, chip_width, 18)
        color = STATUS_COLORS[item.status]
        painter.setPen(Qt.PenStyle.NoPen)
        painter.setBrush(color)
        painter.drawRoundedRect(chip, 9, 9)
        painter.setPen(QColor("white"))
        painter.drawText(chip, Qt.AlignmentFlag.AlignCenter, chip_text)

        left = thumb_rect.right() + 10
        name_rect = QRect(left, rect.top() + 9, chip.left() - left - 6, 20)
        name_font = QFont(option.font)
        name_font.setBold(True)
        painter.setFont(name_font)
        painter.setPen(text_color)
        name = painter.fontMetrics().elidedText(item.name, Qt.TextElideMode.ElideMiddle, name_rect.width())
        painter.drawText(name_rect, Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter, name)

        detail_rect = QRect(left, rect.top() + 33, rect.right() - left - 8, 20)
        painter.setFont(option.font)
        detail_color = STATUS_COLORS[Status.ERROR] if item.status == Status.ERROR and not selected else text_color
        if detail_color == text_color:
            detail_color = QColor(text_color)
            detail_color.setAlpha(170)
        painter.setPen(detail_color)
        details = painter.fontMetrics().elidedText(describe_item(item), Qt.TextElideMode.ElideRight,
                                                   detail_rect.width())
        painter.drawText(detail_rect, Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter, details)
        painter.restore()
