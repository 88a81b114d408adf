"""The example application: its queue and tasks live in ``app.tasks``."""
