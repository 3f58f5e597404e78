"""Typed errors raised by the engine.

Library code raises these; only the CLI and the GUI turn them into messages and exit codes.
Every message is one line a user can act on (what was wrong, with which file).
"""

from __future__ import annotations


class RestoraError(Exception):
    """Base of every error the engine raises on purpose."""


class ImageError(RestoraError):
    """An input file cannot be read as an image (not an image, truncated, unsupported)."""


class ImageTooLargeError(ImageError):
    """The image is over the configured pixel limit (decompression-bomb guard)."""


class OutputError(RestoraError):
    """An output cannot be written (would overwrite an input, folder not writable, disk full)."""


class ModelError(RestoraError):
    """A model is unknown, missing, corrupt or does not match the family it claims."""


class ModelNotFoundError(ModelError):
    """No model of that name in the manifest, or its file is not present on disk."""


class ModelIntegrityError(ModelError):
    """A model file's sha256 does not match the manifest."""


class ModelFormatError(ModelError):
    """A file is not a valid ONNX graph, or its inputs/outputs match no known family."""


class DownloadError(ModelError):
    """A model download failed (network, HTTP status, or verification)."""


class ProviderError(RestoraError):
    """An execution provider cannot be used."""


class CancelledError(RestoraError):
    """Work was stopped through a cancellation token."""
