"""Events over HTTP, for services that are not Python.

``ingest_app(client, keys=IngestKeys(client))`` is a WSGI application that accepts
``POST``\\ ed JSON events (one object or an array) and publishes them as
``client.send`` does; ``asgi_app`` is the same endpoint for ASGI servers, and
``fanout.django.ingest_view`` for Django.  Each request is authenticated by a
per-source key (stored hashed) or a webhook signature.  See docs/howto/http-events.md.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from ._http.endpoint import DEFAULT_MAX_BODY, AsgiIngestApp, Ingest, IngestApp
from ._http.ingest_keys import Grant, IngestKeys, KeyInfo, KeyLimits, NewKey, hash_key
from ._http.signing import Webhook, sign
from ._http.wsgi_server import Server, serve

if TYPE_CHECKING:
    from ._client import Fanout

__all__ = [
    "AsgiIngestApp",
    "Grant",
    "IngestApp",
    "IngestKeys",
    "KeyInfo",
    "KeyLimits",
    "NewKey",
    "Server",
    "Webhook",
    "asgi_app",
    "hash_key",
    "ingest_app",
    "serve",
    "sign",
]


def ingest_app(
    client: Fanout,
    *,
    keys: IngestKeys | None = None,
    webhooks: Mapping[str, Webhook] | None = None,
    max_body: int = DEFAULT_MAX_BODY,
) -> IngestApp:
    """The ingestion endpoint as a WSGI application.

    ``keys`` authenticates ``POST /`` (and ``/events``) by ``Authorization: Bearer
    <key>``; ``webhooks`` maps a source to its :class:`Webhook` signature check,
    required on every request of that source and enough on its own at
    ``POST /webhooks/<source>``.  Bodies over ``max_body`` bytes get 413.
    """
    return IngestApp(Ingest(client, keys=keys, webhooks=webhooks, max_body=max_body))


def asgi_app(
    client: Fanout,
    *,
    keys: IngestKeys | None = None,
    webhooks: Mapping[str, Webhook] | None = None,
    max_body: int = DEFAULT_MAX_BODY,
) -> AsgiIngestApp:
    """The ingestion endpoint as an ASGI 3 application (same options as :func:`ingest_app`)."""
    return AsgiIngestApp(Ingest(client, keys=keys, webhooks=webhooks, max_body=max_body))
