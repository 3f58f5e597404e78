"""The settings side panel: widgets in, one ``AppSettings`` out (never read from a worker)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from PySide6.QtCore import QRegularExpression, Qt, Signal
from PySide6.QtGui import QRegularExpressionValidator
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QFrame,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QScrollArea,
    QSpinBox,
    QToolButton,
    QVBoxLayout,
    QWidget,
)
from superqt import QLabeledDoubleSlider

from engine.batch import OUTPUT_FORMATS
from engine.models import ModelStore
from engine.pipeline import PRECISIONS, PROVIDERS, UPSCALES
from gui.settings import AppSettings, default_output_dir

FORMAT_LABELS = {"keep": "Same as input", "png": "PNG", "jpg": "JPEG", "webp": "WebP", "tiff": "TIFF"}
PRECISION_LABELS = {"auto": "Auto", "fp32": "FP32 (exact)", "fp16": "FP16", "int8": "INT8 (fastest on CPU)"}
PROVIDER_LABELS = {"auto": "Auto", "cpu": "CPU", "cuda": "CUDA", "directml": "DirectML", "coreml": "Core ML",
                   "openvino": "OpenVINO"}


def _combo(values: tuple[object, ...], labels: dict[str, str] | None = None) -> QComboBox:
    combo = QComboBox()
    for value in values:
        combo.addItem((labels or {}).get(str(value), str(value)), value)
    return combo


def _select(combo: QComboBox, value: object) -> None:
    index = combo.findData(value)
    if index < 0:
        combo.addItem(str(value), value)
        index = combo.count() - 1
    combo.setCurrentIndex(index)


class SettingsPanel(QScrollArea):
    changed = Signal(object)  # AppSettings, after any edit
    fidelity_changed = Signal(float)
    manage_models = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWidgetResizable(True)
        self.setFrameShape(QFrame.Shape.NoFrame)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self._settings = AppSettings()
        self._loading = False
        body = QWidget()
        layout = QVBoxLayout(body)
        layout.setContentsMargins(10, 10, 10, 10)
        layout.setSpacing(12)

        # Fidelity first: it is the one control people move while looking at the result.
        strength = QGroupBox("Restoration strength")
        strength_layout = QVBoxLayout(strength)
        self.fidelity = QLabeledDoubleSlider(Qt.Orientation.Horizontal)
        self.fidelity.setRange(0.0, 1.0)
        self.fidelity.setSingleStep(0.01)  # type: ignore[arg-type]  # superqt's stub says int
        self.fidelity.setDecimals(2)
        self.fidelity.setToolTip("Fidelity: 0 = strongest restoration, 1 = closest to the input.\n"
                                 "Changes re-blend instantly, without running the model again.")
        ends = QHBoxLayout()
        strong, faithful = QLabel("Stronger"), QLabel("Closer to original")
        for label in (strong, faithful):
            label.setEnabled(False)
        ends.addWidget(strong)
        ends.addStretch(1)
        ends.addWidget(faithful)
        strength_layout.addWidget(self.fidelity)
        strength_layout.addLayout(ends)
        layout.addWidget(strength)

        models = QGroupBox("Models")
        form = QFormLayout(models)
        self.model = QComboBox()
        self.detector = QComboBox()
        self.precision = _combo(PRECISIONS, PRECISION_LABELS)
        self.provider = _combo(PROVIDERS, PROVIDER_LABELS)
        manage = QPushButton("Manage models…")
        manage.clicked.connect(self.manage_models.emit)
        form.addRow("Restorer", self.model)
        form.addRow("Detector", self.detector)
        form.addRow("Precision", self.precision)
        form.addRow("Device", self.provider)
        form.addRow("", manage)
        layout.addWidget(models)

        faces = QGroupBox("Faces")
        form = QFormLayout(faces)
        self.only_largest = QCheckBox("Only the largest face")
        self.min_face = QSpinBox()
        self.min_face.setRange(0, 4096)
        self.min_face.setSuffix(" px")
        self.min_face.setSpecialValueText("Auto")  # 0: 16 px, 2.5 % of the long side (to 40 px), or 1 %
        self.min_face.setToolTip(
            "Faces smaller than this (the longer side of the box) are left alone. Auto: 2.5 % of the "
            "photo's long side (16 to 40 px), or 1 % of it on photos over 4000 px"
        )
        self.color_correction = QCheckBox("Colour correction")
        self.color_correction.setToolTip("Match the restored face's colours to the original")
        form.addRow(self.only_largest)
        form.addRow("Minimum size", self.min_face)
        form.addRow(self.color_correction)
        layout.addWidget(faces)

        output = QGroupBox("Output")
        form = QFormLayout(output)
        self.output_dir = QLineEdit()
        self.output_dir.setPlaceholderText(default_output_dir())
        browse = QToolButton()
        browse.setText("…")
        browse.setToolTip("Choose the output folder")
        browse.clicked.connect(self._browse)
        folder_row = QHBoxLayout()
        folder_row.addWidget(self.output_dir, 1)
        folder_row.addWidget(browse)
        self.format = _combo(OUTPUT_FORMATS, FORMAT_LABELS)
        self.quality = QSpinBox()
        self.quality.setRange(1, 100)
        self.quality.setToolTip("JPEG / WebP quality")
        self.suffix = QLineEdit()
        self.suffix.setPlaceholderText("none, e.g. _restored")
        self.suffix.setValidator(QRegularExpressionValidator(QRegularExpression(r"[^/\\:*?\"<>|]*")))
        self.upscale = _combo(UPSCALES, {str(u): f"{u}×" for u in UPSCALES})
        self.skip_existing = QCheckBox("Skip photos already restored")
        self.auto_save = QCheckBox("Save each photo when it is done")
        self.recursive = QCheckBox("Include sub-folders of dropped folders")
        self.workers = QSpinBox()
        self.workers.setRange(0, 16)
        self.workers.setSpecialValueText("Auto")
        self.workers.setToolTip("Photos processed at the same time")
        form.addRow("Folder", folder_row)
        form.addRow("Format", self.format)
        form.addRow("Quality", self.quality)
        form.addRow("Suffix", self.suffix)
        form.addRow("Upscale", self.upscale)
        form.addRow("Workers", self.workers)
        form.addRow(self.skip_existing)
        form.addRow(self.auto_save)
        form.addRow(self.recursive)
        layout.addWidget(output)
        layout.addStretch(1)
        self.setWidget(body)
        self.setMinimumWidth(290)

        self.fidelity.valueChanged.connect(self._on_fidelity)
        for combo in (self.model, self.detector, self.precision, self.provider, self.format, self.upscale):
            combo.currentIndexChanged.connect(self._emit)
        for box in (self.only_largest, self.color_correction, self.skip_existing, self.auto_save, self.recursive):
            box.toggled.connect(self._emit)
        for spin in (self.min_face, self.quality, self.workers):
            spin.valueChanged.connect(self._emit)
        self.output_dir.editingFinished.connect(self._emit)
        self.suffix.editingFinished.connect(self._emit)

    # -- models --------------------------------------------------------------------------------

    def set_store(self, store: ModelStore) -> None:
        self._loading = True
        try:
            for combo, family, current in ((self.model, "restorer", self._settings.model),
                                           (self.detector, "detector", self._settings.detector)):
                combo.clear()
                for name in store.names(family):
                    spec = store.get(name)
                    combo.addItem(name, name)
                    combo.setItemData(combo.count() - 1, spec.description or spec.name, Qt.ItemDataRole.ToolTipRole)
                _select(combo, current)
        finally:
            self._loading = False

    # -- values --------------------------------------------------------------------------------

    def set_settings(self, settings: AppSettings) -> None:
        self._loading = True
        try:
            self._settings = settings
            self.fidelity.setValue(settings.fidelity)
            _select(self.model, settings.model)
            _select(self.detector, settings.detector)
            _select(self.precision, settings.precision)
            _select(self.provider, settings.provider)
            self.only_largest.setChecked(settings.only_largest)
            self.min_face.setValue(settings.min_face)
            self.color_correction.setChecked(settings.color_correction)
            self.output_dir.setText(settings.output_dir)
            _select(self.format, settings.format)
            self.quality.setValue(settings.quality)
            self.suffix.setText(settings.suffix)
            _select(self.upscale, settings.upscale)
            self.workers.setValue(settings.workers)
            self.skip_existing.setChecked(settings.skip_existing)
            self.auto_save.setChecked(settings.auto_save)
            self.recursive.setChecked(settings.recursive)
        finally:
            self._loading = False

    def settings(self) -> AppSettings:
        return self._settings

    def _read(self) -> AppSettings:
        return replace(
            self._settings,
            model=str(self.model.currentData() or self._settings.model),
            detector=str(self.detector.currentData() or self._settings.detector),
            precision=str(self.precision.currentData()),
            provider=str(self.provider.currentData()),
            fidelity=round(float(self.fidelity.value()), 3),
            only_largest=self.only_largest.isChecked(),
            min_face=self.min_face.value(),
            color_correction=self.color_correction.isChecked(),
            output_dir=self.output_dir.text().strip(),
            format=str(self.format.currentData()),
            quality=self.quality.value(),
            suffix=self.suffix.text(),
            upscale=int(self.upscale.currentData()),
            workers=self.workers.value(),
            skip_existing=self.skip_existing.isChecked(),
            auto_save=self.auto_save.isChecked(),
            recursive=self.recursive.isChecked(),
        )

    def _emit(self) -> None:
        if self._loading:
            return
        try:
            self._settings = self._read()
        except ValueError:
            self.set_settings(self._settings)  # a value the engine refuses: put the last good one back
            return
        self.changed.emit(self._settings)

    def _on_fidelity(self, value: float) -> None:
        if self._loading:
            return
        self._emit()
        self.fidelity_changed.emit(float(value))

    def set_theme_value(self, theme: str) -> None:
        self._settings = replace(self._settings, theme=theme)
        self.changed.emit(self._settings)

    def _browse(self) -> None:
        start = self.output_dir.text() or default_output_dir()
        folder = QFileDialog.getExistingDirectory(self, "Output folder", str(Path(start).expanduser()))
        if folder:
            self.output_dir.setText(folder)
            self._emit()
