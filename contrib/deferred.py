"""``DeferredMinique``: a queue whose database and options come later, from a framework's config.

Flask's extensions and Django's apps exist before their configuration is
read, and so do the modules that declare tasks. A ``DeferredMinique`` takes
task declarations and hooks at once and becomes a complete ``Minique`` when
``configure`` is called; until then anything that needs the database raises
``ConfigurationError`` saying what to call.
"""

from __future__ import annotations

import inspect
import os
from typing import Any

from minique import Minique
from minique.errors import ConfigurationError

# Every keyword option of Minique(path, **options), read from its signature so
# that an option added to the core is configurable from the frameworks at once.
OPTIONS: tuple[str, ...] = tuple(
    name for name, param in inspect.signature(Minique.configure).parameters.items()
    if param.kind is inspect.Parameter.KEYWORD_ONLY
)

# What Minique.configure sets: reading one of these before configure() is a
# usage error that deserves a clear message.
_CONFIGURED = frozenset({
    "immediate", "serializer", "result_ttl", "tz", "zone", "synchronous", "lease", "store",
    "_nudger",
})


class DeferredMinique(Minique):
    """A ``Minique`` that accepts tasks and hooks now and its database in ``configure``.

    Before ``configure``, ``path`` is ``None`` and enqueueing, reading results,
    counting or consuming raise ``ConfigurationError`` with ``unconfigured_hint``.
    """

    unconfigured_hint = "call configure(path, **options) first"

    def __init__(self) -> None:
        # Only the declarations: the database comes with configure().
        self._declare()
        self.configured = False

    def __getattr__(self, name: str) -> Any:
        # Only called for attributes not set yet, i.e. before configure().
        if name == "path":
            # Process workers look for their queue by comparing the path of
            # every Minique they can see; an unconfigured one must simply not match.
            return None
        if name in _CONFIGURED:
            raise ConfigurationError(
                f"{type(self).__name__} is not configured yet, so it has no database: "
                f"{self.unconfigured_hint}")
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __repr__(self) -> str:
        if not self.configured:
            return f"<{type(self).__name__} (not configured)>"
        return f"<{type(self).__name__} {self.path}>"

    def configure(self, path: str | os.PathLike[str], **options: Any) -> None:
        """Give the queue its database and options, as ``Minique(path, **options)`` would.

        Tasks and hooks declared so far are kept. Calling it again points the
        queue at another database (an app factory in tests does that).
        Raises ``ConfigurationError`` for a bad path or option, leaving the
        queue as it was, and while a consumer of this queue runs in this process.
        """
        unknown = sorted(set(options) - set(OPTIONS))
        if unknown:
            raise ConfigurationError(
                f"unknown minique option(s) {', '.join(unknown)}; the options are: database, "
                f"{', '.join(OPTIONS)}")
        super().configure(path, **options)
        self.configured = True
