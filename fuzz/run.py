"""A plain mutation fuzzer for the same targets, for machines where atheris will not install.

No coverage feedback, only seeds + random byte flips, cuts, splices and random blobs, for a fixed
time; any exception other than the target's typed error is a crash, saved as fuzz/crash-<target>-<n>.

    python fuzz/run.py --seconds 60 [--target imageio|manifest] [--seed 6]
"""

from __future__ import annotations

import argparse
import random
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import targets

TARGETS: dict[str, tuple[Callable[[bytes], None], Callable[[], dict[str, bytes]]]] = {
    "imageio": (targets.check_image, targets.image_seeds),
    "manifest": (targets.check_manifest, targets.manifest_seeds),
}


def mutate(rng: random.Random, seeds: list[bytes]) -> bytes:
    choice = rng.random()
    if choice < 0.1:
        return rng.randbytes(rng.randint(0, 4096))
    data = bytearray(rng.choice(seeds))
    for _ in range(rng.randint(1, 8)):
        kind = rng.random()
        if not data:
            break
        at = rng.randrange(len(data))
        if kind < 0.5:
            data[at] = rng.randrange(256)
        elif kind < 0.65:
            del data[at:]
        elif kind < 0.8:
            data[at:at] = rng.randbytes(rng.randint(1, 16))
        elif kind < 0.9:
            other = rng.choice(seeds)
            start = rng.randrange(len(other))
            data[at:at] = other[start : start + rng.randint(1, 64)]
        else:  # interesting integers, where sizes and counts live
            value = rng.choice([0, 1, 0x7F, 0x80, 0xFF, 0xFFFF, 0x7FFFFFFF, 0xFFFFFFFF])
            data[at : at + 4] = value.to_bytes(4, rng.choice(["little", "big"]))
    return bytes(data)


def run(name: str, seconds: float, seed: int) -> int:
    check, make_seeds = TARGETS[name]
    seeds = list(make_seeds().values())
    rng = random.Random(seed)
    crashes = executions = 0
    slowest = 0.0
    started = time.perf_counter()
    for data in seeds:
        check(data)
    while time.perf_counter() - started < seconds:
        data = mutate(rng, seeds)
        one = time.perf_counter()
        try:
            check(data)
        except Exception:
            crashes += 1
            path = Path(__file__).resolve().parent / f"crash-{name}-{crashes}"
            path.write_bytes(data)
            print(f"CRASH saved to {path}:\n{traceback.format_exc()}", flush=True)
        slowest = max(slowest, time.perf_counter() - one)
        executions += 1
    elapsed = time.perf_counter() - started
    print(f"{name}: {executions} executions in {elapsed:.1f} s ({executions / elapsed:.0f}/s), "
          f"slowest {slowest * 1000:.0f} ms, {crashes} crashes", flush=True)
    return crashes


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--target", choices=sorted(TARGETS), action="append")
    parser.add_argument("--seed", type=int, default=6)
    args = parser.parse_args()
    crashes = sum(run(name, args.seconds, args.seed) for name in args.target or sorted(TARGETS))
    return 1 if crashes else 0


if __name__ == "__main__":
    sys.exit(main())
