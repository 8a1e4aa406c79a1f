"""The HTTP server under the ingest endpoint and the dashboard: waitress.

waitress is a pure-Python WSGI server with a pool of worker threads, a listen
backlog of 1024 and an asynchronous front end that reads whole requests before a
thread takes them, so a slow or idle client does not hold a thread. The standard
library's servers it replaces had a backlog of 5: under 32 concurrent clients they
reset connections.

:class:`Server` binds at once (so a bad address fails before anything starts) and
serves in the calling thread (:meth:`Server.serve_forever`) or in a daemon thread
(:meth:`Server.start`); :meth:`Server.stop` may be called from any thread.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from .._errors import ConfigError

log = logging.getLogger("fanout.http")

#: Worker threads per server: each request holds one while it talks to Redis.
DEFAULT_THREADS = 8
#: Pending connections the kernel keeps before refusing new ones.
DEFAULT_BACKLOG = 1024


class _OncePerMinute(logging.Filter):
    """waitress warns on every request that waits for a thread ("Task queue depth is
    N"): under load that is a line per request. Let one through a minute."""

    def __init__(self) -> None:
        super().__init__()
        self._last = 0.0
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        now = time.monotonic()
        with self._lock:
            if now - self._last < 60.0:
                return False
            self._last = now
        record.msg = f"{record.msg} (requests waiting for a thread; said once a minute)"
        return True


def _quiet_queue_warnings() -> None:
    from waitress.utilities import queue_logger

    if not any(isinstance(f, _OncePerMinute) for f in queue_logger.filters):
        queue_logger.addFilter(_OncePerMinute())


class Server:
    """A running server: ``url``, ``host``, ``port``, and ``stop()``."""

    def __init__(self, app: Callable[..., Any], host: str, port: int, *,
                 threads: int = DEFAULT_THREADS, backlog: int = DEFAULT_BACKLOG,
                 name: str = "fanout-http", max_body: int | None = None) -> None:
        from waitress.server import create_server

        _quiet_queue_warnings()

        # waitress reads a whole body before the app sees it, and refuses (413, plain
        # text) a declared length over this bound on the headers alone. An ingest app
        # keeps the last word (its JSON 413) for bodies up to twice its own limit.
        if max_body is None:
            limit = getattr(getattr(app, "ingest", None), "max_body", None)
            max_body = 2 * int(limit) + 65536 if limit else 16 * 1024 * 1024

        try:
            self._server: Any = create_server(
                app, host=host, port=port, threads=threads, backlog=backlog,
                connection_limit=max(100, threads * 16), channel_timeout=60,
                max_request_body_size=max_body,
                ident="fanout", expose_tracebacks=False, clear_untrusted_proxy_headers=False,
            )
        except OSError as exc:
            raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
        self.host = host
        self.port = int(self._server.effective_port)
        self.name = name
        self._stopping = threading.Event()
        self._done = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        shown = "127.0.0.1" if host in ("0.0.0.0", "[::]", "") else host
        return f"http://{shown}:{self.port}"

    def start(self) -> Server:
        """Serve in a daemon thread and return at once."""
        self._thread = threading.Thread(target=self.serve_forever, name=self.name, daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        """Serve until :meth:`stop` (or Ctrl-C); then close the socket and the threads."""
        srv = self._server
        try:
            while not self._stopping.is_set():
                srv.asyncore.loop(timeout=1.0, map=srv._map, use_poll=True, count=1)
        finally:
            self._close()

    def _close(self) -> None:
        srv = self._server
        try:
            for channel in list(srv._map.values()):
                if channel is not srv:
                    channel.close()
            srv.close()
            srv.task_dispatcher.shutdown(timeout=5)
        finally:
            self._done.set()

    def close(self) -> None:
        """Release the socket (after :meth:`serve_forever` returned, or if it never ran)."""
        if not self._done.is_set() and self._thread is None:
            self._close()

    def stop(self) -> None:
        """Stop serving and wait for the server to close (from any thread)."""
        self._stopping.set()
        if self._thread is None:
            self.close()
            return
        try:
            self._server.pull_trigger()
        except OSError:
            pass
        self._thread.join(timeout=10)


def serve(app: Callable[..., Any], *, host: str = "127.0.0.1", port: int = 8290,
          background: bool = False) -> Server:
    """Serve a WSGI app on ``host:port`` (127.0.0.1 by default: only this machine).

    ``port=0`` picks a free port.  With ``background=True`` it returns a started
    :class:`Server`; otherwise it serves until interrupted.
    """
    server = Server(app, host, port)
    if background:
        return server.start()
    log.info("fanout ingest endpoint on %s", server.url)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return server
