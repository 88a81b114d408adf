"""A second app with tasks, and no models."""
