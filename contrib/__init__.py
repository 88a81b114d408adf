"""Integrations with web frameworks, imported as ``minique.contrib.*``.

Nothing here is imported by ``import minique``: each integration pulls in its
framework only when it is itself imported.
"""
