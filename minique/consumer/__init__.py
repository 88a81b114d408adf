"""Consumers: worker threads, the dispatcher, the scheduler thread, signal handling."""

from .lifecycle import Consumer

__all__ = ["Consumer"]
