"""FP16 and static INT8 variants of an ONNX restorer, calibrated on aligned faces, and how far each
one's restored faces are from FP32's (``restora quantize MODEL --calib DIR [--out FILE]``).

- INT8 is onnxruntime's static QDQ quantization: per-channel QInt8 weights, QUInt8 activations,
  MinMax ranges over the calibration faces. That is the only INT8 flavour that ran faster than FP32
  on the CPUs measured (issue 8: QInt8 activations and dynamic INT8 were slower than FP32).
- The nodes that read the image input or write the graph's output stay float (``float_nodes``). For
  restora-lite that is the full-resolution head conv and the final skip addition: a sweep that left
  one conv at a time in float found the head the only one that matters (all-INT8 mild ΔPSNR −0.27 dB,
  head in float +0.24, FP32 +0.30), and with the skip addition in float the input is never quantized,
  so onnxruntime cannot fold the float head into a 3-input-channel QLinearConv (14 against 4.5 ms).
  Leaving the first and last layers in float is the usual practice for other models too.
- Quantized convs with fewer than 16 outputs (a restorer's RGB tail) are widened to 16 with zero
  weights and sliced back (``pad_narrow_convs``): onnxruntime's INT8 kernels work on blocks of 16
  output channels, and restora-lite's INT8 ran 1.2x faster so.
- FP16 is onnxruntime's float16 converter with float32 I/O kept (``keep_io_types``), for GPU
  providers; on a CPU it is no faster than FP32.
- Each variant carries its conventions as ``restora.*`` metadata (``models.conventions_metadata``),
  so ``restora models import`` knows it without the manifest entry.

onnx and onnxruntime's quantization tools are imported only when a variant is made: the packaged
app leaves them out (build.spec), and there ``quantize_restorer`` raises a ModelError saying so.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from engine.batch import InputError, collect_inputs
from engine.errors import ImageError, ModelError, ModelFormatError, OutputError
from engine.faces import align_face, resize_aligned, select_faces
from engine.imageio import atomic_write_bytes, load_image, same_file, to_uint8
from engine.models import (
    USER_MANIFEST,
    ModelSpec,
    ModelStore,
    conventions_metadata,
    import_model,
    spec_for_file,
)
from engine.pipeline import DEFAULT_DETECTOR, EnhanceSettings, detect_faces, load_detector
from engine.restorers.onnx_restorer import OnnxRestorer
from engine.runtime import create_session

if TYPE_CHECKING:
    import onnx

    from engine.cli import Environment

DEFAULT_FACES = 32
VARIANTS = ("int8", "fp16")
# Ops that mean a graph is already quantized: its FP32 file is what must be given.
_QUANTIZED_OPS = frozenset({
    "QuantizeLinear", "DequantizeLinear", "QLinearConv", "QLinearMatMul", "ConvInteger",
    "MatMulInteger", "DynamicQuantizeLinear", "QLinearAdd",
})

Progress = Callable[[str], None]
# A photo's faces, aligned at a size: (pixels, size) -> crops.
FaceFinder = Callable[[np.ndarray, int], list[np.ndarray]]


@dataclass(frozen=True)
class CalibrationFaces:
    """Aligned faces at the restorer's size, and the files that could not be used (with why)."""

    crops: np.ndarray  # (N, S, S, 3) uint8 RGB
    used: tuple[Path, ...]
    skipped: tuple[tuple[Path, str], ...]


@dataclass(frozen=True)
class VariantResult:
    """One precision's file and how its restored calibration faces compare with FP32's."""

    precision: str
    path: Path
    megabytes: float
    psnr_db: float  # against FP32's output over every face; inf when identical
    mean_abs_diff: float  # in 8-bit levels
    max_abs_diff: int
    ms_per_face: float  # median at batch 1 on this machine
    registered_as: str | None = None  # "name/precision" in the user model folder, when registered


