"""The model manifest: what models exist, where their files are, and whether they are intact.

CONTRACT (stub written by the lead; the models helper implements the bodies):

- ``assets/models/manifest.json`` lists every model Restora knows: shipped ones and the public
  ones users bring (detectors and restorers), each with sha256, licence, source and, where there
  is one, a download URL. An entry is either the single-file form of DESIGN.md
  (``"file": ..., "sha256": ...``) or a multi-file form (``"files": [{"role": ..., "file": ...,
  "sha256": ..., "url": ..., "package": ...}]``) for models such as MTCNN (pnet/rnet/onet) or
  BlazeFace (model + anchors). Several entries may share a ``name`` with different ``precision``.
- Files are looked up in order: the store's extra dirs (tests pass ``../shared/models``),
  the user model folder (platformdirs), ``assets/models`` (next to the package, or next to the
  frozen app), and, for a file with ``package``, that installed package's folder found with
  ``importlib.util.find_spec`` (never imported).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

FAMILIES = ("restorer", "detector", "landmarks")


@dataclass(frozen=True)
class ModelFile:
    """One file of a model."""

    role: str  # "model" for single-file models; "pnet"/"rnet"/"onet", "anchors"...
    file: str
    sha256: str
    url: str | None = None
    package: str | None = None  # an installed package whose folder holds the file


@dataclass(frozen=True)
class ModelSpec:
    """One manifest entry: a model in one precision, with its I/O conventions as data."""

    name: str
    family: str  # one of FAMILIES
    arch: str  # restorer: restora|gfpgan|gpen|codeformer|restoreformer; detector: mtcnn|yunet|scrfd|retinaface|blazeface|ultraface; landmarks: facemesh
    files: tuple[ModelFile, ...]
    precision: str = "fp32"
    size: int | None = None  # square input size of a restorer (or a fixed-size detector)
    template: str | None = None  # alignment template for restorers: "ffhq" | "arcface"
    input: str | None = None  # input tensor name
    output: str | None = None  # output tensor name (None: pick by shape)
    range: tuple[float, float] = (0.0, 1.0)  # value range of model input and output
    channel_order: str = "rgb"  # "rgb" | "bgr"
    weight_input: str | None = None  # name of a fidelity-weight input (CodeFormer "w")
    default_fidelity: float = 0.5
    license: str = ""
    source: str = ""
    description: str = ""
    options: Mapping[str, Any] = field(default_factory=dict)  # family extras (thresholds, companion landmarks model...)

    @property
    def key(self) -> str:
        """``name/precision``, unique in a manifest."""
        return f"{self.name}/{self.precision}"

    def file(self, role: str = "model") -> ModelFile:
        for f in self.files:
            if f.role == role:
                return f
        raise KeyError(f"{self.name} has no file with role {role!r}")
