"""``python -m utkface_core``: the command-line interface."""

import sys

from utkface_core.cli import main

sys.exit(main())
