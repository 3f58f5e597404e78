"""The model manifest: what models exist, where their files are, and whether they are intact.

- Every ``*.json`` in ``assets/models/`` (``ASSETS_DIR``) is a manifest ``{"version": 1, "models":
  [...]}`` listing shipped models and the public ones users bring (detectors and restorers), each
  with sha256, licence, source and, where there is one, a download URL. An entry is either the
  single-file form (``"file": ..., "sha256": ..., "url": ...``) or the multi-file form
  (``"files": [{"role", "file", "sha256", "url", "package"}]``) for models such as MTCNN
  (pnet/rnet/onet). Several entries may share a ``name`` with different ``precision``.
  Family extras (thresholds, companion models...) go in ``"options"``; unknown keys are errors.
- The user model folder (``platformdirs.user_data_path("restora")/"models"``, or
  ``$RESTORA_MODEL_DIR``) receives downloads and imports; imported models that are in no shipped
  manifest are listed in its ``user.json``.
- Files are looked up in order: the store's extra dirs (tests pass ``../shared/models``), the
  user model folder, ``ASSETS_DIR``, and, for a file with ``package``, that installed package's
  folder found with ``importlib.util.find_spec`` (never imported).
- ``sha256`` may be null for a public file no source pins: such a file is used and downloaded
  without verification (``ModelStatus`` reports it as not verified).
"""

from __future__ import annotations

import hashlib
import http.client
import importlib.util
import json
import os
import re
import shutil
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import platformdirs

from engine.errors import DownloadError, ModelError, ModelFormatError, ModelIntegrityError, ModelNotFoundError
from engine.imageio import atomic_write_bytes

FAMILIES = ("restorer", "detector", "landmarks")
PRECISIONS = ("fp32", "fp16", "int8")
CHANNEL_ORDERS = ("rgb", "bgr")
MANIFEST_VERSION = 1
USER_MANIFEST = "user.json"
MODEL_DIR_ENV = "RESTORA_MODEL_DIR"
CACHE_DIR_ENV = "RESTORA_CACHE_DIR"


def _assets_dir() -> Path:
    frozen_root = getattr(sys, "_MEIPASS", None)  # PyInstaller one-folder app
    if frozen_root is not None:
        return Path(frozen_root) / "assets" / "models"
    return Path(__file__).resolve().parents[1] / "assets" / "models"


ASSETS_DIR = _assets_dir()


def environment_model_dirs() -> tuple[Path, ...]:
    """Extra model folders from RESTORA_MODEL_PATH (os.pathsep-separated), searched first."""
    raw = os.environ.get("RESTORA_MODEL_PATH", "")
    return tuple(Path(part) for part in raw.split(os.pathsep) if part)


def user_model_dir() -> Path:
    """Where downloads and imports go: ``$RESTORA_MODEL_DIR`` or the platform's user data folder."""
    override = os.environ.get(MODEL_DIR_ENV)
    if override:
        return Path(override).expanduser()
    return platformdirs.user_data_path("restora") / "models"


def user_cache_dir() -> Path:
    """Files Restora can rebuild (rewritten detector graphs): ``$RESTORA_CACHE_DIR`` or the
    platform's user cache folder. Deleting it costs only the next start's rebuild."""
    override = os.environ.get(CACHE_DIR_ENV)
    if override:
        return Path(override).expanduser()
    return platformdirs.user_cache_path("restora")


@dataclass(frozen=True)
class ModelFile:
    """One file of a model."""

    role: str  # "model" for single-file models; "pnet"/"rnet"/"onet", "anchors"...
    file: str
    sha256: str | None  # lower-case hex; None where no public source pins it (not verified)
    url: str | None = None
    package: str | None = None  # an installed package whose folder holds the file


@dataclass(frozen=True)
class ModelSpec:
    """One manifest entry: a model in one precision, with its I/O conventions as data."""

    name: str
    family: str  # one of FAMILIES
    # restorer: restora|gfpgan|gpen|codeformer|restoreformer;
    # detector: mtcnn|yunet|scrfd|retinaface|blazeface|ultraface; landmarks: facemesh
    arch: str
    files: tuple[ModelFile, ...]
    precision: str = "fp32"
    size: int | None = None  # square input size of a restorer (or a fixed-size detector)
    # Smaller square crops a restorer with a dynamic input size also takes (restora-lite: 256, 384).
    # The pipeline restores a face that is small in the photo at one of them (faces.crop_size_for).
    crop_sizes: tuple[int, ...] = ()
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
    # family extras (thresholds, companion landmarks model...)
    options: Mapping[str, Any] = field(default_factory=dict)
    manifest: str = ""  # the manifest file this entry came from (for messages)

    @property
    def key(self) -> str:
        """``name/precision``, unique in a manifest."""
        return f"{self.name}/{self.precision}"

    def file(self, role: str = "model") -> ModelFile:
        for f in self.files:
            if f.role == role:
                return f
        raise KeyError(f"{self.name} has no file with role {role!r}")


