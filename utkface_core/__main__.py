"""``python -m utkface_core``: the command-line interface."""

import sys

from .cli import main

sys.exit(main())