@dataclass(frozen=True)
class QuantizeReport:
    """What ``restora quantize`` made and measured: printed by ``lines``, saved by ``to_dict``."""

    model: str  # the source model's name
    source: Path
    size: int
    faces: int
    skipped: tuple[tuple[Path, str], ...]
    results: tuple[VariantResult, ...]  # FP32 first

    def lines(self) -> list[str]:
        fp32 = self.results[0]
        skipped = len(self.skipped)
        out = [f"{self.model}: {self.faces} calibration faces at {self.size} px"
               + (f" ({skipped} file{'s' if skipped > 1 else ''} skipped)" if skipped else "")]
        out += [f"  skipped: {why}" for _path, why in self.skipped]
        out.append(f"  {'precision':9} {'MB':>8} {'PSNR vs FP32':>13} {'mean |d|':>9} {'max |d|':>8} "
                   f"{'ms/face':>8} {'speed':>6}  file")
        for r in self.results:
            psnr = "-" if r.precision == "fp32" else "identical" if math.isinf(r.psnr_db) else f"{r.psnr_db:.2f} dB"
            speed = fp32.ms_per_face / r.ms_per_face if r.ms_per_face > 0 else float("nan")
            out.append(f"  {r.precision:9} {r.megabytes:8.2f} {psnr:>13} {r.mean_abs_diff:9.3f} "
                       f"{r.max_abs_diff:8d} {r.ms_per_face:8.1f} {speed:5.2f}x  {r.path}")
        registered = [r.registered_as for r in self.results if r.registered_as]
        if registered:
            name = registered[0].split("/")[0]
            out.append(f"  registered {', '.join(registered)}: restora enhance --model {name} "
                       "--precision int8 (or auto)")
        return out

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["source"] = str(self.source)
        data["skipped"] = [{"file": str(p), "error": why} for p, why in self.skipped]
        for result in data["results"]:
            result["path"] = str(result["path"])
            if math.isinf(result["psnr_db"]):
                result["psnr_db"] = None  # JSON has no infinity: identical outputs
        return data


# -- the source model --------------------------------------------------------------------------


def resolve_source(store: ModelStore, model: str) -> tuple[ModelSpec, Path]:
    """The FP32 restorer named ``model`` (a listed name, or an ONNX file's path) and its file.
    Needs the onnx package (``quantize_restorer`` checks for it first)."""
    path = Path(model)
    if path.suffix.lower() == ".onnx" or path.is_file():
        try:
            spec = spec_for_file(store, path)
        except ModelFormatError:
            _check_float32(path)  # an INT8 or FP16 file is told so, rather than why its I/O looks odd
            raise
    else:
        spec = store.get(model)
        if spec.family != "restorer":
            raise ModelError(f"{model} is a {spec.family} model; restora quantize makes variants of restorers")
        if "fp32" in store.precisions(model):
            spec = store.get(model, "fp32")
        path = store.require(spec)["model"]
    if spec.family != "restorer":
        raise ModelError(f"{model} is a {spec.family} model; restora quantize makes variants of restorers")
    if spec.precision != "fp32":
        raise ModelError(f"{model} is the {spec.precision.upper()} variant of {spec.name}; "
                         "quantize its FP32 file")
    _check_float32(path)
    return spec, path


def _check_float32(path: Path) -> None:
    import onnx
    from onnx import TensorProto

    graph = onnx.load(str(path), load_external_data=False).graph
    quantized = sorted({n.op_type for n in graph.node if n.op_type in _QUANTIZED_OPS})
    if quantized:
        raise ModelError(f"{path.name} is already quantized ({', '.join(quantized)}); quantize its FP32 file")
    if any(t.data_type == TensorProto.FLOAT16 for t in graph.initializer):
        raise ModelError(f"{path.name} has float16 weights; quantize its FP32 file")


# -- calibration faces -------------------------------------------------------------------------


