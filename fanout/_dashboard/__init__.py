"""fanout's web dashboard: functions, a live event stream, runs and their steps,
and buttons to cancel, replay, rerun and send test events.

Server-rendered HTML with a little JavaScript, on the standard library's HTTP
server: nothing to build, no extra dependency.  ``fanout dashboard`` and
``fanout dev`` start it; :class:`DashboardServer` embeds it.
"""

from .server import DashboardServer, serve

__all__ = ["DashboardServer", "serve"]
