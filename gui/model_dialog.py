"""The model manager: every known model, whether it is installed and verified, its licence; import."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QThreadPool, QUrl, Signal
from PySide6.QtGui import QColor, QDesktopServices
from PySide6.QtWidgets import (
    QAbstractItemView,
    QDialog,
    QFileDialog,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QMessageBox,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from engine.batch import describe_error
from engine.models import ModelStatus, ModelStore, import_model
from gui.workers import run_task

STATUS_TEXT = {
    "verified": "Installed · verified",
    "unverified": "Installed · not verified",
    "missing": "Not installed",
    "incomplete": "Incomplete",
    "corrupt": "Corrupt (sha256 mismatch)",
}
STATUS_COLOR = {"verified": "#2fb672", "unverified": "#c99a2e", "corrupt": "#e5484d", "incomplete": "#e5484d"}
COLUMNS = ("Name", "Type", "Precision", "Status", "Licence")


def model_statuses(store: ModelStore) -> list[ModelStatus]:
    """Status of every model (hashes files: run it in a pool)."""
    return [store.status(spec, verify=True) for spec in store.specs]


class ModelDialog(QDialog):
    store_changed = Signal(object)  # the reloaded ModelStore after an import

    def __init__(self, store: ModelStore, pool: QThreadPool, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Models")
        self.resize(900, 460)
        self.store = store
        self.pool = pool
        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(COLUMNS)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.verticalHeader().setVisible(False)
        self.table.setAlternatingRowColors(True)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(len(COLUMNS) - 1, QHeaderView.ResizeMode.Stretch)
        self.note = QLabel("Checking model files…")
        self.note.setWordWrap(True)
        self.import_button = QPushButton("Import ONNX…")
        self.import_button.clicked.connect(self.choose_import)
        folder_button = QPushButton("Open models folder")
        folder_button.clicked.connect(self.open_folder)
        close_button = QPushButton("Close")
        close_button.clicked.connect(self.accept)
        buttons = QHBoxLayout()
        buttons.addWidget(self.import_button)
        buttons.addWidget(folder_button)
        buttons.addStretch(1)
        buttons.addWidget(close_button)
        layout = QVBoxLayout(self)
        layout.addWidget(self.table)
        layout.addWidget(self.note)
        layout.addLayout(buttons)
        self.refresh()

    def refresh(self) -> None:
        self.note.setText("Checking model files (sha256)…")
        store = self.store
        run_task(self.pool, lambda: model_statuses(store), self.show_statuses, self.show_error)

    def show_statuses(self, statuses: list[ModelStatus]) -> None:
        self.table.setRowCount(len(statuses))
        for row, status in enumerate(statuses):
            spec = status.spec
            label = status.label
            cells = (spec.name, spec.family, spec.precision, STATUS_TEXT.get(label, label), spec.license or "—")
            for column, text in enumerate(cells):
                cell = QTableWidgetItem(text)
                tip = spec.description or spec.name
                if spec.source:
                    tip += f"\nSource: {spec.source}"
                cell.setToolTip(tip)
                if column == 3 and label in STATUS_COLOR:
                    cell.setForeground(QColor(STATUS_COLOR[label]))
                self.table.setItem(row, column, cell)
        installed = sum(1 for s in statuses if s.present)
        self.note.setText(
            f"{installed} of {len(statuses)} models installed. Your own models go to {self.store.user_dir}. "
            "Import a GFPGAN, GPEN, CodeFormer or RestoreFormer++ ONNX export, or a listed detector."
        )

    def show_error(self, error: Exception) -> None:
        self.note.setText(f"Could not check the models: {describe_error(error)}")

    def choose_import(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Import an ONNX model", str(Path.home()),
                                              "ONNX models (*.onnx);;All files (*)")
        if path:
            self.import_file(Path(path))

    def import_file(self, path: Path) -> None:
        self.import_button.setEnabled(False)
        self.note.setText(f"Importing {path.name}…")
        store = self.store
        run_task(self.pool, lambda: import_model(store, path), self._imported, self._import_failed)

    def _imported(self, spec: object) -> None:
        self.import_button.setEnabled(True)
        self.store = self.store.reload()
        self.store_changed.emit(self.store)
        name = getattr(spec, "name", "model")
        QMessageBox.information(self, "Model imported", f"{name} is ready to use.")
        self.refresh()

    def _import_failed(self, error: Exception) -> None:
        self.import_button.setEnabled(True)
        self.note.setText("Import failed.")
        QMessageBox.warning(self, "Import failed", describe_error(error))

    def open_folder(self) -> None:
        folder = self.store.user_dir
        folder.mkdir(parents=True, exist_ok=True)
        QDesktopServices.openUrl(QUrl.fromLocalFile(str(folder)))
