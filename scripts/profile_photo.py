"""Where one photo's time goes: generated photos, one at a time, through the engine's stages,
sampled by pyinstrument (issue 9 asks for a profile wherever a speed target is missed).

Not part of the test suite. Serial on purpose: the batch engine overlaps these same stages across
threads, and a sampling profiler of the main thread would show only the waiting. The stages here
are the ones it runs (``Enhancer.enhance`` = detect, align, restore, compose; then ``save_image``).

    pip install pyinstrument
    python scripts/profile_photo.py [--megapixels 1] [--faces 1] [--photos 12] [--precision int8]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from PIL import Image as PILImage

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.bench import make_photo
from engine.imageio import load_image, save_image
from engine.pipeline import Enhancer, EnhanceSettings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--megapixels", type=float, default=1.0)
    parser.add_argument("--faces", type=int, default=1)
    parser.add_argument("--photos", type=int, default=12)
    parser.add_argument("--precision", default="int8", choices=["auto", "fp32", "fp16", "int8"])
    args = parser.parse_args(argv)
    try:
        from pyinstrument import Profiler
    except ImportError:
        print("profile_photo.py needs pyinstrument: pip install pyinstrument", file=sys.stderr)
        return 2

    enhancer = Enhancer(EnhanceSettings(precision=args.precision))
    with tempfile.TemporaryDirectory(prefix="restora-profile-") as temp:
        folder = Path(temp)
        photos = []
        for seed in range(args.photos):
            path = folder / f"photo-{seed}.jpg"
            PILImage.fromarray(make_photo(args.megapixels, args.faces, seed=seed)).save(path, quality=90)
            photos.append(path)
        out = folder / "out"
        out.mkdir()
        for path in photos[:2]:  # warm-up: sessions' first runs allocate their arenas
            save_image(enhancer.enhance(load_image(path)).output, out / path.name, quality=90)
        profiler = Profiler(interval=0.0005)
        profiler.start()
        for path in photos:
            save_image(enhancer.enhance(load_image(path)).output, out / path.name, quality=90)
        profiler.stop()
    print(f"{args.photos} photos of {args.megapixels} MP with {args.faces} face(s), {enhancer.precision}:")
    print(profiler.output_text(unicode=False, color=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
