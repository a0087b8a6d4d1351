"""``python -m segdeploy.serve SOURCE``: the same as ``segserve SOURCE``."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