@dataclass(frozen=True)
class FileStatus:
    """Whether one file of a model is on disk and matches its sha256."""

    role: str
    file: str
    path: Path | None
    present: bool
    verified: bool  # False when absent, mismatched, not checked, or no sha256 is known
    problem: str | None = None  # "sha256 mismatch", "no sha256 known", "not checked"


@dataclass(frozen=True)
class ModelStatus:
    """Per-file presence and verification of one model, for ``restora models list``."""

    spec: ModelSpec
    files: tuple[FileStatus, ...]

    @property
    def present(self) -> bool:
        return all(f.present for f in self.files)

    @property
    def verified(self) -> bool:
        return all(f.verified for f in self.files)

    @property
    def label(self) -> str:
        if not any(f.present for f in self.files):
            return "missing"
        if not self.present:
            return "incomplete"
        if any(f.problem == "sha256 mismatch" for f in self.files):
            return "corrupt"
        if self.verified:
            return "verified"
        return "unverified"


# -- manifest parsing ------------------------------------------------------------------------

_ENTRY_KEYS = frozenset(
    {
        "name",
        "family",
        "arch",
        "file",
        "sha256",
        "url",
        "package",
        "files",
        "precision",
        "size",
        "crop_sizes",
        "template",
        "input",
        "output",
        "range",
        "channel_order",
        "weight_input",
        "default_fidelity",
        "license",
        "source",
        "description",
        "options",
    }
)
_FILE_KEYS = frozenset({"role", "file", "sha256", "url", "package"})
_SHA256 = re.compile(r"^[0-9a-fA-F]{64}$")
_SAFE_FILE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")


def _fail(where: str, message: str) -> ModelFormatError:
    return ModelFormatError(f"{where}: {message}")


def _opt_str(entry: Mapping[str, Any], key: str, where: str) -> str | None:
    value = entry.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise _fail(where, f"{key!r} must be a non-empty string or null")
    return value


def _req_str(entry: Mapping[str, Any], key: str, where: str) -> str:
    if key not in entry:
        raise _fail(where, f"missing key {key!r}")
    value = _opt_str(entry, key, where)
    if value is None:
        raise _fail(where, f"{key!r} must be a non-empty string")
    return value


def _parse_file(entry: Mapping[str, Any], where: str, default_role: str | None) -> ModelFile:
    role = entry.get("role", default_role)
    if not isinstance(role, str) or not role:
        raise _fail(where, "each file needs a 'role'")
    name = _req_str(entry, "file", where)
    if not _SAFE_FILE.match(name) or ".." in name:
        raise _fail(where, f"file name {name!r} must be a plain file name (no folders)")
    if "sha256" not in entry:
        raise _fail(where, f"missing key 'sha256' for {name} (null if no source pins it)")
    sha = entry["sha256"]
    if sha is not None and (not isinstance(sha, str) or not _SHA256.match(sha)):
        raise _fail(where, f"sha256 of {name} must be 64 hex digits or null, got {sha!r}")
    url = _opt_str(entry, "url", where)
    if url is not None:
        try:
            scheme = urllib.parse.urlsplit(url).scheme
        except ValueError:  # "http://[" and other malformed netlocs (found by fuzz/fuzz_manifest.py)
            raise _fail(where, f"url of {name} is not a valid URL: {url!r}") from None
        if scheme not in ("http", "https"):
            raise _fail(where, f"url of {name} must be http(s), got {url!r}")
    return ModelFile(
        role=role,
        file=name,
        sha256=sha.lower() if isinstance(sha, str) else None,
        url=url,
        package=_opt_str(entry, "package", where),
    )


