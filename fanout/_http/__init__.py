"""The HTTP event ingestion endpoint (public names in :mod:`fanout.http`).

It sits above the client: it validates and publishes through ``Fanout``'s runtime,
and keeps its keys and replay tokens through the store (``fanout._redis.ingest_store``).
"""
