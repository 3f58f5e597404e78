"""atheris fuzz target: engine.imageio.load_image on arbitrary bytes (see targets.check_image).

    python fuzz/fuzz_imageio.py -max_total_time=60 -rss_limit_mb=2048 fuzz/corpus/imageio
"""

from __future__ import annotations

import sys
from pathlib import Path

import atheris

sys.path.insert(0, str(Path(__file__).resolve().parent))

with atheris.instrument_imports():
    import PIL.Image

    PIL.Image.init()  # imports every Pillow plugin here, so they are instrumented too
    import targets

    import engine.imageio  # noqa: F401


def main() -> None:
    corpus = [arg for arg in sys.argv[1:] if not arg.startswith("-")]
    for folder in corpus:
        targets.ensure_corpus(Path(folder), targets.image_seeds())
    atheris.Setup(sys.argv, targets.check_image)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