def _parse_entry(entry: Any, source: str, index: int) -> ModelSpec:
    where = f"{source}: entry {index}"
    if not isinstance(entry, dict):
        raise _fail(where, "must be an object")
    if isinstance(entry.get("name"), str):
        where = f"{source}: entry {index} ({entry['name']})"
    unknown = sorted(set(entry) - _ENTRY_KEYS)
    if unknown:
        raise _fail(where, f"unknown key(s) {', '.join(unknown)} (family extras go in 'options')")
    name = _req_str(entry, "name", where)
    family = _req_str(entry, "family", where)
    if family not in FAMILIES:
        raise _fail(where, f"unknown family {family!r}; expected one of {', '.join(FAMILIES)}")
    arch = _req_str(entry, "arch", where)

    if "files" in entry:
        if any(k in entry for k in ("file", "sha256", "url", "package")):
            raise _fail(where, "use either 'file'/'sha256'/'url' or 'files', not both")
        raw_files = entry["files"]
        if not isinstance(raw_files, list) or not raw_files:
            raise _fail(where, "'files' must be a non-empty list")
        files = []
        for i, raw in enumerate(raw_files):
            if not isinstance(raw, dict):
                raise _fail(where, f"files[{i}] must be an object")
            extra = sorted(set(raw) - _FILE_KEYS)
            if extra:
                raise _fail(where, f"files[{i}] has unknown key(s) {', '.join(extra)}")
            files.append(_parse_file(raw, f"{where} files[{i}]", None))
        roles = [f.role for f in files]
        if len(set(roles)) != len(roles):
            raise _fail(where, f"duplicate file roles {roles}")
    elif "file" in entry:
        files = [_parse_file(entry, where, "model")]
    else:
        raise _fail(where, "missing key 'file' (or 'files')")

    precision = entry.get("precision", "fp32")
    if precision not in PRECISIONS:
        raise _fail(where, f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    size = entry.get("size")
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size <= 0):
        raise _fail(where, f"size must be a positive integer or null, got {size!r}")
    crop_sizes = entry.get("crop_sizes", [])
    if not isinstance(crop_sizes, list) or not all(
        isinstance(c, int) and not isinstance(c, bool) and c > 0 for c in crop_sizes
    ):
        raise _fail(where, f"crop_sizes must be a list of positive integers, got {crop_sizes!r}")
    if crop_sizes and size is None:
        raise _fail(where, "crop_sizes need the model's 'size' (the largest crop)")
    if crop_sizes and size is not None and max(crop_sizes) > size:
        raise _fail(where, f"crop_sizes {crop_sizes} must not exceed the model's size ({size})")
    value_range = entry.get("range", [0.0, 1.0])
    if (
        not isinstance(value_range, list)
        or len(value_range) != 2
        or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in value_range)
        or not value_range[0] < value_range[1]
    ):
        raise _fail(where, f"range must be [low, high] with low < high, got {value_range!r}")
    channel_order = entry.get("channel_order", "rgb")
    if channel_order not in CHANNEL_ORDERS:
        raise _fail(where, f"channel_order must be 'rgb' or 'bgr', got {channel_order!r}")
    fidelity = entry.get("default_fidelity", 0.5)
    if isinstance(fidelity, bool) or not isinstance(fidelity, int | float) or not 0.0 <= fidelity <= 1.0:
        raise _fail(where, f"default_fidelity must be a number in [0, 1], got {fidelity!r}")
    options = entry.get("options", {})
    if not isinstance(options, dict):
        raise _fail(where, "'options' must be an object")
    texts = {}
    for key in ("license", "source", "description"):
        value = entry.get(key, "")
        if not isinstance(value, str):
            raise _fail(where, f"{key!r} must be a string")
        texts[key] = value
    return ModelSpec(
        name=name,
        family=family,
        arch=arch,
        files=tuple(files),
        precision=precision,
        size=size,
        crop_sizes=tuple(sorted(set(crop_sizes) - {size})),
        template=_opt_str(entry, "template", where),
        input=_opt_str(entry, "input", where),
        output=_opt_str(entry, "output", where),
        range=(float(value_range[0]), float(value_range[1])),
        channel_order=channel_order,
        weight_input=_opt_str(entry, "weight_input", where),
        default_fidelity=float(fidelity),
        license=texts["license"],
        source=texts["source"],
        description=texts["description"],
        options=options,
        manifest=source,
    )


def parse_manifest(text: str, source: str) -> list[ModelSpec]:
    """Parse one manifest file's text; ModelFormatError names ``source`` and the bad entry."""
    try:
        document = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as error:
        raise ModelFormatError(f"{source}: not valid JSON ({error})") from None
    if not isinstance(document, dict):
        raise ModelFormatError(f'{source}: must be an object {{"version": 1, "models": [...]}}')
    if document.get("version") != MANIFEST_VERSION:
        raise ModelFormatError(
            f"{source}: unsupported manifest version {document.get('version')!r}; expected 1"
        )
    models = document.get("models")
    if not isinstance(models, list):
        raise ModelFormatError(f"{source}: 'models' must be a list")
    specs = [_parse_entry(entry, source, i) for i, entry in enumerate(models)]
    _check_unique(specs)
    return specs


