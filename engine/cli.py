"""The ``restora`` command line: ``main(argv, env) -> ExitStatus``, testable in-process.

Library code raises typed errors; this module is the one place that turns them into messages
and exit codes (see ../shared/docs/CLI.md for the contract).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from pathlib import Path
from typing import TextIO

from rich.progress import Progress, TaskID

from engine.batch import (
    OUTPUT_FORMATS,
    BatchOptions,
    BatchProgress,
    BatchReport,
    InputError,
    check_output_dir,
    collect_inputs,
    describe_error,
    plan_outputs,
    run_batch,
)
from engine.errors import CancelledError, ModelError, OutputError, RestoraError
from engine.imageio import DEFAULT_MAX_PIXELS, load_image
from engine.models import ModelStore, environment_model_dirs
from engine.pipeline import (
    DEFAULT_DETECTOR,
    PRECISIONS,
    PROVIDERS,
    UPSCALES,
    CancelToken,
    Enhancer,
    EnhanceSettings,
    detect_faces,
    load_detector,
)


class ExitStatus(IntEnum):
    OK = 0
    ERROR = 1  # at least one input failed; the rest were processed
    USAGE = 2  # bad option, missing model, unwritable output folder: nothing was processed
    INTERRUPTED = 130  # Ctrl-C


class UsageError(Exception):
    """A command-line mistake, reported with exit status 2."""


@dataclass
class Environment:
    """The streams and settings a command runs with; tests pass their own."""

    stdout: TextIO = field(default_factory=lambda: sys.stdout)
    stderr: TextIO = field(default_factory=lambda: sys.stderr)
    model_dirs: tuple[Path, ...] = ()

    @property
    def stderr_isatty(self) -> bool:
        return bool(getattr(self.stderr, "isatty", lambda: False)())

    def store(self) -> ModelStore:
        return ModelStore.default(extra_dirs=self.model_dirs)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{self.prog}: {message}")


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, not {value}")
    return value


def _whole_number(minimum: int) -> Callable[[str], int]:
    """An argparse type: a whole number of at least ``minimum``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, not {value}")
        return value

    return parse


