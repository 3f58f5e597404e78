"""onnxruntime session factory: execution providers, threads, quiet logging, clear load errors.

Every ONNX model in Restora (detectors, restorers) is opened through ``create_session`` so that
provider choice, thread counts and error messages are the same everywhere.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import onnxruntime as ort

from engine.errors import ModelFormatError, ModelNotFoundError, ProviderError

# Short names used by the CLI / GUI -> onnxruntime provider names.
PROVIDER_NAMES: dict[str, str] = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "directml": "DmlExecutionProvider",
    "coreml": "CoreMLExecutionProvider",
    "openvino": "OpenVINOExecutionProvider",
}
PROVIDER_CHOICES = ("auto", *PROVIDER_NAMES)
# "auto" takes the first accelerator present; CPU is always the last resort.
AUTO_ORDER = ("cuda", "directml", "coreml", "openvino")
_LABELS = {"cuda": "CUDA", "directml": "DirectML", "coreml": "CoreML", "openvino": "OpenVINO", "cpu": "CPU"}
CPU = PROVIDER_NAMES["cpu"]

# Some public graphs (UltraFace, opset 9) warn hundreds of times at load; keep the default logger quiet.
ort.set_default_logger_severity(3)


@dataclass(frozen=True)
class SessionInfo:
    """Which providers a session was built with, and which one runs it."""

    providers: tuple[str, ...]  # onnxruntime names, in priority order
    provider: str  # short name of the first (active) provider: "cpu", "cuda", ...
    note: str | None = None  # why the requested provider was not used, if it was not


def available_providers() -> list[str]:
    """onnxruntime provider names available in this build (always includes CPU)."""
    names = list(ort.get_available_providers())
    if CPU not in names:
        names.append(CPU)
    return names


def short_name(provider: str) -> str:
    """``CUDAExecutionProvider`` -> ``cuda``; unknown names are returned lower-cased."""
    for short, full in PROVIDER_NAMES.items():
        if full == provider:
            return short
    return provider.removesuffix("ExecutionProvider").lower()


def resolve_providers(choice: str) -> tuple[list[str], str | None]:
    """Map auto|cpu|cuda|directml|coreml|openvino to onnxruntime providers, CPU last.

    Returns (providers, note); note is a human sentence when the requested provider is not
    available in this onnxruntime build and CPU is used instead, else None.
    """
    key = choice.strip().lower()
    if key not in PROVIDER_CHOICES:
        raise ProviderError(f"unknown provider {choice!r}: choose one of {', '.join(PROVIDER_CHOICES)}")
    present = set(available_providers())
    if key == "auto":
        for short in AUTO_ORDER:
            if PROVIDER_NAMES[short] in present:
                return [PROVIDER_NAMES[short], CPU], None
        return [CPU], None
    if key == "cpu":
        return [CPU], None
    wanted = PROVIDER_NAMES[key]
    if wanted in present:
        return [wanted, CPU], None
    return [CPU], f"{_LABELS[key]} is not available in this onnxruntime build; using CPU"


def session_options(
    threads: int | None = None, memory_arena: bool = True, shapes_vary: bool = False
) -> ort.SessionOptions:
    """Options shared by every session: sequential, fully optimised, quiet, no spinning.

    The memory arena keeps its largest allocation for the life of the session; that is bounded for
    every model here (restora-lite takes three crop sizes, the public restorers one, MTCNN's P-Net runs
    in 128k-pixel strips, R/O-Net in fixed batches), and without it MTCNN's changing shapes ran 1.7x
    slower (P-Net 145 vs 84 ms on a 640 x 480 level); without it the restorer ran 10.9 instead of 18.4
    photos/s in the soak. ``memory_arena=False`` remains for callers that feed unbounded shapes.
    ``shapes_vary`` (a restorer with several crop sizes) turns off onnxruntime's memory patterns, which
    plan one block per input shape: with five crop sizes, a 1,000-photo soak grew from 504 to 574 MiB
    with them and 467 to 520 MiB without; random shapes straight through onnxruntime, 235 against 181
    MiB. 512 px speed the same (21.5-23.7 against 21.5-23.1 ms, alternating blocks).
    Idle intra-op threads sleep instead of spinning: the batch engine's loader and saver threads
    need the same two cores (P-Net 69 vs 84 ms, the restorer no slower).
    """
    options = ort.SessionOptions()
    options.enable_cpu_mem_arena = memory_arena
    options.enable_mem_pattern = not shapes_vary
    options.intra_op_num_threads = max(1, threads if threads is not None else (os.cpu_count() or 1))
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


def create_session(
    path: Path | str | bytes, provider: str = "auto", threads: int | None = None, *, memory_arena: bool = True,
    shapes_vary: bool = False,
) -> ort.InferenceSession:
    """Open an ONNX file (or a serialized graph, e.g. one rewritten after loading) with the chosen
    provider, falling back to CPU.

    Raises ModelNotFoundError when the file is missing, ModelFormatError when onnxruntime
    cannot load it (not ONNX, truncated, unsupported operator), ProviderError for a bad choice.
    """
    if isinstance(path, bytes):
        model: str | bytes = path
        label = "the model graph"
    else:
        path = Path(path)
        if not path.is_file():
            raise ModelNotFoundError(f"model file not found: {path}")
        model, label = str(path), path.name
    providers, _note = resolve_providers(provider)
    options = session_options(threads, memory_arena, shapes_vary)
    try:
        return ort.InferenceSession(model, sess_options=options, providers=providers)
    except Exception as first_error:  # onnxruntime raises its own pybind exception types
        if providers != [CPU]:
            # An accelerator can be compiled in yet unusable (missing driver/DLLs): retry on CPU.
            try:
                cpu_options = session_options(threads, memory_arena, shapes_vary)
                return ort.InferenceSession(model, sess_options=cpu_options, providers=[CPU])
            except Exception as cpu_error:
                raise ModelFormatError(
                    f"{label} cannot be loaded by onnxruntime: {_first_line(cpu_error)}"
                ) from cpu_error
        raise ModelFormatError(
            f"{label} cannot be loaded by onnxruntime: {_first_line(first_error)}"
        ) from first_error


def provider_used(session: ort.InferenceSession) -> str:
    """Short name of the provider that runs the session ("cpu", "cuda", ...)."""
    active = session.get_providers()
    return short_name(active[0]) if active else "cpu"


def session_info(session: ort.InferenceSession, requested: str = "auto") -> SessionInfo:
    """Providers of a session plus the note explaining a fallback from ``requested``."""
    active = tuple(session.get_providers())
    wanted, note = resolve_providers(requested)
    if note is None and wanted[0] != CPU and (not active or active[0] != wanted[0]):
        note = f"{_LABELS.get(short_name(wanted[0]), wanted[0])} could not be used for this model; using CPU"
    return SessionInfo(providers=active, provider=provider_used(session), note=note)


def make_session_factory(
    provider: str = "auto", threads: int | None = None
) -> Callable[[Path | bytes], ort.InferenceSession]:
    """A ``path -> session`` callable with fixed provider and threads (for detectors)."""
    resolve_providers(provider)  # fail early on a bad choice

    def make_session(path: Path | bytes) -> ort.InferenceSession:
        return create_session(path, provider, threads)

    return make_session