def load_calibration_faces(folder: Path, size: int, limit: int = DEFAULT_FACES,
                           photos: FaceFinder | None = None) -> CalibrationFaces:
    """Up to ``limit`` faces at ``size`` px from the images in ``folder`` (evenly spread over them,
    sorted by name). Each image is an aligned face crop, resized as ``restora enhance --aligned``
    would; with ``photos``, a whole photo whose faces it finds and aligns (the largest first, every
    one counting towards ``limit``). An image that cannot be read, or a photo without a face, is
    skipped, reported and replaced by another; InputError when no face is left."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"--calib {folder}: not a folder")
    items = collect_inputs([folder])
    if not items:
        raise InputError(f"--calib {folder}: no images (JPEG, PNG, WebP, TIFF, BMP) in it")
    spread = dict.fromkeys(np.linspace(0, len(items) - 1, min(limit, len(items))).round().astype(int).tolist())
    order = [*spread, *(i for i in range(len(items)) if i not in spread)]
    crops: list[np.ndarray] = []
    used: list[Path] = []
    skipped: list[tuple[Path, str]] = []
    for item in (items[i] for i in order):
        if len(crops) >= limit:
            break
        try:
            pixels = to_uint8(load_image(item.path).pixels)
        except ImageError as error:
            skipped.append((item.path, str(error)))
            continue
        found = [resize_aligned(pixels, size)] if photos is None else photos(pixels, size)
        if not found:
            skipped.append((item.path, f"{item.path}: no face found"))
            continue
        crops.extend(found[: limit - len(crops)])
        used.append(item.path)
    if not crops:
        found_none = "no face was found in" if photos is not None else "none could be read of"
        raise InputError(f"--calib {folder}: {found_none} its {len(items)} images")
    return CalibrationFaces(np.stack(crops), tuple(used), tuple(skipped))


def face_finder(store: ModelStore, template: str, provider: str = "auto", threads: int | None = None) -> FaceFinder:
    """Finds a photo's faces with the default detector (as ``restora enhance`` does, on a copy at most
    640 px across) and aligns each to ``template`` at the size asked for, largest first."""
    detector = load_detector(store, store.get(DEFAULT_DETECTOR), provider, threads)
    max_side = EnhanceSettings().detect_max_side

    def find(pixels: np.ndarray, size: int) -> list[np.ndarray]:
        faces = select_faces(detect_faces(detector, pixels, max_side))
        return [align_face(pixels, face, size, template).crop for face in faces]

    return find


def _batch_of(restorer: OnnxRestorer, crop: np.ndarray) -> np.ndarray:
    return np.repeat(crop[None], restorer.fixed_batch or 1, axis=0)


# -- making the variants -----------------------------------------------------------------------


def float_nodes(graph: onnx.GraphProto) -> list[str]:
    """The nodes that read a graph input or write a graph output: left in float (module docstring)."""
    inputs = {i.name for i in graph.input}
    outputs = {o.name for o in graph.output}
    return [n.name for n in graph.node if inputs & set(n.input) or outputs & set(n.output)]


# onnxruntime's INT8 convolution kernels work on blocks of output channels: restora-lite's 3-output
# RGB tail conv at full resolution took 22.9 of its 69.5 ms as a plain INT8 conv, 9.8 padded to 16
# outputs (kernel times, one thread, ORT 1.32). Every restorer ends in such a conv.
CONV_OUTPUT_BLOCK = 16


def pad_narrow_convs(model: onnx.ModelProto, keep: Iterable[str] = (), channels: int = CONV_OUTPUT_BLOCK) -> int:
    """Widen each Conv with fewer than ``channels`` outputs (constant weights, one group) to
    ``channels`` with zero weights, and Slice its real outputs back out: the same function, quantized
    into a faster kernel. ``keep``: nodes left as they are (those that stay float: padding made FP32
    5 % slower). Returns how many were widened. The graph is edited in place."""
    from onnx import helper, numpy_helper

    graph = model.graph
    weights = {init.name: init for init in graph.initializer}
    kept = set(keep)
    nodes: list[onnx.NodeProto] = []
    widened = 0
    for node in graph.node:
        nodes.append(node)
        groups = next((a.i for a in node.attribute if a.name == "group"), 1)
        if node.op_type != "Conv" or node.name in kept or groups != 1 or node.input[1] not in weights:
            continue
        weight = numpy_helper.to_array(weights[node.input[1]])
        outputs = weight.shape[0]
        if outputs >= channels:
            continue
        wide = np.zeros((channels, *weight.shape[1:]), weight.dtype)
        wide[:outputs] = weight
        prefix = f"{node.name or node.output[0]}_padded"
        graph.initializer.append(numpy_helper.from_array(wide, f"{prefix}_weight"))
        node.input[1] = f"{prefix}_weight"
        if len(node.input) > 2 and node.input[2] in weights:
            bias = numpy_helper.to_array(weights[node.input[2]])
            graph.initializer.append(numpy_helper.from_array(np.pad(bias, (0, channels - outputs)), f"{prefix}_bias"))
            node.input[2] = f"{prefix}_bias"
        for name, value in (("starts", 0), ("ends", outputs), ("axes", 1)):
            graph.initializer.append(numpy_helper.from_array(np.array([value], np.int64), f"{prefix}_{name}"))
        real = node.output[0]
        node.output[0] = f"{prefix}_out"
        nodes.append(helper.make_node(
            "Slice", [node.output[0], f"{prefix}_starts", f"{prefix}_ends", f"{prefix}_axes"], [real],
            name=f"{prefix}_slice",
        ))
        widened += 1
    if widened:
        del graph.node[:]
        graph.node.extend(nodes)
    return widened


class _FeedReader:
    """onnxruntime's CalibrationDataReader protocol over session feeds."""

    def __init__(self, feeds: Iterable[dict[str, np.ndarray]]) -> None:
        self._feeds: Iterator[dict[str, np.ndarray]] = iter(feeds)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._feeds, None)


