"""Time ONNX restorers side by side: sessions made once, models taking turns in short blocks.

Why not one model after another: on a shared 2-core host the speed drifts by 10-20 % within minutes,
so only models timed in the same minutes can be compared. Why `--spin 0` is offered: onnxruntime's
worker threads spin after each run by default, and a spinning session slows the next one on 2 cores
(docs/TRAINING.md, "Paying for the 1/4 block"); the figures here are close either way because each
block starts with two untimed runs.

    python scripts/ab_onnx.py MODEL_A.onnx MODEL_B.onnx [...] [--rounds 12] [--spin 1]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from training.evaluate import make_session


def time_in_turn(
    paths: list[Path], rounds: int, runs: int, size: int, spin: bool, threads: int
) -> dict[Path, list[float]]:
    """Seconds per run for each model; the order of the models reverses every other round."""
    face = np.random.default_rng(0).random((1, 3, size, size), dtype=np.float32)
    sessions = [(path, make_session(path, threads, spin)) for path in paths]
    times: dict[Path, list[float]] = {path: [] for path in paths}
    for round_index in range(rounds):
        order = sessions if round_index % 2 == 0 else sessions[::-1]
        for path, session in order:
            name = session.get_inputs()[0].name
            for _ in range(2):  # warm the caches and wake the threads; not timed
                session.run(None, {name: face})
            for _ in range(runs):
                start = time.perf_counter()
                session.run(None, {name: face})
                times[path].append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", type=Path)
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--runs", type=int, default=8, help="timed runs per model per round")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--spin", type=int, choices=(0, 1), default=1)
    args = parser.parse_args()
    times = time_in_turn(args.models, args.rounds, args.runs, args.size, bool(args.spin), args.threads)
    base = float(np.median(times[args.models[0]]))
    print(f"batch 1, {args.size} px, {args.threads} threads, spinning {'on' if args.spin else 'off'}")
    for path, values in times.items():
        median = float(np.median(values))
        print(
            f"{path!s:48s} median {median * 1000:6.1f} ms  p25 {np.percentile(values, 25) * 1000:6.1f}"
            f"  ratio to the first {median / base:.3f}"
        )


if __name__ == "__main__":
    main()
