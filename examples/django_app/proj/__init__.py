# Load the Celery app whenever Django starts, as Celery's Django guide does.
from .celery import app as celery_app

__all__ = ["celery_app"]
