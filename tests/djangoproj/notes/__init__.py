"""An app whose tasks use the ORM."""