def _check_unique(specs: Iterable[ModelSpec]) -> None:
    seen: dict[str, ModelSpec] = {}
    for spec in specs:
        if spec.key in seen:
            first = seen[spec.key]
            raise ModelFormatError(
                f"{spec.manifest}: duplicate model {spec.name} precision {spec.precision} "
                f"(also in {first.manifest})"
            )
        seen[spec.key] = spec


def load_manifests(paths: Iterable[Path]) -> list[ModelSpec]:
    """Every spec from the given manifest files and folders (``*.json``), checked for duplicates."""
    specs: list[ModelSpec] = []
    for path in paths:
        files = sorted(path.glob("*.json")) if path.is_dir() else [path] if path.is_file() else []
        for manifest in files:
            try:
                text = manifest.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as error:
                raise ModelFormatError(f"{manifest}: cannot be read ({error})") from None
            specs.extend(parse_manifest(text, str(manifest)))
    _check_unique(specs)
    return specs


# -- hashing ---------------------------------------------------------------------------------

_CHUNK = 1 << 20
_hash_cache: dict[tuple[str, int, int], str] = {}
_hash_lock = threading.Lock()


def sha256_file(path: Path | str) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        while chunk := stream.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _cache_key(path: Path) -> tuple[str, int, int]:
    st = path.stat()
    return (str(path.resolve()), st.st_size, st.st_mtime_ns)


def cached_sha256(path: Path) -> str:
    """sha256 remembered per (path, size, mtime) so a big model is hashed once per process."""
    key = _cache_key(path)
    with _hash_lock:
        known = _hash_cache.get(key)
    if known is not None:
        return known
    digest = sha256_file(path)  # outside the lock: hashing 300 MB must not block other files
    with _hash_lock:
        _hash_cache[key] = digest
    return digest


def _remember_sha256(path: Path, digest: str) -> None:
    key = _cache_key(path)
    with _hash_lock:
        _hash_cache[key] = digest


# -- the store -------------------------------------------------------------------------------


def _package_dirs(package: str) -> list[Path]:
    # A frozen app (build.spec) carries a data-only package's files as a plain folder in its
    # bundle, where the import system need not see a package: look there first.
    frozen_root = getattr(sys, "_MEIPASS", None)
    bundled = [Path(frozen_root) / package] if frozen_root is not None else []
    try:
        found = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return bundled
    if found is None or not found.submodule_search_locations:
        return bundled
    return [*bundled, *(Path(location) for location in found.submodule_search_locations)]


