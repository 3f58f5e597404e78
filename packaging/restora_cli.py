"""Console entry point of the packaged app on Windows (``restora-cli.exe``), where the windowed
``Restora.exe`` has no console to print to. Same commands as ``restora``."""

from __future__ import annotations

import sys

from engine.cli import main

if __name__ == "__main__":
    sys.exit(int(main()))
