"""`python -m engine` is the `restora` command line."""

import sys

from engine.cli import run

if __name__ == "__main__":
    sys.exit(run())
