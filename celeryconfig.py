"""The repository's Celery settings: fanout's shipped ``fanout.celeryconfig``.

Installed projects use ``app.config_from_object("fanout.celeryconfig")``; this
file keeps ``config_from_object("celeryconfig")`` working inside the repository
(the examples and benchmarks).
"""

from fanout.celeryconfig import *  # noqa: F403
from fanout.celeryconfig import AT_LEAST_ONCE, apply  # noqa: F401
