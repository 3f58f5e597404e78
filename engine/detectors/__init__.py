"""Face detectors, one module per family, built from a manifest entry.

``build_detector(spec, paths, make_session)`` returns a ``Detector`` for ``spec.arch``; ``paths``
maps each file role of the entry ("model", "pnet"/"rnet"/"onet", "anchors", "landmarks") to a file.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

from engine.detectors.base import Detector, MakeSession
from engine.detectors.blazeface import blazeface_from_spec
from engine.detectors.mtcnn import mtcnn_from_spec
from engine.detectors.retinaface import retinaface_from_spec
from engine.detectors.scrfd import scrfd_from_spec
from engine.detectors.ultraface import ultraface_from_spec
from engine.detectors.yunet import yunet_from_spec
from engine.errors import ModelFormatError
from engine.models import ModelSpec

DetectorFactory = Callable[[ModelSpec, Mapping[str, Path], MakeSession], Detector]

DETECTOR_FAMILIES: dict[str, DetectorFactory] = {
    "mtcnn": mtcnn_from_spec,
    "yunet": yunet_from_spec,
    "scrfd": scrfd_from_spec,
    "retinaface": retinaface_from_spec,
    "blazeface": blazeface_from_spec,
    "ultraface": ultraface_from_spec,
}


def build_detector(spec: ModelSpec, paths: Mapping[str, Path], make_session: MakeSession) -> Detector:
    """The detector for a manifest entry; raises ModelFormatError for an unknown family."""
    if spec.family != "detector":
        raise ModelFormatError(f"{spec.name} is a {spec.family} model, not a detector")
    factory = DETECTOR_FAMILIES.get(spec.arch)
    if factory is None:
        known = ", ".join(sorted(DETECTOR_FAMILIES))
        raise ModelFormatError(f"{spec.name}: unknown detector arch {spec.arch!r} (known: {known})")
    return factory(spec, paths, make_session)


__all__ = ["DETECTOR_FAMILIES", "Detector", "DetectorFactory", "MakeSession", "build_detector"]
