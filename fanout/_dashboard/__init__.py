"""fanout's web dashboard: the fleet with charts over time, a live event stream, runs
and their steps, buttons to cancel, replay, rerun, pause and send events, and an
audit log of who did what.

Server-rendered HTML with a little JavaScript, as a WSGI app served by waitress:
nothing to build. ``fanout dashboard`` and ``fanout dev`` start it;
:class:`DashboardServer` embeds it. ``server.py`` states the security model.
"""

from .server import DashboardServer, serve

__all__ = ["DashboardServer", "serve"]
