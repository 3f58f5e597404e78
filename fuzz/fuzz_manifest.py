"""atheris fuzz target: engine.models.parse_manifest on arbitrary text (see targets.check_manifest).

    python fuzz/fuzz_manifest.py -max_total_time=60 -rss_limit_mb=1024 fuzz/corpus/manifest
"""

from __future__ import annotations

import sys
from pathlib import Path

import atheris

sys.path.insert(0, str(Path(__file__).resolve().parent))

with atheris.instrument_imports():
    import json  # noqa: F401  (the parser's own json use is instrumented too)

    import targets

    import engine.models  # noqa: F401


def main() -> None:
    corpus = [arg for arg in sys.argv[1:] if not arg.startswith("-")]
    for folder in corpus:
        targets.ensure_corpus(Path(folder), targets.manifest_seeds())
    atheris.Setup(sys.argv, targets.check_manifest)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
