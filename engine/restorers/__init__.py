"""Face restorers: one ONNX runner whose per-family conventions come from the model manifest."""

from __future__ import annotations

from engine.errors import ModelError
from engine.models import ModelStore
from engine.restorers.families import RESTORER_CONVENTIONS, TensorInfo, detect_family
from engine.restorers.onnx_restorer import OnnxRestorer
from engine.runtime import create_session

__all__ = ["RESTORER_CONVENTIONS", "OnnxRestorer", "TensorInfo", "detect_family", "load_restorer"]


def load_restorer(
    store: ModelStore,
    name: str,
    precision: str | None = None,
    provider: str = "auto",
    threads: int | None = None,
) -> OnnxRestorer:
    """Find, verify (sha256) and open a restorer from the manifest."""
    spec = store.get(name, precision)
    if spec.family != "restorer":
        raise ModelError(f"{spec.name} is a {spec.family} model, not a restorer")
    paths = store.require(spec)
    session = create_session(paths["model"], provider, threads, shapes_vary=bool(spec.crop_sizes))
    return OnnxRestorer(spec, session)
