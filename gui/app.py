"""Entry point of the desktop app: ``restora``, ``restora gui`` and ``python -m gui.app``."""

from __future__ import annotations

import argparse
import sys
import traceback
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from types import TracebackType

from PySide6.QtCore import QCoreApplication, Qt, QThreadPool, QTimer
from PySide6.QtGui import QColor, QGuiApplication, QPalette
from PySide6.QtWidgets import (
    QApplication,
    QDialog,
    QDialogButtonBox,
    QLabel,
    QMessageBox,
    QTextBrowser,
    QVBoxLayout,
    QWidget,
)

from engine.batch import describe_error
from engine.models import ASSETS_DIR
from engine.selftest import SelfTestReport, run_self_test
from gui.settings import AppSettings
from gui.workers import EnginePool, run_task

ORGANISATION = "Restora"
APP = "Restora"
ACCENT = QColor("#3d8bfd")


def version() -> str:
    try:
        return metadata.version("restora")
    except metadata.PackageNotFoundError:
        return "0.1.0"


# -- palettes ----------------------------------------------------------------------------------


def dark_palette() -> QPalette:
    palette = QPalette()
    window, base, text = QColor("#1f2125"), QColor("#16181b"), QColor("#e6e8eb")
    roles = {
        QPalette.ColorRole.Window: window,
        QPalette.ColorRole.WindowText: text,
        QPalette.ColorRole.Base: base,
        QPalette.ColorRole.AlternateBase: QColor("#272a2f"),
        QPalette.ColorRole.ToolTipBase: QColor("#2b2e33"),
        QPalette.ColorRole.ToolTipText: text,
        QPalette.ColorRole.PlaceholderText: QColor("#7d828a"),
        QPalette.ColorRole.Text: text,
        QPalette.ColorRole.Button: QColor("#2a2d32"),
        QPalette.ColorRole.ButtonText: text,
        QPalette.ColorRole.BrightText: QColor("#ff6b6b"),
        QPalette.ColorRole.Highlight: ACCENT,
        QPalette.ColorRole.HighlightedText: QColor("#ffffff"),
        QPalette.ColorRole.Link: ACCENT.lighter(120),
        QPalette.ColorRole.Light: QColor("#3a3e44"),
        QPalette.ColorRole.Midlight: QColor("#30343a"),
        QPalette.ColorRole.Mid: QColor("#25282d"),
        QPalette.ColorRole.Dark: QColor("#121315"),
        QPalette.ColorRole.Shadow: QColor("#000000"),
    }
    for role, color in roles.items():
        palette.setColor(role, color)
    for role in (QPalette.ColorRole.Text, QPalette.ColorRole.WindowText, QPalette.ColorRole.ButtonText):
        palette.setColor(QPalette.ColorGroup.Disabled, role, QColor("#80858c"))
    return palette


def light_palette() -> QPalette:
    palette = QApplication.style().standardPalette()
    palette.setColor(QPalette.ColorRole.Window, QColor("#f3f4f6"))
    palette.setColor(QPalette.ColorRole.Base, QColor("#ffffff"))
    palette.setColor(QPalette.ColorRole.AlternateBase, QColor("#eef0f3"))
    palette.setColor(QPalette.ColorRole.Highlight, ACCENT)
    palette.setColor(QPalette.ColorRole.HighlightedText, QColor("#ffffff"))
    return palette


STYLE_SHEET = """
QLabel#panelTitle { font-weight: 600; padding: 2px 2px 6px 2px; }
QGroupBox { font-weight: 600; border: 1px solid palette(mid); border-radius: 8px; margin-top: 14px;
            padding: 10px 8px 8px 8px; }
QGroupBox::title { subcontrol-origin: margin; left: 10px; padding: 0 4px; }
QToolBar { border: none; spacing: 4px; padding: 3px; }
QListView { border: 1px solid palette(mid); border-radius: 8px; }
QStatusBar QLabel { padding: 0 6px; }
QProgressBar { border: 1px solid palette(mid); border-radius: 6px; text-align: center; height: 16px; }
QProgressBar::chunk { background: palette(highlight); border-radius: 5px; }
"""


def system_is_dark() -> bool:
    scheme = QGuiApplication.styleHints().colorScheme()
    if scheme == Qt.ColorScheme.Unknown:
        window = QApplication.style().standardPalette().color(QPalette.ColorRole.Window)
        return window.lightness() < 128
    return scheme == Qt.ColorScheme.Dark


def apply_theme(theme: str) -> None:
    """Fusion with a dark or light palette; "system" follows the desktop's colour scheme."""
    app = QApplication.instance()
    if not isinstance(app, QApplication):
        return
    dark = system_is_dark() if theme == "system" else theme == "dark"
    app.setPalette(dark_palette() if dark else light_palette())
    app.setStyleSheet(STYLE_SHEET)


# -- about -------------------------------------------------------------------------------------


def model_card() -> str:
    card = ASSETS_DIR / "MODEL_CARD.md"
    try:
        return card.read_text(encoding="utf-8")
    except OSError:
        return "_The model card (assets/models/MODEL_CARD.md) is not installed._"


