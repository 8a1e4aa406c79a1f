"""The operator's view shared by the CLI and the dashboard: finding a project's
Celery app and fanout clients from ``-A proj``, and rendering runs and events."""
