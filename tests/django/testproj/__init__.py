"""A Django project laid out the usual way: ``celery -A tests.django.testproj worker``."""

from .celery import app as celery_app

__all__ = ["celery_app"]
