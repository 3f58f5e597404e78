"""Entry point of the packaged app (build.spec): the desktop app by default.

    Restora                      open the desktop app (photos and folders as arguments queue them)
    Restora --cli COMMAND ...    the ``restora`` command line, e.g. ``Restora --cli enhance in -o out``
    Restora --self-test          check the installation (same as ``restora self-test``); exit 0 or 1

``RESTORA_REPORT_SHOWN=1`` prints ``restora: window shown after N.NNN s`` when the main window is
first exposed on screen (packaging/measure_startup.py reads it); nothing else changes.
"""

from __future__ import annotations

import os
import sys
import time

_STARTED = time.perf_counter()


def _quiet_streams() -> None:
    # A windowed Windows/macOS build has no console: print() must not crash the self-test.
    if sys.stdout is None:
        sys.stdout = open(os.devnull, "w", encoding="utf-8")  # noqa: SIM115
    if sys.stderr is None:
        sys.stderr = open(os.devnull, "w", encoding="utf-8")  # noqa: SIM115


def _report_when_shown() -> None:
    """Create the QApplication early with an event filter that reports the main window's first Expose."""
    from PySide6.QtCore import QEvent, QObject
    from PySide6.QtGui import QWindow
    from PySide6.QtWidgets import QApplication, QMainWindow

    class _FirstExpose(QObject):
        def eventFilter(self, watched: QObject, event: QEvent) -> bool:
            # Expose goes to the native QWindow behind the widget, once it is really on screen.
            if (
                event.type() == QEvent.Type.Expose
                and isinstance(watched, QWindow)
                and watched.isExposed()
                and any(isinstance(w, QMainWindow) and w.isVisible() for w in QApplication.topLevelWidgets())
            ):
                print(f"restora: window shown after {time.perf_counter() - _STARTED:.3f} s", flush=True)
                app.removeEventFilter(self)
            return False

    app = QApplication.instance() or QApplication([sys.argv[0]])
    probe = _FirstExpose(app)
    app.installEventFilter(probe)


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    _quiet_streams()
    if args[:1] == ["--self-test"]:
        from engine.cli import main as cli_main

        return int(cli_main(["self-test", *args[1:]]))
    if args[:1] == ["--cli"]:
        from engine.cli import main as cli_main

        return int(cli_main(args[1:]))
    if os.environ.get("RESTORA_REPORT_SHOWN"):
        _report_when_shown()
    from gui.app import main as gui_main

    return int(gui_main(args))


if __name__ == "__main__":
    sys.exit(main())
