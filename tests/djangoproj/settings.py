"""Settings of the test project; every file it writes lives in ``$DJANGOPROJ_DATA``.

``$DJANGOPROJ_DB`` and ``$DJANGOPROJ_QUEUE`` point a ``manage.py`` subprocess at
the database and queue of the test that started it.
"""

from __future__ import annotations

import os
from pathlib import Path

DATA = Path(os.environ["DJANGOPROJ_DATA"])

SECRET_KEY = "minique-tests-only"
DEBUG = False
USE_TZ = True
ALLOWED_HOSTS: list[str] = []
ROOT_URLCONF = "djangoproj.urls"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

INSTALLED_APPS = [
    "minique.contrib.django",
    "djangoproj.notes",
    "djangoproj.mailer",
]

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("DJANGOPROJ_DB", DATA / "db.sqlite3"),
        # A file, not the in-memory default, so that a consumer subprocess
        # can share the test database.
        "TEST": {"NAME": DATA / "test-db.sqlite3"},
    }
}

MINIQUE = {"database": os.environ.get("DJANGOPROJ_QUEUE", DATA / "minique.db")}
