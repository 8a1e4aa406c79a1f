from __future__ import annotations

from django.db import models


class Order(models.Model):
    total = models.DecimalField(max_digits=10, decimal_places=2)
    status = models.CharField(max_length=20, default="new")

    class Meta:
        app_label = "shop"