@dataclass(frozen=True)
class ModelStore:
    """The known models (manifest entries) and the folders their files are looked up in."""

    specs: tuple[ModelSpec, ...]
    search_dirs: tuple[Path, ...]
    user_dir: Path = field(default_factory=user_model_dir)
    manifest_paths: tuple[Path, ...] = ()  # what ``reload`` re-reads

    @classmethod
    def default(cls, extra_dirs: Sequence[Path | str] = ()) -> ModelStore:
        """Shipped manifests + the user's ``user.json``; files from extra dirs, user dir, assets."""
        user = user_model_dir()
        manifests = (ASSETS_DIR, user / USER_MANIFEST)
        dirs = (*(Path(d) for d in extra_dirs), user, ASSETS_DIR)
        return cls(
            specs=tuple(load_manifests(manifests)), search_dirs=dirs, user_dir=user, manifest_paths=manifests
        )

    def reload(self) -> ModelStore:
        """A new store with the manifests read again (after an import)."""
        if not self.manifest_paths:
            return self
        return ModelStore(
            tuple(load_manifests(self.manifest_paths)), self.search_dirs, self.user_dir, self.manifest_paths
        )

    def at_full_size(self) -> ModelStore:
        """This store with every restorer taking its full size only (no ``crop_sizes``): what the
        engine's crop-size rules are measured against."""
        return replace(self, specs=tuple(replace(spec, crop_sizes=()) for spec in self.specs))

    def names(self, family: str | None = None) -> list[str]:
        """Unique model names in manifest order, optionally of one family."""
        seen: dict[str, None] = {}
        for spec in self.specs:
            if family is None or spec.family == family:
                seen.setdefault(spec.name, None)
        return list(seen)

    def precisions(self, name: str) -> list[str]:
        """The precisions listed for a model name (empty if the name is unknown)."""
        return [spec.precision for spec in self.specs if spec.name == name]

    def get(self, name: str, precision: str | None = None) -> ModelSpec:
        """The entry for ``name``: fp32 when ``precision`` is None and listed, else the first."""
        variants = [spec for spec in self.specs if spec.name == name]
        if not variants:
            known = ", ".join(self.names()) or "none"
            raise ModelNotFoundError(f"unknown model {name!r}; known models: {known}")
        if precision is None:
            return next((s for s in variants if s.precision == "fp32"), variants[0])
        for spec in variants:
            if spec.precision == precision:
                return spec
        have = ", ".join(s.precision for s in variants)
        raise ModelNotFoundError(f"model {name} has no {precision} variant; available: {have}")

    def locate(self, spec: ModelSpec, role: str = "model") -> Path | None:
        """The first existing copy of one of the model's files, or None (not verified here)."""
        model_file = spec.file(role)
        for folder in self.search_dirs:
            candidate = folder / model_file.file
            if candidate.is_file():
                return candidate
        if model_file.package:
            for folder in _package_dirs(model_file.package):
                candidate = folder / model_file.file
                if candidate.is_file():
                    return candidate
        return None

    def _not_installed(self, spec: ModelSpec, model_file: ModelFile) -> ModelNotFoundError:
        if any(f.url for f in spec.files):
            hint = f"run `restora models download {spec.name}` or import the file"
        elif model_file.package:
            hint = f"install the Python package {model_file.package}"
        else:
            hint = f"import the file with `restora models import {model_file.file}`"
        return ModelNotFoundError(f"model {spec.name} is not installed ({model_file.file} not found): {hint}")

    def require(self, spec: ModelSpec) -> dict[str, Path]:
        """role -> path for every file, each present and sha256-verified, or a typed error."""
        paths: dict[str, Path] = {}
        for model_file in spec.files:
            path = self.locate(spec, model_file.role)
            if path is None:
                raise self._not_installed(spec, model_file)
            if model_file.sha256 is not None:
                got = cached_sha256(path)
                if got != model_file.sha256:
                    raise ModelIntegrityError(
                        f"model {spec.name} file {path}: sha256 mismatch: "
                        f"expected {model_file.sha256}, got {got}"
                    )
            paths[model_file.role] = path
        return paths

    def status(self, spec: ModelSpec, verify: bool = True) -> ModelStatus:
        """Presence and (when ``verify``) sha256 check of each file."""
        rows = []
        for model_file in spec.files:
            path = self.locate(spec, model_file.role)
            problem: str | None = None
            verified = False
            if path is None:
                problem = "missing"
            elif model_file.sha256 is None:
                problem = "no sha256 known"
            elif not verify:
                problem = "not checked"
            elif cached_sha256(path) == model_file.sha256:
                verified = True
            else:
                problem = "sha256 mismatch"
            rows.append(
                FileStatus(model_file.role, model_file.file, path, path is not None, verified, problem)
            )
        return ModelStatus(spec, tuple(rows))


# -- import ----------------------------------------------------------------------------------


def _atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, text.encode("utf-8"))


def _atomic_copy(source: Path, target: Path) -> None:
    if target.exists() and source.resolve() == target.resolve():
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    try:
        shutil.copyfile(source, tmp)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def spec_to_entry(spec: ModelSpec) -> dict[str, Any]:
    """The manifest JSON object for a spec (single-file form when it has one ``model`` file)."""
    entry: dict[str, Any] = {"name": spec.name, "family": spec.family, "arch": spec.arch}
    if len(spec.files) == 1 and spec.files[0].role == "model":
        f = spec.files[0]
        entry.update({"file": f.file, "sha256": f.sha256, "url": f.url})
        if f.package:
            entry["package"] = f.package
    else:
        entry["files"] = [
            {"role": f.role, "file": f.file, "sha256": f.sha256, "url": f.url, "package": f.package}
            for f in spec.files
        ]
    entry.update(
        {
            "precision": spec.precision,
            "size": spec.size,
            **({"crop_sizes": list(spec.crop_sizes)} if spec.crop_sizes else {}),
            "template": spec.template,
            "input": spec.input,
            "output": spec.output,
            "range": list(spec.range),
            "channel_order": spec.channel_order,
            "weight_input": spec.weight_input,
            "default_fidelity": spec.default_fidelity,
            "license": spec.license,
            "source": spec.source,
            "description": spec.description,
            "options": dict(spec.options),
        }
    )
    return entry


def _slug(text: str) -> str:
    slug = re.sub(r"[^a-z0-9._+-]+", "-", text.strip().lower()).strip("-.")
    return slug or "model"


def _graph_io(path: Path) -> tuple[list[Any], list[Any], dict[str, str]]:
    """(inputs, outputs, metadata) of an ONNX file, read with a CPU onnxruntime session."""
    from engine.restorers.families import TensorInfo
    from engine.runtime import create_session

    session = create_session(path, "cpu", threads=1)
    inputs = [TensorInfo(i.name, tuple(i.shape), i.type) for i in session.get_inputs()]
    outputs = [TensorInfo(o.name, tuple(o.shape), o.type) for o in session.get_outputs()]
    metadata = dict(session.get_modelmeta().custom_metadata_map)
    return inputs, outputs, metadata


