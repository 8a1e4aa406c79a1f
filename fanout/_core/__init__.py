"""fanout's pure layer: the replay engine, step tools, function declarations, events
and their matching, flow-control arithmetic, schedules, ids and typed records.

Nothing here imports redis, celery, kombu or django (an import-linter contract in
``pyproject.toml`` keeps it so); the layers above hand this code the store and the
task queue through small protocols.
"""