_positive = _whole_number(1)
_non_negative = _whole_number(0)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="restora", description="Restore faces in photos, offline.")
    parser.add_argument("--verbose", action="store_true", help="show full error details")
    commands = parser.add_subparsers(dest="command", parser_class=_Parser)

    enhance = commands.add_parser("enhance", help="restore faces in photos and folders")
    enhance.add_argument("inputs", nargs="+", type=Path, metavar="INPUT", help="image files and/or folders")
    enhance.add_argument("-o", "--output", type=Path, required=True, metavar="DIR", help="output folder")
    enhance.add_argument("--model", default=None, help="restorer (see `restora models list`)")
    enhance.add_argument("--detector", default=DEFAULT_DETECTOR, help="face detector")
    enhance.add_argument("--precision", choices=PRECISIONS, default="auto")
    enhance.add_argument("--provider", choices=PROVIDERS, default="auto")
    enhance.add_argument("--fidelity", type=_fraction, default=None,
                         help="0 = strongest restoration, 1 = closest to the input (default: per model)")
    enhance.add_argument("--batch-size", type=_positive, default=None, help="faces per inference call")
    enhance.add_argument("--workers", type=_positive, default=None, help="parallel photo loaders/savers")
    enhance.add_argument("--min-face", type=_non_negative, default=None, metavar="PX",
                         help="ignore faces smaller than this (default: 2.5%% of the long side, 16 to "
                              "40 px, or 1%% of it over 4000 px; 16 finds small faces, slower)")
    enhance.add_argument("--only-largest", action="store_true", help="restore only the largest face")
    enhance.add_argument("--aligned", action="store_true",
                         help="inputs are aligned face crops: skip detection, restore the whole crop")
    enhance.add_argument("--upscale", type=int, choices=UPSCALES, default=1, help="output scale of the photo")
    enhance.add_argument("--no-color-correction", dest="color_correction", action="store_false",
                         help="do not match the restored faces' colour to the photo")
    enhance.add_argument("--format", choices=OUTPUT_FORMATS, default="keep")
    enhance.add_argument("--quality", type=_positive, default=95, help="JPEG/WebP quality")
    enhance.add_argument("--suffix", default="", help="added to output file names")
    enhance.add_argument("--skip-existing", action="store_true", help="skip inputs whose output exists")
    enhance.add_argument("--recursive", action="store_true", help="descend into sub-folders")
    enhance.add_argument("--json", type=Path, default=None, metavar="FILE", help="write the run report")
    enhance.add_argument("--max-pixels", type=_positive, default=DEFAULT_MAX_PIXELS,
                         help="refuse images with more pixels than this (decompression-bomb guard)")
    enhance.add_argument("--quiet", action="store_true", help="no progress output")
    enhance.add_argument("--ray", default=None, metavar="auto|ADDRESS",
                         help="run on a Ray cluster: auto starts one here; ray://host:10001 or a head address joins")
    enhance.add_argument("--ray-workers", type=_positive, default=None, metavar="N",
                         help="worker actors on the cluster (default: one per 2 CPUs)")

    detect = commands.add_parser("detect", help="print the faces found in images")
    detect.add_argument("images", nargs="+", type=Path, metavar="IMAGE")
    detect.add_argument("--detector", default=DEFAULT_DETECTOR)
    detect.add_argument("--provider", choices=PROVIDERS, default="auto")
    detect.add_argument("--min-face", type=_non_negative, default=None, metavar="PX",
                        help="smallest face to find (larger is faster on big photos)")
    detect.add_argument("--json", action="store_true", help="print JSON")

    models = commands.add_parser("models", help="list, verify, import and download models")
    actions = models.add_subparsers(dest="action", parser_class=_Parser, required=True)
    actions.add_parser("list", help="every known model and whether it is installed")
    info = actions.add_parser("info", help="one model's details")
    info.add_argument("name")
    actions.add_parser("verify", help="check every present model file's sha256")
    importer = actions.add_parser("import", help="add your own ONNX model")
    importer.add_argument("file", type=Path)
    importer.add_argument("--name", default=None)
    download = actions.add_parser("download", help="fetch a listed model (resumable, verified)")
    download.add_argument("name")

    commands.add_parser("gui", help="open the desktop app")
    for name, module, summary in _PLUGGED_COMMANDS:
        plugged = commands.add_parser(name, help=summary)
        _plugged_module(module).add_arguments(plugged)
    return parser


# Commands whose code lives in their own engine module, each with
# ``add_arguments(parser)`` and ``run(args, env) -> int``; imported only when listed here.
_PLUGGED_COMMANDS: list[tuple[str, str, str]] = [
    ("self-test", "engine.selftest", "check the installation: models, detection, restoration, saving"),
    ("bench", "engine.bench", "measure speed and memory on this machine"),
    ("quantize", "engine.quantize", "make INT8 and FP16 variants of a restorer, calibrated on your faces"),
]


def _plugged_module(module: str):  # type: ignore[no-untyped-def]
    import importlib

    return importlib.import_module(module)