def conventions_metadata(spec: ModelSpec, precision: str, description: str = "") -> dict[str, str]:
    """``restora.*`` metadata that lets an import of a variant of ``spec`` (in ``precision``) know it
    for what it is without its manifest entry (``restora quantize`` writes it into the variants it
    makes; ``_spec_from_graph`` reads it in place of the family's defaults). Lists are comma-separated."""
    values = {
        "arch": spec.arch,
        "precision": precision,
        "size": str(spec.size) if spec.size is not None else "",
        "crop_sizes": ",".join(str(c) for c in spec.crop_sizes),
        "template": spec.template or "",
        "range": ",".join(repr(float(v)) for v in spec.range),
        "channel_order": spec.channel_order,
        "default_fidelity": repr(float(spec.default_fidelity)),
        "license": spec.license,
        "source": spec.source,
        "description": description,
    }
    return {f"restora.{key}": value for key, value in values.items() if value}


def _metadata_ints(metadata: Mapping[str, str], key: str, where: str) -> tuple[int, ...]:
    text = metadata.get(f"restora.{key}", "")
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise ModelFormatError(f"{where}: metadata restora.{key} must be whole numbers, got {text!r}") from None
    if any(v <= 0 for v in values):
        raise ModelFormatError(f"{where}: metadata restora.{key} must be positive, got {text!r}")
    return values


def _spec_from_graph(name: str, file_name: str, digest: str, path: Path) -> ModelSpec:
    """A user manifest entry built from the graph's I/O and the known family conventions."""
    from engine.restorers.families import RESTORER_CONVENTIONS, describe, detect_family, family_of

    inputs, outputs, metadata = _graph_io(path)
    try:
        arch = detect_family(inputs, outputs)
    except ModelFormatError as error:  # the message names the file, like every other import error
        raise ModelFormatError(f"{path.name}: {error}") from None
    # A graph may state its own conventions (Restora's training exports do): restora.arch etc.
    declared = metadata.get("restora.arch")
    if declared is not None:
        if declared not in RESTORER_CONVENTIONS:
            raise ModelFormatError(
                f"{path.name}: metadata restora.arch={declared!r} is not a known restorer arch"
            )
        if family_of(arch) != "restorer":
            raise ModelFormatError(
                f"{path.name}: says it is a {declared} restorer but its I/O looks like a {arch} detector"
            )
        arch = declared
    family = family_of(arch)
    common: dict[str, Any] = {
        "name": name,
        "family": family,
        "arch": arch,
        "files": (ModelFile("model", file_name, digest),),
    }
    description = metadata.get("restora.description", f"imported from {path.name}")
    if family != "restorer":
        first = inputs[0]
        h, w = (first.shape[2], first.shape[3]) if len(first.shape) == 4 else (None, None)
        size = h if isinstance(h, int) and h == w else None
        return ModelSpec(**common, input=first.name, size=size, description=description)

    convention = RESTORER_CONVENTIONS[arch]
    weight = next((t for t in inputs if len(t.shape) != 4), None)
    image = next(t for t in inputs if len(t.shape) == 4)
    image_outputs = [t for t in outputs if len(t.shape) == 4 and t.shape[1] == 3]
    h = image.shape[2]
    size = h if isinstance(h, int) else (convention.sizes[0] if len(convention.sizes) == 1 else None)
    stated_size = _metadata_ints(metadata, "size", path.name)
    if stated_size and not isinstance(h, int):
        size = stated_size[0]
    if size is None:
        raise ModelFormatError(
            f"{path.name}: dynamic input size ({describe(inputs)}); cannot tell the crop size"
        )
    if convention.sizes and size not in convention.sizes:
        # Same conventions at another size are fine; say so in the description.
        description += f" ({arch}-like graph at {size}px)"
    value_range = convention.range
    if "restora.range" in metadata:
        try:
            lo, hi = (float(v) for v in metadata["restora.range"].split(","))
        except ValueError:
            raise ModelFormatError(f"{path.name}: metadata restora.range must be 'low,high'") from None
        value_range = (lo, hi)
    channel_order = metadata.get("restora.channel_order", convention.channel_order)
    if channel_order not in CHANNEL_ORDERS:
        raise ModelFormatError(f"{path.name}: metadata restora.channel_order must be rgb or bgr")
    precision = "fp16" if image.dtype == "tensor(float16)" else metadata.get("restora.precision", "fp32")
    if precision not in PRECISIONS:
        precision = "fp32"
    crop_sizes = _metadata_ints(metadata, "crop_sizes", path.name) if not isinstance(h, int) else ()
    try:
        default_fidelity = float(metadata.get("restora.default_fidelity", convention.default_fidelity))
    except ValueError:
        raise ModelFormatError(f"{path.name}: metadata restora.default_fidelity must be a number") from None
    return ModelSpec(
        **common,
        precision=precision,
        size=size,
        crop_sizes=tuple(c for c in crop_sizes if c < size),
        template=metadata.get("restora.template", convention.template),
        input=image.name,
        output=image_outputs[0].name if len(outputs) > 1 else None,
        range=value_range,
        channel_order=channel_order,
        weight_input=weight.name if weight is not None else None,
        default_fidelity=min(1.0, max(0.0, default_fidelity)),
        license=metadata.get("restora.license", ""),
        source=metadata.get("restora.source", ""),
        description=description,
    )


