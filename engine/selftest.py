"""``restora self-test``: is this installation able to restore a photo?

Five checks, each timed, in order; a check whose inputs an earlier failure took away is reported
as failed with "skipped: ..." (so the verdict never says OK by omission):

- ``sha256``: every file of every shipped model (an entry of a shipped manifest with nothing to
  download: restora-lite in each precision, MTCNN) is present and matches its sha256;
- ``load``: each shipped model opens in onnxruntime (the default restorer and detector through an
  ``Enhancer``, exactly as ``restora enhance`` loads them);
- ``detect``: the default detector finds exactly one face in the built-in test photo
  (``assets/samples/astronaut.jpg``);
- ``restore``: every shipped restorer restores that face, and the result still looks like it
  (correlation with the input crop), with no blank or constant output;
- ``save``: the default restorer's face is pasted back (the batch's compose), the photo is saved
  as JPEG into a temporary folder and read back with the input's size and the saved pixels.

The same report feeds the CLI verdict line, the frozen app's ``--self-test`` and the About box.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from engine import faces as facelib
from engine.detectors import build_detector
from engine.errors import ModelError, RestoraError
from engine.faces import Face
from engine.imageio import Image, load_image, save_image, to_uint8
from engine.models import ASSETS_DIR, USER_MANIFEST, ModelSpec, ModelStore
from engine.pipeline import DEFAULT_RESTORER, PROVIDERS, Enhancer, EnhanceSettings, FaceRestoration
from engine.restorers import OnnxRestorer
from engine.runtime import create_session

if TYPE_CHECKING:  # engine.cli imports this module by name when it builds its parser
    from engine.cli import Environment

SAMPLE_PHOTO = ASSETS_DIR.parent / "samples" / "astronaut.jpg"
CHECKS = ("sha256", "load", "detect", "restore", "save")
# A restored face is still the same face: its grey levels correlate strongly with the input crop.
MIN_CORRELATION = 0.6


@dataclass(frozen=True)
class CheckResult:
    name: str  # one of CHECKS
    ok: bool
    seconds: float
    detail: str  # one line: what was checked, or what went wrong


@dataclass(frozen=True)
class SelfTestReport:
    checks: tuple[CheckResult, ...]
    seconds: float

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(check.ok for check in self.checks)

    @property
    def failures(self) -> tuple[CheckResult, ...]:
        return tuple(check for check in self.checks if not check.ok)

    def verdict(self) -> str:
        """``Restora self-test: OK (5 checks, 1.2 s)`` or ``... FAILED: <first problem> (...)``."""
        if self.ok:
            return f"Restora self-test: OK ({len(self.checks)} checks, {self.seconds:.1f} s)"
        first = self.failures[0]
        return (
            f"Restora self-test: FAILED: {first.name}: {first.detail} "
            f"({len(self.failures)} of {len(self.checks)} checks failed, {self.seconds:.1f} s)"
        )

    def lines(self) -> list[str]:
        """One line per check, for ``--details`` and the About box."""
        return [
            f"{'ok    ' if c.ok else 'FAILED'} {c.name:<8} {c.seconds:6.2f} s  {c.detail}" for c in self.checks
        ]


class _Skipped(Exception):
    """A check that cannot run because an earlier one failed."""


def shipped_specs(store: ModelStore) -> list[ModelSpec]:
    """Models that come with Restora: entries of a shipped manifest with no file to download."""
    return [
        spec
        for spec in store.specs
        if Path(spec.manifest).name != USER_MANIFEST and all(f.url is None for f in spec.files)
    ]


def _label(specs: list[ModelSpec]) -> str:
    names: dict[str, list[str]] = {}
    for spec in specs:
        names.setdefault(spec.name, []).append(spec.precision)
    return ", ".join(f"{name} {'/'.join(precisions)}" for name, precisions in names.items())


def _correlation(a: np.ndarray, b: np.ndarray) -> float:
    grey_a = a.astype(np.float64).mean(axis=2).ravel()
    grey_b = b.astype(np.float64).mean(axis=2).ravel()
    if grey_a.std() == 0 or grey_b.std() == 0:
        return 0.0
    return float(np.corrcoef(grey_a, grey_b)[0, 1])


@dataclass
class _State:
    """What one check hands to the next (local to one run)."""

    enhancer: Enhancer | None = None
    restorers: tuple[OnnxRestorer, ...] = ()
    photo: Image | None = None
    face: Face | None = None
    restored: FaceRestoration | None = None


def run_self_test(
    store: ModelStore,
    *,
    provider: str = "auto",
    sample: Path = SAMPLE_PHOTO,
    on_check: Callable[[CheckResult], None] | None = None,
) -> SelfTestReport:
    """Run the five checks against ``store``; never raises for a failed check (see the report)."""
    started = time.perf_counter()
    shipped = shipped_specs(store)
    state = _State()
    steps: dict[str, Callable[[], str]] = {
        "sha256": lambda: _check_sha256(store, shipped),
        "load": lambda: _check_load(store, shipped, provider, state),
        "detect": lambda: _check_detect(sample, state),
        "restore": lambda: _check_restore(state),
        "save": lambda: _check_save(state),
    }
    results: list[CheckResult] = []
    for name in CHECKS:
        check_started = time.perf_counter()
        try:
            detail, ok = steps[name](), True
        except _Skipped as skipped:
            detail, ok = f"skipped: {skipped}", False
        except (RestoraError, ValueError, OSError) as error:
            detail, ok = " ".join(str(error).split()) or type(error).__name__, False
        except Exception as error:  # an unexpected failure is still a verdict, not a crash
            detail, ok = f"{type(error).__name__}: {' '.join(str(error).split())}", False
        result = CheckResult(name, ok, time.perf_counter() - check_started, detail)
        results.append(result)
        if on_check is not None:
            on_check(result)
    return SelfTestReport(tuple(results), time.perf_counter() - started)


def _check_sha256(store: ModelStore, shipped: list[ModelSpec]) -> str:
    if not shipped:
        raise ModelError("no shipped model is listed in the manifests")
    files = 0
    for spec in shipped:
        for row in store.status(spec).files:
            where = row.path if row.path is not None else row.file
            if row.problem == "missing":
                raise ModelError(f"model {spec.key}: {row.file} not found")
            if row.problem == "sha256 mismatch":
                raise ModelError(f"model {spec.key}: {where}: sha256 mismatch (the file is damaged)")
            if not row.verified:
                raise ModelError(f"model {spec.key}: {where}: {row.problem}")
            files += 1
    return f"{files} files of {len(shipped)} shipped models match their sha256"


def _check_load(store: ModelStore, shipped: list[ModelSpec], provider: str, state: _State) -> str:
    if not any(spec.name == DEFAULT_RESTORER for spec in shipped):
        raise ModelError(f"the default restorer {DEFAULT_RESTORER} is not shipped")
    # The default restorer and detector load as `restora enhance` loads them; the rest one by one.
    enhancer = Enhancer(EnhanceSettings(provider=provider), store)
    restorers = [enhancer.restorer]
    already = {enhancer.restorer_spec.key, enhancer.detector_spec.key if enhancer.detector_spec else ""}
    for spec in shipped:
        if spec.key in already:
            continue
        paths = store.require(spec)
        if spec.family == "restorer":
            restorers.append(OnnxRestorer(spec, create_session(paths["model"], provider)))
        elif spec.family == "detector":
            build_detector(spec, paths, lambda path: create_session(path, provider))
        else:
            for path in paths.values():
                if path.suffix == ".onnx":
                    create_session(path, provider)
    state.enhancer = enhancer
    state.restorers = tuple(restorers)
    where = enhancer.provider.removesuffix("ExecutionProvider").lower()
    return f"{len(shipped)} models open on {where} ({_label(shipped)})"


def _check_detect(sample: Path, state: _State) -> str:
    if state.enhancer is None:
        raise _Skipped("the models did not load")
    photo = load_image(sample)
    found = state.enhancer.detect(photo)
    if len(found) != 1:
        raise RestoraError(f"{state.enhancer.settings.detector} found {len(found)} faces in {sample.name}; expected 1")
    state.photo, state.face = photo, found[0]
    x1, y1, x2, y2 = (round(v) for v in found[0].box)
    where = f"at ({x1}, {y1})-({x2}, {y2}), score {found[0].score:.2f}"
    return f"{state.enhancer.settings.detector}: 1 face in {sample.name} {where}"


def _check_restore(state: _State) -> str:
    if state.enhancer is None:
        raise _Skipped("the models did not load")
    if state.photo is None or state.face is None:
        raise _Skipped("no face was detected")
    pixels = to_uint8(state.photo.pixels)
    results = []
    for restorer in state.restorers:
        aligned = facelib.align_face(pixels, state.face, restorer.size, restorer.spec.template or "ffhq")
        restored = restorer.restore(aligned.crop[None], None)[0]
        if restored.shape != aligned.crop.shape:
            raise RestoraError(f"{restorer.spec.key} returned shape {restored.shape}, expected {aligned.crop.shape}")
        correlation = _correlation(restored, aligned.crop)
        if correlation < MIN_CORRELATION:
            raise RestoraError(
                f"{restorer.spec.key} output does not resemble the face (correlation {correlation:.2f} "
                f"< {MIN_CORRELATION})"
            )
        if restorer is state.enhancer.restorer:
            state.restored = FaceRestoration(state.face, aligned.matrix, aligned.crop, restored)
        results.append(f"{restorer.spec.precision} r={correlation:.2f}")
    return f"{len(results)} restorers ({', '.join(results)})"


def _check_save(state: _State) -> str:
    if state.enhancer is None:
        raise _Skipped("the models did not load")
    if state.photo is None or state.restored is None:
        raise _Skipped("no face was restored")
    # The same compose and save as a batch, on the face restored above (no second inference).
    output = state.enhancer.compose_result(state.photo, (state.restored,), detected=1).output
    with tempfile.TemporaryDirectory(prefix="restora-self-test-") as folder:
        target = Path(folder) / "restored.jpg"
        save_image(output, target, quality=95)
        saved = load_image(target)
        if (saved.width, saved.height) != (state.photo.width, state.photo.height):
            raise RestoraError(
                f"{target}: read back at {saved.width}x{saved.height}, "
                f"expected {state.photo.width}x{state.photo.height}"
            )
        saved_pixels = to_uint8(saved.pixels).astype(np.int16)
        error = float(np.abs(saved_pixels - to_uint8(output.pixels)).mean())
        if error > 4.0:  # JPEG at quality 95 stays within ~1 level on average
            raise RestoraError(f"{target}: read back {error:.1f} levels away from what was saved")
        if not np.any(saved_pixels != to_uint8(state.photo.pixels)):
            raise RestoraError(f"{target}: identical to the input; the face was not pasted back")
        return f"restored photo saved as JPEG {saved.width}x{saved.height} and read back (mean error {error:.2f})"


# -- `restora self-test` -------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--provider", choices=PROVIDERS, default="auto", help="where to run the models")
    parser.add_argument("--details", action="store_true", help="also print one line per check")


def run(args: argparse.Namespace, env: Environment) -> int:
    """Print the verdict line (and with --details each check); 0 when every check passed, else 1."""
    stdout = env.stdout
    started = time.perf_counter()
    try:
        store = env.store()
    except RestoraError as error:  # a broken manifest is a failed installation, not a usage error
        print(f"Restora self-test: FAILED: manifest: {error} ({time.perf_counter() - started:.1f} s)", file=stdout)
        return 1
    report = run_self_test(store, provider=args.provider)
    print(report.verdict(), file=stdout)
    if args.details or not report.ok:
        for line in report.lines():
            print(f"  {line}", file=stdout)
    return 0 if report.ok else 1
