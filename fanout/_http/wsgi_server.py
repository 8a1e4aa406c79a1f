"""A small threaded WSGI server for the ingest app (stdlib ``wsgiref``).

For development, tests and modest traffic; behind a production server run the
WSGI app with gunicorn or the ASGI app with uvicorn instead.
"""

from __future__ import annotations

import logging
import socketserver
import threading
from collections.abc import Callable
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

log = logging.getLogger("fanout.http")


class _ThreadingServer(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib name
        log.debug("%s %s", self.address_string(), format % args)


class Server:
    """A running server: ``url``, ``port``, and ``stop()``."""

    def __init__(self, app: Callable[..., Any], host: str, port: int) -> None:
        self._httpd = make_server(host, port, app, server_class=_ThreadingServer,
                                  handler_class=_QuietHandler)
        self.host = host
        self.port = int(self._httpd.server_address[1])
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> Server:
        """Serve in a daemon thread and return at once."""
        self._thread = threading.Thread(target=self._httpd.serve_forever,
                                        name="fanout-http", daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        self._httpd.serve_forever()

    def close(self) -> None:
        """Release the socket (after :meth:`serve_forever` returned)."""
        self._httpd.server_close()

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
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
    finally:
        server.close()
    return server