def quantize_int8(source: Path, target: Path, feeds: Iterable[dict[str, np.ndarray]],
                  metadata: dict[str, str] | None = None) -> None:
    """Static QDQ INT8 of the FP32 graph ``source``, calibrated on ``feeds``, written to ``target``
    whole or not at all."""
    import onnx
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory(prefix=".restora-quantize-", dir=target.parent) as tmp:
        pre = Path(tmp) / "pre.onnx"
        quant_pre_process(str(source), str(pre), skip_symbolic_shape=True)
        model = onnx.load(str(pre))
        excluded = float_nodes(model.graph)
        if pad_narrow_convs(model, keep=excluded):
            onnx.save(model, str(pre))
        quantized = Path(tmp) / "int8.onnx"
        quantize_static(
            str(pre), str(quantized), _FeedReader(feeds),
            quant_format=QuantFormat.QDQ, per_channel=True,
            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
            nodes_to_exclude=excluded,
            # No CalibMaxIntermediateOutputs: in ORT 1.32 it drops (does not merge) each full chunk's
            # ranges; MinMax keeps only reduced scalars per face anyway, so memory stays small.
        )
        if metadata:
            model = onnx.load(str(quantized))
            _set_metadata(model, metadata)
            onnx.save(model, str(quantized))
        os.replace(quantized, target)


