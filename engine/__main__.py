"""`python -m engine` is the `restora` command line."""

import sys

from engine.cli import main

if __name__ == "__main__":
    sys.exit(int(main()))
