"""``python tests/djangoproj/manage.py ...``: the test project's manage.py."""

import os
import sys
from pathlib import Path

if __name__ == "__main__":
    # The project is the package djangoproj inside tests/.
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "djangoproj.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)
