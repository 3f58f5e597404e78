"""The app's settings: one frozen dataclass, persisted with QSettings, turned into engine options.

``AppSettings`` is the single source for both ``EnhanceSettings`` (what the models do) and
``BatchOptions`` (where and how outputs are written), so the GUI and the CLI mean the same thing
by every option. Each job receives a snapshot; nothing reads widgets from a worker thread.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from PySide6.QtCore import QSettings, QStandardPaths

from engine.batch import OUTPUT_FORMATS, BatchOptions
from engine.pipeline import DEFAULT_DETECTOR, DEFAULT_RESTORER, PRECISIONS, PROVIDERS, UPSCALES, EnhanceSettings

THEMES = ("system", "dark", "light")
SETTINGS_GROUP = "settings"


def default_output_dir() -> str:
    pictures = QStandardPaths.writableLocation(QStandardPaths.StandardLocation.PicturesLocation)
    return str(Path(pictures or Path.home()) / "Restora")


def default_workers() -> int:
    # Each worker runs a whole photo; onnxruntime already uses several cores per inference.
    return max(1, min(2, (os.cpu_count() or 1) // 2))


@dataclass(frozen=True)
class AppSettings:
    model: str = DEFAULT_RESTORER
    detector: str = DEFAULT_DETECTOR
    precision: str = "auto"
    provider: str = "auto"
    fidelity: float = 0.5  # 0 = strongest restoration, 1 = closest to the input
    only_largest: bool = False
    min_face: int = 0  # 0 = auto: engine.pipeline.effective_min_face
    color_correction: bool = True
    upscale: int = 1
    output_dir: str = ""  # "" = default_output_dir()
    format: str = "keep"
    quality: int = 95
    suffix: str = ""
    skip_existing: bool = False
    workers: int = 0  # 0 = default_workers()
    recursive: bool = True
    auto_save: bool = False
    theme: str = "system"

    def __post_init__(self) -> None:
        # Validate through the engine's own dataclasses, so a bad value fails here with their message.
        self.enhance_settings()
        self.batch_options()
        if self.theme not in THEMES:
            raise ValueError(f"theme must be one of {', '.join(THEMES)}, not {self.theme!r}")
        if self.workers < 0:
            raise ValueError(f"workers must not be negative, not {self.workers}")

    @property
    def output_path(self) -> Path:
        return Path(self.output_dir or default_output_dir()).expanduser()

    @property
    def worker_count(self) -> int:
        return self.workers or default_workers()

    def enhance_settings(self) -> EnhanceSettings:
        return EnhanceSettings(
            model=self.model,
            detector=self.detector,
            precision=self.precision,
            provider=self.provider,
            fidelity=self.fidelity,
            min_face=self.min_face or None,
            only_largest=self.only_largest,
            upscale=self.upscale,
            color_correction=self.color_correction,
        )

    def batch_options(self) -> BatchOptions:
        return BatchOptions(
            output_dir=self.output_path,
            recursive=self.recursive,
            format=self.format,
            quality=self.quality,
            suffix=self.suffix,
            skip_existing=self.skip_existing,
            workers=self.worker_count,
        )


CHOICES: dict[str, tuple[Any, ...]] = {
    "precision": PRECISIONS,
    "provider": PROVIDERS,
    "upscale": UPSCALES,
    "format": OUTPUT_FORMATS,
    "theme": THEMES,
}


def _coerce(value: Any, like: Any) -> Any:
    """QSettings returns strings from INI files and native types elsewhere; bring both back."""
    if isinstance(like, bool):
        if isinstance(value, str):
            return value.strip().lower() in ("1", "true", "yes", "on")
        return bool(value)
    if isinstance(like, int):
        return int(value)
    if isinstance(like, float):
        return float(value)
    return str(value)


def load_settings(store: QSettings) -> AppSettings:
    """Read every field; a missing or invalid value falls back to its default, the others are kept."""
    defaults = AppSettings()
    values: dict[str, Any] = {}
    store.beginGroup(SETTINGS_GROUP)
    try:
        for item in fields(AppSettings):
            if not store.contains(item.name):
                continue
            default = getattr(defaults, item.name)
            try:
                value = _coerce(store.value(item.name), default)
                replace(defaults, **{item.name: value})  # validates this field alone
            except (TypeError, ValueError):
                continue
            values[item.name] = value
    finally:
        store.endGroup()
    try:
        return replace(defaults, **values)
    except ValueError:
        return defaults


def save_settings(settings: AppSettings, store: QSettings) -> None:
    store.beginGroup(SETTINGS_GROUP)
    try:
        for item in fields(AppSettings):
            store.setValue(item.name, getattr(settings, item.name))
    finally:
        store.endGroup()
    store.sync()