def main(argv: Sequence[str] | None = None, env: Environment | None = None) -> ExitStatus:
    """Run one command. Never raises for expected failures; returns the exit status."""
    env = env or Environment(model_dirs=environment_model_dirs())
    args_list = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    try:
        args = parser.parse_args(args_list)
    except UsageError as error:
        print(f"error: {error}", file=env.stderr)
        return ExitStatus.USAGE
    except SystemExit as exit_:  # --help
        return ExitStatus(exit_.code or 0) if isinstance(exit_.code, int) else ExitStatus.OK
    try:
        if args.command in (None, "gui"):
            return _gui(env)
        if args.command == "enhance":
            return _enhance(args, env)
        if args.command == "detect":
            return _detect(args, env)
        if args.command == "models":
            return _models(args, env)
        for name, module, _ in _PLUGGED_COMMANDS:
            if args.command == name:
                return ExitStatus(_plugged_module(module).run(args, env))
        raise UsageError(f"unknown command {args.command}")
    except KeyboardInterrupt:
        print("\ninterrupted", file=env.stderr)
        return ExitStatus.INTERRUPTED
    except BrokenPipeError:
        # The reader went away (`restora detect --json | head`): nothing left to tell anyone.
        return ExitStatus.ERROR
    except (UsageError, ValueError, InputError, OutputError, ModelError) as error:
        if args.verbose:
            traceback.print_exc(file=env.stderr)
        print(f"error: {error}", file=env.stderr)
        return ExitStatus.USAGE
    except RestoraError as error:
        if args.verbose:
            traceback.print_exc(file=env.stderr)
        print(f"error: {error}", file=env.stderr)
        return ExitStatus.ERROR
    except Exception as error:  # a bug: one line for the user, the traceback with --verbose
        if args.verbose:
            traceback.print_exc(file=env.stderr)
        print(f"error: unexpected failure: {describe_error(error)} (run with --verbose for details)",
              file=env.stderr)
        return ExitStatus.ERROR


def run() -> None:
    """Console-script entry point."""
    status = int(main())
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        # Python would report the closed pipe again while flushing at exit (its docs' recipe).
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    sys.exit(status)


# -- enhance -----------------------------------------------------------------------------------


def _enhance(args: argparse.Namespace, env: Environment) -> ExitStatus:
    store = env.store()
    settings_kwargs: dict[str, object] = {
        "detector": args.detector, "precision": args.precision, "provider": args.provider,
        "fidelity": args.fidelity, "batch_size": args.batch_size, "min_face": args.min_face,
        "only_largest": args.only_largest, "aligned": args.aligned, "upscale": args.upscale,
        "color_correction": args.color_correction,
    }
    if args.model:
        settings_kwargs["model"] = args.model
    settings = EnhanceSettings(**settings_kwargs)  # type: ignore[arg-type]
    options = BatchOptions(
        output_dir=args.output, recursive=args.recursive, format=args.format, quality=args.quality,
        suffix=args.suffix, skip_existing=args.skip_existing, workers=args.workers,
        max_pixels=args.max_pixels,
    )
    if args.ray is not None:
        return _enhance_on_ray(args, env, settings, options)
    if args.ray_workers is not None:
        raise UsageError("--ray-workers needs --ray")
    items = collect_inputs(args.inputs, recursive=args.recursive)
    # Output problems are usage errors found before the models load (run_batch checks again).
    plan_outputs(items, options)
    check_output_dir(options.output_dir)
    enhancer = Enhancer(settings, store)  # model errors surface here, before any photo
    for note in enhancer.notes:
        print(f"note: {note}", file=env.stderr)
    cancel = CancelToken()
    return _run_reported(
        args, env, lambda progress: run_batch(items, enhancer, options, progress=progress, cancel=cancel),
        total=len(items),
    )


def _enhance_on_ray(
    args: argparse.Namespace, env: Environment, settings: EnhanceSettings, options: BatchOptions
) -> ExitStatus:
    from engine.cluster import ClusterOptions, ClusterUnavailableError, run_on_ray

    lines = None
    if args.json is not None:
        lines = args.json.with_name(args.json.name + "l") if args.json.suffix == ".json" else Path(
            f"{args.json}.jsonl")
    cluster = ClusterOptions(address=args.ray, workers=args.ray_workers, report_lines=lines)
    try:
        return _run_reported(args, env, lambda progress: run_on_ray(
            args.inputs, settings, options, cluster, model_dirs=env.model_dirs, progress=progress))
    except ClusterUnavailableError as error:
        raise UsageError(str(error)) from None


