"""The HTTP event ingestion endpoint as a Django view.

::

    # urls.py
    from fanout.django.ingest import ingest_view

    urlpatterns = [
        path("fanout/events", ingest_view()),
        path("fanout/webhooks/<str:source>", ingest_view(webhooks={...})),
    ]

The view publishes straight to Redis, like :func:`fanout.http.ingest_app` (not
through the outbox: there is no database transaction to follow).  It is exempt
from CSRF checks, because a request carries an ingest key or a signature instead
of a session.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from typing import Any

from django.http import HttpRequest, HttpResponse
from django.views.decorators.csrf import csrf_exempt

from .._client import Fanout
from .._http.endpoint import DEFAULT_MAX_BODY, Ingest, Pending, Response
from ..http import IngestKeys, Webhook
from ._project import client as project_client

__all__ = ["ingest_view"]


def ingest_view(
    *,
    keys: IngestKeys | None = None,
    webhooks: Mapping[str, Webhook] | None = None,
    max_body: int = DEFAULT_MAX_BODY,
    client: Fanout | None = None,
) -> Callable[..., HttpResponse]:
    """A view accepting ``POST``\\ ed events; ``source`` from the URL names a webhook source.

    Without ``keys`` and ``webhooks`` it takes the keys kept in Redis
    (``fanout keys create SOURCE``).  ``client`` defaults to the project's
    :func:`fanout.django.client`, created on the first request.
    """
    lock = threading.Lock()
    built: list[Ingest] = []

    def ingest() -> Ingest:
        with lock:
            if not built:
                c = client or project_client()
                k = keys if (keys is not None or webhooks) else IngestKeys(c)
                built.append(Ingest(c, keys=k, webhooks=webhooks, max_body=max_body))
            return built[0]

    @csrf_exempt
    def view(request: HttpRequest, source: str | None = None) -> HttpResponse:
        endpoint = ingest()
        headers = {k.lower(): str(v) for k, v in request.headers.items()}
        pending = endpoint.head(str(request.method or "GET"), source, headers)
        if isinstance(pending, Pending):
            resp = _finish(endpoint, pending, request)
        else:
            resp = pending
        out = HttpResponse(resp.encoded(), status=resp.status, content_type="application/json")
        for name, value in resp.headers:
            out[name] = value
        out["Cache-Control"] = "no-store"
        return out

    return view


def _finish(endpoint: Ingest, pending: Pending, request: HttpRequest) -> Response:
    stream: Any = request
    body = stream.read(endpoint.max_body + 1)
    return endpoint.finish(pending, body)