class AboutDialog(QDialog):
    def __init__(self, settings: AppSettings, engine: EnginePool, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("About Restora")
        self.resize(680, 560)
        licence = ""
        try:
            spec = engine.store.get(settings.model)
            licence = f"  \nModel licence: {spec.license}" if spec.license else ""
        except Exception:  # an unknown model name: the About box still opens
            pass
        text = (
            f"# Restora {version()}\n\n"
            "Restores the faces in old, blurry or over-compressed photos, offline, on this computer. "
            "Your originals are never modified.\n\n"
            f"Restorer: **{settings.model}** · detector: **{settings.detector}** · "
            f"precision: {settings.precision} · device: {settings.provider}{licence}\n\n"
            "---\n\n" + model_card()
        )
        browser = QTextBrowser()
        browser.setOpenExternalLinks(True)
        browser.setMarkdown(text)
        # The same checks as `restora self-test`, run in the background while the box is open.
        self.self_test = QLabel("Self-test: checking the installation…")
        self.self_test.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.self_test.setStyleSheet("font-family: monospace;")
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(self.reject)
        buttons.accepted.connect(self.accept)
        layout = QVBoxLayout(self)
        layout.addWidget(browser)
        layout.addWidget(self.self_test)
        layout.addWidget(buttons)
        store = engine.store
        run_task(QThreadPool.globalInstance(), lambda: run_self_test(store), self.show_self_test,
                 lambda error: self.self_test.setText(f"Self-test could not run: {describe_error(error)}"))

    def show_self_test(self, report: SelfTestReport) -> None:
        self.self_test.setText("\n".join([report.verdict(), *report.lines()]))


# -- errors ------------------------------------------------------------------------------------


def _excepthook(kind: type[BaseException], error: BaseException, tb: TracebackType | None) -> None:
    """An unexpected error: the details go to stderr for a bug report, the person sees one line."""
    traceback.print_exception(kind, error, tb, file=sys.stderr)
    if QApplication.instance() is not None:
        QMessageBox.critical(None, "Restora", f"Something went wrong: {describe_error(error)}\n\n"
                             "Your photos were not changed. The details are in the terminal output.")


# -- main --------------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="restora gui", description="Restora desktop app")
    parser.add_argument("paths", nargs="*", type=Path, help="photos or folders to add to the queue")
    parser.add_argument("--start", action="store_true", help="start restoring right away")
    parser.add_argument("--theme", choices=("system", "dark", "light"), default=None)
    parser.add_argument("--screenshot", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--size", default="1400x860", help=argparse.SUPPRESS)
    parser.add_argument("--settings", type=Path, default=None, help=argparse.SUPPRESS)  # an INI file (tests)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Open the window and run until it closes; returns the exit code.

    ``argv`` None (``restora`` / ``restora gui``, whose arguments the CLI has already read) opens
    an empty window; ``python -m gui.app`` passes its own arguments.
    """
    args = _parser().parse_args(list(argv or []))
    QCoreApplication.setOrganizationName(ORGANISATION)
    QCoreApplication.setApplicationName(APP)
    app = QApplication.instance() or QApplication([sys.argv[0] if sys.argv else "restora"])
    assert isinstance(app, QApplication)
    app.setApplicationDisplayName(APP)
    app.setStyle("Fusion")
    sys.excepthook = _excepthook

    from PySide6.QtCore import QSettings

    from gui.main_window import MainWindow

    store = QSettings(str(args.settings), QSettings.Format.IniFormat) if args.settings else QSettings()
    window = MainWindow(store)
    if args.theme:
        window.set_theme(args.theme)
    apply_theme(window.app_settings.theme)
    QGuiApplication.styleHints().colorSchemeChanged.connect(lambda _: apply_theme(window.app_settings.theme))
    if args.screenshot is not None:
        width, height = (int(v) for v in args.size.lower().split("x"))
        window.resize(width, height)
    window.show()
    if args.paths:
        window.add_paths(args.paths)
    if args.start or args.screenshot is not None:
        window.inputs_added.connect(lambda _: window.start())
    if args.screenshot is not None:
        _take_screenshot_when_ready(window, args.screenshot)
    return int(app.exec())


def _take_screenshot_when_ready(window: QWidget, target: Path) -> None:
    """Grab the window once the first photo's restored preview is on screen (docs/screenshot.png)."""
    from gui.main_window import MainWindow

    assert isinstance(window, MainWindow)

    def grab() -> None:
        window.grab().save(str(target))
        print(f"screenshot: {target}")
        QApplication.quit()

    def on_preview(result: object) -> None:
        if getattr(result, "after", None) is not None:
            window.preview_updated.disconnect(on_preview)
            window._focus_face(0)  # the face fills the view: what a person looks at first
            QTimer.singleShot(700, grab)

    def on_finished() -> None:
        window.preview_updated.connect(on_preview)
        window.queue_view.setCurrentIndex(window.model.index(0))
        window._show_current()

    window.runner.run_finished.connect(on_finished)
    QTimer.singleShot(240_000, grab)  # never hang a docs build


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
