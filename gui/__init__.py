"""Restora's desktop app: a PySide6 shell over the ``engine`` API (no engine internals here)."""
