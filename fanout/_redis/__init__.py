"""fanout's store: the only layer that talks to Redis.

Every atomic transition is a Lua script in ``lua/`` beside this package; the key
layout and what each script guarantees are in ``docs/internals.md``.  Nothing here
imports celery, kombu or django.
"""
