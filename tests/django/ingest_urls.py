"""URLs for the ingest view tests: keys kept in Redis, and one signed webhook source."""

from __future__ import annotations

from django.urls import path

from fanout.django.ingest import ingest_view
from fanout.http import Webhook

SECRET = "whsec_django_" + "e5" * 12

urlpatterns = [
    path("fanout/events", ingest_view()),
    path("fanout/webhooks/<str:source>", ingest_view(webhooks={"partner": Webhook(secret=SECRET)})),
]
