"""Consumers: worker threads, the dispatcher, the scheduler thread, signal handling."""

from .core import Consumer

__all__ = ["Consumer"]
