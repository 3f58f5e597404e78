"""Soak test: 1,000 generated photos through ``run_batch``; RSS and open file descriptors every 50.

Not part of the test suite (it takes minutes). ``make soak`` runs it; the last results go in
docs/RELIABILITY.md. Memory must stay flat (within +-10 % of the level after warm-up) and the open
file descriptor count must not grow. Linux only (reads /proc/self).

    python scripts/soak.py [--photos 1000] [--every 50] [--json soak.json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from PIL import Image as PILImage

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.batch import BatchOptions, BatchProgress, collect_inputs, run_batch
from engine.pipeline import Enhancer, EnhanceSettings


def rss_kib() -> int:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS in /proc/self/status")


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def make_photos(folder: Path, count: int, seed: int = 0) -> None:
    """``count`` distinct 640x480 JPEGs (about 0.3 MP), each holding the astronaut's face."""
    from skimage.data import astronaut

    source = astronaut()
    rng = np.random.default_rng(seed)
    canvas = np.empty((480, 640, 3), np.uint8)
    for index in range(count):
        canvas[:] = rng.integers(40, 200, size=3, dtype=np.uint8)
        scale = rng.uniform(0.55, 0.9)
        face = np.asarray(PILImage.fromarray(source).resize((int(512 * scale), int(512 * scale))))
        top = int(rng.integers(0, 480 - face.shape[0] + 1))
        left = int(rng.integers(0, 640 - face.shape[1] + 1))
        canvas[top : top + face.shape[0], left : left + face.shape[1]] = face
        noisy = np.clip(canvas.astype(np.int16) + rng.normal(0, 6, canvas.shape), 0, 255).astype(np.uint8)
        PILImage.fromarray(noisy).save(folder / f"photo_{index:04d}.jpg", quality=85)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=1000)
    parser.add_argument("--every", type=int, default=50)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--json", type=Path, default=None, help="write the samples here")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="restora-soak-") as scratch:
        inputs, outputs = Path(scratch) / "in", Path(scratch) / "out"
        inputs.mkdir()
        started = time.perf_counter()
        make_photos(inputs, args.photos)
        print(f"generated {args.photos} photos in {time.perf_counter() - started:.1f} s", flush=True)

        enhancer = Enhancer(EnhanceSettings())
        items = collect_inputs([inputs])
        samples: list[dict[str, float]] = []
        lock = threading.Lock()
        run_started = time.perf_counter()

        def sample(done: int) -> None:
            row = {"photos": done, "rss_mib": round(rss_kib() / 1024, 1), "fds": open_fds(),
                   "seconds": round(time.perf_counter() - run_started, 1)}
            samples.append(row)
            print(f"{row['photos']:5d} photos  RSS {row['rss_mib']:7.1f} MiB  fds {row['fds']:3d}  "
                  f"{row['seconds']:7.1f} s", flush=True)

        def progress(update: BatchProgress) -> None:
            with lock:
                if update.done % args.every == 0 or update.done == update.total:
                    sample(update.done)

        sample(0)
        report = run_batch(items, enhancer, BatchOptions(output_dir=outputs, workers=args.workers),
                           progress=progress)
        # Every pool thread has finished now: any descriptor still open beyond the start's is a leak.
        fds_after = open_fds()

    ok, failed = report.count("ok"), report.failed
    # Warm-up (first sessions' arenas, thread pools, caches) is over by the second sample.
    steady = [row for row in samples if row["photos"] >= 2 * args.every]
    baseline = steady[0]["rss_mib"] if steady else samples[-1]["rss_mib"]
    peak = max(row["rss_mib"] for row in steady) if steady else baseline
    low = min(row["rss_mib"] for row in steady) if steady else baseline
    drift = max(peak - baseline, baseline - low) / baseline
    fds_grew = fds_after - samples[0]["fds"]
    faces = report.faces
    print(f"{ok} restored, {failed} failed, {faces} faces in {report.seconds:.1f} s "
          f"({args.photos / report.seconds:.2f} photos/s)")
    print(f"RSS after warm-up {baseline:.1f} MiB, range {low:.1f}..{peak:.1f} MiB "
          f"(drift {drift * 100:.1f} %); open fds {samples[0]['fds']} before, {fds_after} after")
    if args.json is not None:
        args.json.write_text(json.dumps({"samples": samples, "ok": ok, "failed": failed, "faces": faces,
                                         "seconds": round(report.seconds, 1), "drift": round(drift, 4),
                                         "fd_change": fds_grew}, indent=2))
    flat = drift <= 0.10 and fds_grew <= 0 and failed == 0
    print("PASS" if flat else "FAIL: memory or file descriptors grew, or photos failed")
    return 0 if flat else 1


if __name__ == "__main__":
    sys.exit(main())
