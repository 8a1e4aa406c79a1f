"""The ``memory://`` store: an in-process, Redis-compatible server (fakeredis with Lua)."""

from __future__ import annotations

import importlib.util
import threading
from typing import Any

from .._errors import ConfigError

_lock = threading.Lock()
_servers: dict[str, Any] = {}
_EXTRA = "pip install 'celery-fanout[embedded]'"


def memory_redis(url: str) -> Any:
    """A fakeredis client; clients for the same URL share one in-memory server."""
    try:
        import fakeredis
    except ImportError:
        raise ConfigError(f"the memory:// store needs fakeredis with Lua: {_EXTRA}") from None
    if importlib.util.find_spec("lupa") is None:  # fakeredis runs fanout's Lua with it
        raise ConfigError(
            f"the memory:// store needs fakeredis with Lua (lupa is missing): {_EXTRA}"
        )
    with _lock:
        server = _servers.get(url)
        if server is None:
            server = fakeredis.FakeServer()
            _servers[url] = server
    return fakeredis.FakeRedis(server=server)
