"""Measure the packaged app: time to the main window on screen, and ``--self-test`` wall time.

    .venv/bin/python packaging/measure_startup.py [--app dist/Restora/Restora] [--runs 5]
        [--platform xcb|offscreen] [--json FILE]

Window time: from just before the process is started to the moment it prints "window shown",
which the launcher does (under ``RESTORA_REPORT_SHOWN=1``) when the main window receives its first
Expose event, i.e. the window is mapped and can be painted. With ``--platform xcb`` (the
default) a private Xvfb server is started first (not timed); ``offscreen`` needs no X server.
Each run gets empty settings and user-data folders (XDG_*), so it is a first start every time.
The first run reads the bundle from disk; later runs mostly from the page cache: both are shown.
"""

from __future__ import annotations

import argparse
import json
import os
import selectors
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SHOWN = "restora: window shown after"


def start_xvfb() -> tuple[subprocess.Popen[bytes], str]:
    """A private Xvfb; returns (process, DISPLAY). Exits with a hint when Xvfb is not installed."""
    if shutil.which("Xvfb") is None:
        sys.exit("Xvfb not found: apt-get install -y xvfb (or use --platform offscreen)")
    read_fd, write_fd = os.pipe()
    server = subprocess.Popen(
        ["Xvfb", "-displayfd", str(write_fd), "-screen", "0", "1600x1000x24", "-nolisten", "tcp"],
        pass_fds=(write_fd,), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    os.close(write_fd)
    with os.fdopen(read_fd) as stream:
        number = stream.readline().strip()
    if not number:
        server.kill()
        sys.exit("Xvfb did not start")
    return server, f":{number}"


def clean_env(base: dict[str, str], home: Path) -> dict[str, str]:
    env = dict(base)
    for name in ("XDG_CONFIG_HOME", "XDG_DATA_HOME", "XDG_CACHE_HOME", "XDG_STATE_HOME"):
        env[name] = str(home / name.lower())
    env.pop("RESTORA_MODEL_DIR", None)
    env.pop("RESTORA_MODEL_PATH", None)
    return env


def time_window(app: Path, env: dict[str, str], timeout: float) -> tuple[float, float]:
    """(seconds to the window as seen from outside, seconds the app itself reports)."""
    env = {**env, "RESTORA_REPORT_SHOWN": "1"}
    started = time.perf_counter()
    process = subprocess.Popen([str(app)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert process.stdout is not None
    selector = selectors.DefaultSelector()
    selector.register(process.stdout, selectors.EVENT_READ)
    output: list[str] = []
    try:
        while time.perf_counter() - started < timeout:
            if not selector.select(timeout=0.05):
                if process.poll() is not None:
                    break
                continue
            line = process.stdout.readline()
            if not line:
                break
            output.append(line)
            if line.startswith(SHOWN):
                outside = time.perf_counter() - started
                inside = float(line[len(SHOWN):].split()[0])
                return outside, inside
    finally:
        process.kill()
        process.wait()
    sys.exit(f"the window was not shown within {timeout:.0f} s; the app said:\n{''.join(output)[-2000:]}")


def time_self_test(app: Path, env: dict[str, str]) -> float:
    started = time.perf_counter()
    result = subprocess.run([str(app), "--self-test"], env=env, capture_output=True, text=True, timeout=120)
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        sys.exit(f"--self-test failed ({result.returncode}): {result.stdout}{result.stderr}")
    return seconds


def summary(values: list[float]) -> dict[str, float]:
    return {
        "first": round(values[0], 3),
        "median": round(statistics.median(values), 3),
        "min": round(min(values), 3),
        "max": round(max(values), 3),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--app", type=Path, default=Path("dist/Restora/Restora"))
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--platform", choices=("xcb", "offscreen"), default="xcb")
    parser.add_argument("--timeout", type=float, default=60.0, help="give up on a window after this long")
    parser.add_argument("--skip-self-test", action="store_true")
    parser.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    args = parser.parse_args()
    app = args.app.resolve()
    if not app.is_file():
        sys.exit(f"{app}: not built; run `make app`")

    server = None
    env = dict(os.environ, QT_QPA_PLATFORM=args.platform)
    if args.platform == "xcb":
        server, display = start_xvfb()
        env["DISPLAY"] = display
        env.pop("WAYLAND_DISPLAY", None)
    results: dict[str, object] = {"app": str(app), "platform": args.platform, "runs": args.runs}
    try:
        outside, inside = [], []
        for _ in range(args.runs):
            with tempfile.TemporaryDirectory(prefix="restora-startup-") as home:
                seen, reported = time_window(app, clean_env(env, Path(home)), args.timeout)
            outside.append(seen)
            inside.append(reported)
        results["window_shown_s"] = summary(outside)
        results["window_shown_after_python_start_s"] = summary(inside)
        if not args.skip_self_test:
            with tempfile.TemporaryDirectory(prefix="restora-startup-") as home:
                tests = [time_self_test(app, clean_env(env, Path(home))) for _ in range(args.runs)]
            results["self_test_s"] = summary(tests)
    finally:
        if server is not None:
            server.kill()
            server.wait()
    for key, value in results.items():
        print(f"{key}: {value}")
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