def listed_file(store: ModelStore, digest: str) -> tuple[ModelSpec, ModelFile] | None:
    """The manifest entry and file whose sha256 is ``digest``, if any."""
    for spec in store.specs:
        for model_file in spec.files:
            if model_file.sha256 == digest:
                return spec, model_file
    return None


def spec_for_file(store: ModelStore, path: Path | str) -> ModelSpec:
    """What an ONNX file is: its manifest entry when its sha256 is listed, else a spec read from its
    graph (named after the file) as ``import_model`` would make it. Nothing is copied or written."""
    path, digest, listed = _identify(store, path)
    if listed is not None:
        return listed[0]
    return _spec_from_graph(_slug(path.stem), path.name, digest, path)


def _identify(store: ModelStore, path: Path | str) -> tuple[Path, str, tuple[ModelSpec, ModelFile] | None]:
    """An existing file's path, sha256 and manifest listing (``listed_file``)."""
    path = Path(path)
    if not path.is_file():
        raise ModelNotFoundError(f"{path}: no such file")
    digest = sha256_file(path)
    return path, digest, listed_file(store, digest)


def import_model(store: ModelStore, path: Path | str, name: str | None = None) -> ModelSpec:
    """Copy a user's ONNX file into the user model folder after checking it.

    A file whose sha256 matches a manifest entry becomes that model. Otherwise its I/O is read
    from the graph and matched against the known families (ModelFormatError on a mismatch, a
    non-ONNX or a truncated file) and an entry is added to the user folder's ``user.json``.
    Returns the spec; ``store.reload()`` (or a new ``ModelStore.default()``) lists it.
    """
    path, digest, listed = _identify(store, path)
    if listed is not None:
        spec, model_file = listed
        existing = store.locate(spec, model_file.role)
        if existing is None or cached_sha256(existing) != digest:
            target = store.user_dir / model_file.file
            _atomic_copy(path, target)
            _remember_sha256(target, digest)
        return spec

    model_name = _slug(name if name else path.stem)
    user_manifest = store.user_dir / USER_MANIFEST
    spec = _spec_from_graph(model_name, f"{model_name}.onnx", digest, path)
    if spec.precision != "fp32":
        spec = _with_file(spec, f"{model_name}-{spec.precision}.onnx")
    for other in store.specs:
        if other.key == spec.key and Path(other.manifest) != user_manifest:
            raise ModelError(
                f"{path.name}: the name {model_name} ({spec.precision}) is already used by a listed model; "
                "choose another with --name"
            )
    spec = replace(spec, manifest=str(user_manifest))

    target = store.user_dir / spec.files[0].file
    _atomic_copy(path, target)
    _remember_sha256(target, digest)

    entries: list[dict[str, Any]] = []
    if user_manifest.is_file():
        current = parse_manifest(user_manifest.read_text(encoding="utf-8"), str(user_manifest))
        entries = [spec_to_entry(s) for s in current if s.key != spec.key]
    entries.append(spec_to_entry(spec))
    _atomic_write_text(
        user_manifest, json.dumps({"version": MANIFEST_VERSION, "models": entries}, indent=2) + "\n"
    )
    return spec


def _with_file(spec: ModelSpec, file_name: str) -> ModelSpec:
    old = spec.files[0]
    return replace(spec, files=(replace(old, file=file_name),))


# -- download --------------------------------------------------------------------------------

Progress = Callable[[int, int | None], None]


class _Retryable(Exception):
    """A transfer that stopped part-way; the .part file is kept for a resume."""


def _host(url: str) -> str:
    return urllib.parse.urlsplit(url).netloc or url


def _reason(error: BaseException) -> str:
    if isinstance(error, urllib.error.HTTPError):
        return f"HTTP {error.code} {error.reason}"
    if isinstance(error, urllib.error.URLError):
        return str(error.reason)
    return str(error) or type(error).__name__


