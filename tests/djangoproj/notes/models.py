from __future__ import annotations

from django.db import models


class Note(models.Model):
    text = models.CharField(max_length=200)
    written_by_pid = models.IntegerField(null=True)
