"""The programs under test: fanout functions, hand-written Celery, DBOS workflows.

Each is configured from the environment (``BENCH_REDIS_URL`` and friends) so the
harness can start its workers against a private Redis per measured run.
"""
