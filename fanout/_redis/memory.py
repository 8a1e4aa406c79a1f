"""The ``memory://`` store: an in-process, Redis-compatible server (fakeredis with Lua)."""

from __future__ import annotations

import threading
from typing import Any

from .._errors import ConfigError

_lock = threading.Lock()
_servers: dict[str, Any] = {}

def memory_redis(url: str) -> Any:
    """A fakeredis client; clients for the same URL share one in-memory server."""
    try:
        import fakeredis
    except ImportError:
        raise ConfigError(
            "the memory:// store needs fakeredis with Lua: pip install 'celery-fanout[embedded]'"
        ) from None
    with _lock:
        server = _servers.get(url)
        if server is None:
            server = fakeredis.FakeServer()
            _servers[url] = server
    return fakeredis.FakeRedis(server=server)