def _content_range_start(value: str | None) -> tuple[int | None, int | None]:
    match = re.match(r"bytes (\d+)-\d+/(\d+|\*)", value or "")
    if not match:
        return None, None
    total = int(match.group(2)) if match.group(2) != "*" else None
    return int(match.group(1)), total


def _fetch(url: str, part: Path, progress: Progress | None, timeout: float) -> None:
    """Append the rest of ``url`` to ``part`` (resuming with Range), or raise _Retryable."""
    offset = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": "restora-model-download"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    request = urllib.request.Request(url, headers=headers)
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as error:
        error.close()
        if error.code == 416 and offset:
            return  # the .part already holds the whole file; the hash check decides
        if error.code >= 500 or error.code == 429:
            raise _Retryable(_reason(error)) from error
        raise DownloadError(f"download from {_host(url)} failed: {_reason(error)}") from error
    except (urllib.error.URLError, OSError) as error:
        raise _Retryable(_reason(error)) from error
    with response:
        length_header = response.headers.get("Content-Length")
        length = int(length_header) if length_header and length_header.isdigit() else None
        if response.status == 206 and offset:
            start, total = _content_range_start(response.headers.get("Content-Range"))
            if start != offset:
                part.unlink(missing_ok=True)
                raise _Retryable(f"server resumed at byte {start}, not {offset}")
            if total is None and length is not None:
                total = offset + length
            mode = "ab"
        elif response.status == 200:
            offset, total, mode = 0, length, "wb"  # Range ignored (or none sent): start over
        else:
            raise DownloadError(
                f"download from {_host(url)} failed: unexpected HTTP status {response.status}"
            )
        done = offset
        try:
            with open(part, mode) as stream:
                while chunk := response.read(_CHUNK):
                    stream.write(chunk)
                    done += len(chunk)
                    if progress is not None:
                        progress(done, total)
        except (OSError, http.client.HTTPException) as error:  # reset, timeout, IncompleteRead
            raise _Retryable(_reason(error)) from error
        if total is not None and done < total:
            raise _Retryable(f"connection closed after {done} of {total} bytes")


def _download_file(
    model_file: ModelFile, target: Path, progress: Progress | None, timeout: float, attempts: int
) -> None:
    url = model_file.url
    if url is None:
        raise DownloadError(f"{model_file.file}: no download address known; import the file instead")
    part = target.with_name(target.name + ".part")
    target.parent.mkdir(parents=True, exist_ok=True)
    last = ""
    for attempt in range(max(1, attempts)):
        try:
            _fetch(url, part, progress, timeout)
            break
        except _Retryable as error:
            last = str(error)
            if attempt + 1 < attempts:
                time.sleep(min(2.0, 0.25 * (attempt + 1)))
    else:
        raise DownloadError(
            f"download of {model_file.file} from {_host(url)} failed: {last} "
            "(partial file kept; run again to resume)"
        )
    if not part.is_file():
        raise DownloadError(f"download of {model_file.file} from {_host(url)} produced no file")
    if model_file.sha256 is not None:
        got = sha256_file(part)
        if got != model_file.sha256:
            part.unlink(missing_ok=True)
            raise ModelIntegrityError(
                f"download of {model_file.file} from {_host(url)}: sha256 mismatch: "
                f"expected {model_file.sha256}, got {got}"
            )
        os.replace(part, target)
        _remember_sha256(target, got)
    else:
        os.replace(part, target)  # no pinned hash: nothing to verify against


def download(
    store: ModelStore,
    name: str,
    *,
    precision: str | None = None,
    progress: Progress | None = None,
    timeout: float = 30,
    attempts: int = 3,
) -> Path:
    """Fetch a listed model's files into the user model folder; returns the main file's path.

    Streams to ``<file>.part``, resumes with ``Range`` after an interruption (up to ``attempts``
    tries here; a later call resumes too), checks sha256 before moving the file into place.
    Files already present and verified are skipped.
    """
    spec = store.get(name, precision)
    paths: dict[str, Path] = {}
    for model_file in spec.files:
        existing = store.locate(spec, model_file.role)
        if existing is not None and (
            model_file.sha256 is None or cached_sha256(existing) == model_file.sha256
        ):
            paths[model_file.role] = existing
            continue
        target = store.user_dir / model_file.file
        try:
            _download_file(model_file, target, progress, timeout, attempts)
        except DownloadError as error:
            raise DownloadError(f"model {spec.name}: {error}") from error
        paths[model_file.role] = target
    return paths.get("model", next(iter(paths.values())))