def _run_reported(
    args: argparse.Namespace,
    env: Environment,
    run: Callable[[Callable[[BatchProgress], None]], BatchReport],
    total: int | None = None,
) -> ExitStatus:
    """Run a batch (local or on a cluster) with progress output, then write the report and summary.

    ``total`` shows the bar's length from the start; without it the first progress event sets it.
    """
    reporter = _ProgressReporter(env, quiet=args.quiet, verbose=args.verbose, total=total)
    started = time.perf_counter()
    try:
        with reporter:
            report = run(reporter.update)
    except (KeyboardInterrupt, CancelledError):
        print(f"\ninterrupted after {time.perf_counter() - started:.1f} s; finished outputs are complete, "
              "rerun with --skip-existing to resume", file=env.stderr)
        return ExitStatus.INTERRUPTED
    if args.json is not None:
        report.write_json(args.json, verbose=args.verbose)
    _print_summary(report, env, quiet=args.quiet)
    return ExitStatus.ERROR if report.failed else ExitStatus.OK


class _ProgressReporter:
    """A rich progress bar on a terminal; plain lines otherwise (logs, CI); nothing with --quiet."""

    def __init__(self, env: Environment, *, quiet: bool, verbose: bool = False, total: int | None = None) -> None:
        self.env = env
        self.quiet = quiet
        self.total = total
        self.verbose = verbose
        self._bar: Progress | None = None
        self._task: TaskID | None = None

    def __enter__(self) -> _ProgressReporter:
        if not self.quiet and self.env.stderr_isatty:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn

            self._bar = Progress(
                TextColumn("[bold]restoring"), BarColumn(), MofNCompleteColumn(),
                TextColumn("{task.fields[rate]}"), TimeRemainingColumn(),
                console=Console(file=self.env.stderr), transient=False,
            )
            self._bar.start()
            self._task = self._bar.add_task("restoring", total=self.total, rate="")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()

    def update(self, progress: BatchProgress) -> None:
        last = progress.last
        # With --verbose a failed photo's full traceback is shown, even with --quiet.
        details = last.details if self.verbose and last.status == "error" else None
        if self.quiet:
            if details:
                print(f"error: {last.input}: {last.error}\n{details}", file=self.env.stderr, flush=True)
            return
        rate = progress.faces / progress.elapsed if progress.elapsed > 0 else 0.0
        if self._bar is not None and self._task is not None:
            self._bar.update(self._task, completed=progress.done, total=progress.total, rate=f"{rate:.1f} faces/s")
            if last.status == "error":
                from rich.markup import escape

                self._bar.console.print(f"[red]error[/red] {escape(f'{last.input}: {last.error}')}",
                                        highlight=False)
                if details:
                    self._bar.console.print(details, markup=False, highlight=False)
            return
        detail = {
            "ok": f"{last.faces} face{'s' if last.faces != 1 else ''}, {last.seconds:.2f} s",
            "error": f"error: {last.error}",
        }.get(last.status, last.status)
        # One write per line (print() writes the text and its newline apart), so that nothing else
        # on stderr, such as a library's warning, lands inside it.
        line = f"[{progress.done}/{progress.total}] {last.input}: {detail}\n"
        if details:
            line += details if details.endswith("\n") else details + "\n"
        self.env.stderr.write(line)
        self.env.stderr.flush()


def _print_summary(report: BatchReport, env: Environment, *, quiet: bool) -> None:
    if quiet and not report.failed:
        return
    rate = report.faces / report.seconds if report.seconds > 0 else 0.0
    print(
        f"{report.count('ok')} restored, {report.count('skipped')} skipped, {report.failed} failed; "
        f"{report.faces} faces in {report.seconds:.1f} s ({rate:.1f} faces/s, {report.precision}, "
        f"{report.provider})",
        file=env.stderr,
    )


# -- detect ------------------------------------------------------------------------------------