def convert_fp16(source: Path, target: Path, metadata: dict[str, str] | None = None) -> None:
    """The FP32 graph ``source`` with float16 weights and arithmetic, float32 I/O, to ``target``."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = convert_float_to_float16(onnx.load(str(source)), keep_io_types=True)
    if metadata:
        _set_metadata(model, metadata)
    with tempfile.TemporaryDirectory(prefix=".restora-quantize-", dir=target.parent) as tmp:
        part = Path(tmp) / "fp16.onnx"
        onnx.save(model, str(part))
        os.replace(part, target)


def _set_metadata(model: onnx.ModelProto, metadata: dict[str, str]) -> None:
    kept = [p for p in model.metadata_props if p.key not in metadata]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    for key, value in metadata.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value


# -- comparing them ----------------------------------------------------------------------------


def _restore_all(restorer: OnnxRestorer, crops: np.ndarray) -> tuple[np.ndarray, float]:
    """Every crop restored at batch 1 (after one warm-up call), and the median ms per face."""
    restorer.restore(_batch_of(restorer, crops[0]))
    outputs, times = [], []
    for crop in crops:
        start = time.perf_counter()
        outputs.append(restorer.restore(_batch_of(restorer, crop))[0])
        times.append((time.perf_counter() - start) * 1000.0)
    return np.stack(outputs), statistics.median(times)


def compare_outputs(reference: np.ndarray, other: np.ndarray) -> tuple[float, float, int]:
    """PSNR (dB, over all faces), mean and max absolute difference in 8-bit levels."""
    diff = reference.astype(np.int16) - other.astype(np.int16)
    mse = float(np.mean(diff.astype(np.float64) ** 2))
    psnr = math.inf if mse == 0 else 10.0 * math.log10(255.0**2 / mse)
    return psnr, float(np.mean(np.abs(diff))), int(np.abs(diff).max())


# -- the command -------------------------------------------------------------------------------


def fp16_path_for(int8_path: Path) -> Path:
    """Where the FP16 file goes beside ``--out FILE``: ``int8`` in its name becomes ``fp16``."""
    name = int8_path.name
    if "int8" in name:
        return int8_path.with_name(name.replace("int8", "fp16"))
    return int8_path.with_name(f"{int8_path.stem}-fp16{int8_path.suffix or '.onnx'}")


def registered_name(store: ModelStore, spec: ModelSpec, requested: str | None) -> str:
    """The name the variants are registered under: ``requested``, else the model's own name unless
    a shipped or listed manifest already has an INT8 or FP16 of it (then ``<name>-custom``)."""
    if requested:
        return requested
    user_manifest = store.user_dir / USER_MANIFEST
    taken = {
        s.precision for s in store.specs
        if s.name == spec.name and Path(s.manifest) != user_manifest and s.precision in VARIANTS
    }
    return f"{spec.name}-custom" if taken else spec.name


def quantize_restorer(
    store: ModelStore,
    model: str,
    calib: Path,
    out: Path | None = None,
    *,
    name: str | None = None,
    limit: int = DEFAULT_FACES,
    photos: bool = False,
    provider: str = "auto",
    threads: int | None = None,
    progress: Progress | None = None,
) -> QuantizeReport:
    """Make INT8 and FP16 variants of ``model`` and compare them with it on the calibration faces
    (``calib``'s aligned face crops, or with ``photos`` the faces found in its photos).

    With ``out``, INT8 is written there and FP16 beside it (``fp16_path_for``); without, both are
    registered in the user model folder (``registered_name``), so ``restora enhance --model NAME
    --precision int8`` uses them. Never writes over the source. Raises ModelError (unknown or already
    quantized model, tools missing), InputError (calibration folder), OutputError (unwritable).
    """
    say = progress or (lambda _message: None)
    try:
        import onnx  # noqa: F401  (both present: checked before any work)
        import onnxruntime.quantization  # noqa: F401
    except ImportError as error:
        raise ModelError(
            f"restora quantize needs the onnx package and onnxruntime's quantization tools ({error.name} "
            "is missing); the packaged app leaves them out: run it from a pip install of restora"
        ) from None
    spec, source = resolve_source(store, model)

    session = create_session(source, provider, threads, shapes_vary=bool(spec.crop_sizes))
    fp32 = OnnxRestorer(spec, session)
    say(f"calibration faces from {calib}")
    finder = face_finder(store, spec.template or "ffhq", provider, threads) if photos else None
    faces = load_calibration_faces(calib, fp32.size, limit, finder)
    # Made one at a time as the calibrator asks: 32 float inputs of a 1024 px model are 400 MB.
    feeds = (fp32.feeds(_batch_of(fp32, crop)) for crop in faces.crops)

    if out is not None:
        targets = {"int8": Path(out), "fp16": fp16_path_for(Path(out))}
        for target in targets.values():
            if target.exists() and same_file(target, source):
                raise InputError(f"--out {target} is the model being quantized; choose another file")
        try:
            Path(out).parent.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise OutputError(f"cannot write {out}: {error.strerror or error}") from error
        work: tempfile.TemporaryDirectory[str] | None = None
        variant_name = spec.name
    else:
        # Made in the system's temporary folder, then imported (copied whole) into the user model
        # folder, so a killed run leaves nothing half-made there.
        work = tempfile.TemporaryDirectory(prefix="restora-quantize-")
        variant_name = registered_name(store, spec, name)
        targets = {p: Path(work.name) / f"{variant_name}-{p}.onnx" for p in VARIANTS}
    try:
        say(f"INT8: calibrating on {len(faces.crops)} faces")
        _make_variants(spec, source, targets, feeds, f"{len(faces.crops)} faces from {Path(calib).name}")
        say("comparing with FP32")
        results = _compare(fp32, source, targets, faces.crops, provider, threads)
        if work is not None:
            results = _register(store, spec, results, variant_name)
    finally:
        if work is not None:
            work.cleanup()
    return QuantizeReport(spec.name, source, fp32.size, len(faces.used), faces.skipped, tuple(results))


def _make_variants(spec: ModelSpec, source: Path, targets: dict[str, Path],
                   feeds: Iterable[dict[str, np.ndarray]], calibrated_on: str) -> None:
    made_from = f"of {spec.name}, made by restora quantize"
    try:
        quantize_int8(source, targets["int8"], feeds,
                      conventions_metadata(spec, "int8", f"INT8 {made_from} (calibrated on {calibrated_on})"))
        convert_fp16(source, targets["fp16"], conventions_metadata(spec, "fp16", f"FP16 {made_from}"))
    except OSError as error:  # an unwritable or full output folder (onnx raises it untyped)
        where = error.filename or targets["int8"].parent
        raise OutputError(f"cannot write the variants to {where}: {error.strerror or error}") from error


def _compare(fp32: OnnxRestorer, source: Path, targets: dict[str, Path], crops: np.ndarray, provider: str,
             threads: int | None) -> list[VariantResult]:
    """FP32 and each variant restore every face; the variants' distance from FP32, and each speed."""
    reference, fp32_ms = _restore_all(fp32, crops)
    results = [VariantResult("fp32", source, source.stat().st_size / 1e6, math.inf, 0.0, 0, fp32_ms)]
    for precision in VARIANTS:
        session = create_session(targets[precision], provider, threads, shapes_vary=bool(fp32.spec.crop_sizes))
        variant = OnnxRestorer(replace(fp32.spec, precision=precision), session)
        restored, ms = _restore_all(variant, crops)
        psnr, mean_abs, max_abs = compare_outputs(reference, restored)
        results.append(VariantResult(precision, targets[precision], targets[precision].stat().st_size / 1e6,
                                     psnr, mean_abs, max_abs, ms))
    return results


def _register(store: ModelStore, spec: ModelSpec, results: list[VariantResult], name: str) -> list[VariantResult]:
    """Import the variants (and, for a file no manifest lists, its FP32 source) under ``name``."""
    registered = [results[0]]
    if not spec.manifest:  # read from the graph, listed nowhere: the FP32 joins its variants
        imported = import_model(store, results[0].path, name)
        registered[0] = replace(results[0], registered_as=imported.key)
    for result in results[1:]:
        imported = import_model(store.reload(), result.path, name)
        if imported.precision != result.precision:
            raise ModelFormatError(f"{result.path.name} was imported as {imported.key}, not {result.precision}")
        location = store.reload().locate(imported)
        registered.append(replace(result, path=location or result.path, registered_as=imported.key))
    return registered


# -- command line ------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="a restorer's name (restora models list) or an FP32 ONNX file")
    parser.add_argument("--calib", type=Path, required=True, metavar="DIR",
                        help="a folder of aligned face crops (FFHQ-style, any size) to calibrate on")
    parser.add_argument("--photos", action="store_true",
                        help="DIR holds whole photos: find and align their faces with the default detector")
    parser.add_argument("--out", type=Path, default=None, metavar="FILE",
                        help="write INT8 here and FP16 beside it (default: register both in the user "
                             "model folder)")
    parser.add_argument("--name", default=None, help="the name to register the variants under")
    parser.add_argument("--faces", type=int, default=DEFAULT_FACES,
                        help=f"calibration faces to use, spread over DIR (default {DEFAULT_FACES})")
    parser.add_argument("--provider", default="auto",
                        choices=("auto", "cpu", "cuda", "directml", "coreml", "openvino"),
                        help="where to run the comparison")
    parser.add_argument("--threads", type=int, default=None, help="onnxruntime threads (default: all cores)")
    parser.add_argument("--json", type=Path, default=None, metavar="FILE", help="also write the report as JSON")


def run(args: argparse.Namespace, env: Environment) -> int:
    """Make the variants and print the comparison; errors reach ``cli.main`` as typed exceptions."""
    if args.faces < 1:
        raise InputError(f"--faces must be at least 1, got {args.faces}")
    if args.out is not None and args.name is not None:
        raise InputError("--name registers the variants in the user model folder; it does not go with --out")

    def progress(message: str) -> None:
        print(f"quantize: {message}", file=env.stderr, flush=True)

    report = quantize_restorer(env.store(), args.model, args.calib, args.out, name=args.name, limit=args.faces,
                               photos=args.photos, provider=args.provider, threads=args.threads, progress=progress)
    for line in report.lines():
        print(line, file=env.stdout)
    if args.json is not None:
        atomic_write_bytes(args.json, json.dumps(report.to_dict(), indent=2).encode("utf-8"))
    return 0
