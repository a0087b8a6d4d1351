"""``python -m segdeploy.check``: the same as ``segdeploy-check``."""

import sys

from .cli import main

sys.exit(main())