def _detect(args: argparse.Namespace, env: Environment) -> ExitStatus:
    store = env.store()
    detector = load_detector(store, store.get(args.detector), args.provider)
    results: list[dict[str, object]] = []
    status = ExitStatus.OK
    for path in args.images:
        try:
            image = load_image(path)
            found = detect_faces(detector, image, EnhanceSettings().detect_max_side, args.min_face)
        except RestoraError as error:
            print(f"error: {path}: {error}", file=env.stderr)
            results.append({"input": str(path), "error": str(error), "faces": []})
            status = ExitStatus.ERROR
            continue
        results.append({"input": str(path), "width": image.width, "height": image.height,
                        "faces": [face.to_dict() for face in found]})
    if args.json:
        print(json.dumps({"version": 1, "detector": args.detector, "images": results}, indent=2), file=env.stdout)
        return status
    for result in results:
        faces = result["faces"]
        assert isinstance(faces, list)
        print(f"{result['input']}: {len(faces)} face{'s' if len(faces) != 1 else ''}", file=env.stdout)
        for face in faces:
            box = ", ".join(f"{v:.1f}" for v in face["box"])
            marks = " ".join(f"({x:.1f},{y:.1f})" for x, y in face["landmarks"])
            print(f"  box [{box}] score {face['score']:.3f} landmarks {marks}", file=env.stdout)
    return status


# -- models ------------------------------------------------------------------------------------


def _models(args: argparse.Namespace, env: Environment) -> ExitStatus:
    from engine import models as modellib

    store = env.store()
    if args.action == "list":
        rows = [("NAME", "FAMILY", "ARCH", "PRECISIONS", "INSTALLED", "LICENCE")]
        for name in store.names():
            precisions = store.precisions(name)
            states = []
            for precision in precisions:
                status = store.status(store.get(name, precision))
                states.append(f"{precision}:{status.label}")
            spec = store.get(name)
            rows.append((name, spec.family, spec.arch, ",".join(precisions), " ".join(states),
                         _short(spec.license, 40)))
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        for row in rows:
            print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip(),
                  file=env.stdout)
        return ExitStatus.OK
    if args.action == "info":
        if not store.precisions(args.name):
            store.get(args.name)  # raises ModelNotFoundError listing the known names
        for precision in store.precisions(args.name):
            spec = store.get(args.name, precision)
            status = store.status(spec)
            print(f"{spec.name} ({spec.precision}): {spec.family}, arch {spec.arch}", file=env.stdout)
            if spec.description:
                print(f"  {spec.description}", file=env.stdout)
            for model_file in spec.files:
                where = store.locate(spec, model_file.role)
                print(f"  {model_file.role}: {model_file.file} sha256 {model_file.sha256 or 'unknown'}",
                      file=env.stdout)
                print(f"    {'at ' + str(where) if where else 'not installed'}"
                      f"{'; url ' + model_file.url if model_file.url else ''}", file=env.stdout)
            smaller = f" (small faces: {', '.join(map(str, spec.crop_sizes))})" if spec.crop_sizes else ""
            print(f"  status: {status.label}; size {spec.size}{smaller}; template {spec.template}; "
                  f"range {list(spec.range)}; licence: {spec.license}; source: {spec.source}", file=env.stdout)
        return ExitStatus.OK
    if args.action == "verify":
        bad = 0
        for spec in store.specs:
            status = store.status(spec)
            if not status.present:
                continue
            print(f"{spec.key}: {status.label}", file=env.stdout)
            if not status.verified:
                bad += 1
        return ExitStatus.ERROR if bad else ExitStatus.OK
    if args.action == "import":
        spec = modellib.import_model(store, args.file, args.name)
        print(f"imported {args.file} as {spec.name} ({spec.family}, {spec.arch})", file=env.stdout)
        return ExitStatus.OK
    if args.action == "download":
        path = modellib.download(store, args.name)
        print(f"downloaded {args.name} to {path}", file=env.stdout)
        return ExitStatus.OK
    raise UsageError(f"unknown models action {args.action}")


def _short(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


# -- gui ---------------------------------------------------------------------------------------


def _gui(env: Environment) -> ExitStatus:
    try:
        from gui.app import main as gui_main
    except ImportError as error:
        raise UsageError(
            f"the desktop app is not available ({error}); install it with `pip install restora[gui]`, "
            "or use `restora enhance`"
        ) from None
    return ExitStatus(gui_main())
