"""Shared fixtures: the astronaut portrait, ../shared, an isolated user model folder, loaded models."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

# Tests never touch the real user's model or cache folder, and Qt never needs a display.
_USER_MODELS = tempfile.mkdtemp(prefix="restora-test-models-")
os.environ["RESTORA_MODEL_DIR"] = _USER_MODELS
os.environ["RESTORA_CACHE_DIR"] = tempfile.mkdtemp(prefix="restora-test-cache-")
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

SHARED = Path(__file__).resolve().parents[2] / "shared"
SHARED_MODELS = SHARED / "models"
SHARED_DATA = SHARED / "data"

# Where the astronaut's face is (MODELS.md: "one face at about x 178-273, y 55-180").
ASTRONAUT_FACE_BOX = (178.0, 55.0, 273.0, 180.0)


@pytest.fixture(scope="session")
def astronaut() -> np.ndarray:
    from skimage.data import astronaut as load

    return np.ascontiguousarray(load())


@pytest.fixture(scope="session")
def shared_models() -> Path:
    if not SHARED_MODELS.is_dir():
        pytest.skip(f"../shared/models is absent ({SHARED_MODELS})")
    return SHARED_MODELS


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"../shared/data is absent ({SHARED_DATA})")
    return SHARED_DATA


@pytest.fixture(scope="session")
def store():  # type: ignore[no-untyped-def]
    from engine.models import ModelStore

    return ModelStore.default()


@pytest.fixture(scope="session")
def enhancer(store):  # type: ignore[no-untyped-def]
    """The shipped defaults (restora-lite + MTCNN), loaded once for the whole session."""
    from engine.pipeline import Enhancer, EnhanceSettings

    return Enhancer(EnhanceSettings(color_correction=False), store)


@pytest.fixture()
def user_model_dir(tmp_path: Path) -> Iterator[Path]:
    """A fresh user model folder for tests that import or download."""
    folder = tmp_path / "user-models"
    folder.mkdir()
    old = os.environ["RESTORA_MODEL_DIR"]
    os.environ["RESTORA_MODEL_DIR"] = str(folder)
    try:
        yield folder
    finally:
        os.environ["RESTORA_MODEL_DIR"] = old


def box_iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0
