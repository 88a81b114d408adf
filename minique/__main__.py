"""``python -m minique``: the same as the ``minique`` command."""

import sys

from .cli import main

sys.exit(main())
