"""The import path under which beat pickles fanout's cron schedule.

Celery beat's persistent schedule file stores each entry's schedule by pickle, so
``fanout._cron.BeatSchedule`` and ``fanout._cron._revive`` must stay importable across
releases; the code lives in :mod:`fanout._celery.cron`.
"""

from ._celery.cron import BeatSchedule, _revive

__all__ = ["BeatSchedule", "_revive"]
