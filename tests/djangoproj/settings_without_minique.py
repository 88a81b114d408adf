"""The test project's settings with the ``MINIQUE`` setting forgotten."""

from .settings import *  # noqa: F403

del MINIQUE  # noqa: F821
