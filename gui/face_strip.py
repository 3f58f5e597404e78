"""The strip of detected faces under the compare view, each with an include checkbox."""

from __future__ import annotations

from collections.abc import Sequence

from PySide6.QtCore import QSize, Qt, Signal
from PySide6.QtGui import QIcon, QImage, QPixmap
from PySide6.QtWidgets import QListView, QListWidget, QListWidgetItem, QWidget


class FaceStrip(QListWidget):
    include_changed = Signal(list)  # list[bool], one per face
    face_activated = Signal(int)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setViewMode(QListView.ViewMode.IconMode)
        self.setFlow(QListView.Flow.LeftToRight)
        self.setWrapping(False)
        self.setMovement(QListView.Movement.Static)
        self.setIconSize(QSize(72, 72))
        self.setSpacing(6)
        self.setFixedHeight(118)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAsNeeded)
        self.setVerticalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.setSelectionMode(QListWidget.SelectionMode.SingleSelection)
        self.setToolTip("Untick a face to keep it as it was; click a face to zoom to it")
        self._updating = False
        self.itemChanged.connect(self._on_item_changed)
        self.itemClicked.connect(lambda item: self.face_activated.emit(self.row(item)))

    def set_faces(self, thumbnails: Sequence[QImage], included: Sequence[bool]) -> None:
        self._updating = True
        try:
            self.clear()
            for index, thumbnail in enumerate(thumbnails):
                item = QListWidgetItem(QIcon(QPixmap.fromImage(thumbnail)), f"Face {index + 1}")
                item.setFlags(Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsUserCheckable
                              | Qt.ItemFlag.ItemIsSelectable)
                checked = included[index] if index < len(included) else True
                item.setCheckState(Qt.CheckState.Checked if checked else Qt.CheckState.Unchecked)
                item.setSizeHint(QSize(92, 104))
                self.addItem(item)
        finally:
            self._updating = False

    def included(self) -> list[bool]:
        return [self.item(i).checkState() == Qt.CheckState.Checked for i in range(self.count())]

    def set_included(self, index: int, included: bool) -> None:
        self.item(index).setCheckState(Qt.CheckState.Checked if included else Qt.CheckState.Unchecked)

    def _on_item_changed(self, _item: QListWidgetItem) -> None:
        if not self._updating:
            self.include_changed.emit(self.included())
