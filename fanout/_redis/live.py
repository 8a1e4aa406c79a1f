"""Cheap change stamps for the dashboard's live refresh.

A page that refreshes in place asks the server every few seconds whether anything
changed (``If-None-Match``). Rendering a runs list or the overview reads hundreds of
keys; these stamps read a handful, so an unchanged page costs one round trip:

* :func:`fleet_stamp`: the metrics hash (every run created, pass begun, step
  attempted or run ended changes it within a second), the newest entry and size of
  the runs index, the paused functions and the timers (on a Redis Cluster, the
  metrics shards). ``None`` when the store does not count: then every poll renders.
* :func:`run_stamp`: one run's hash and the audit records about it.
"""

from __future__ import annotations

import hashlib
import time
from typing import Any

from .merged_index import parts
from .metric_shards import merged
from .replies import text as _s
from .store import Store


def _digest(parts: Any) -> str:
    return hashlib.sha1(repr(parts).encode(), usedforsecurity=False).hexdigest()[:20]


def fleet_stamp(store: Store, now: float | None = None) -> str | None:
    if store.metrics_key is None:
        return None
    now = time.time() if now is None else now
    pipe = store.r.pipeline(transaction=False)
    for key in store.metrics_read_keys:  # one, or the shards on a cluster
        pipe.hgetall(key)
    keys = store.keys
    every = parts(keys.runs_indexes())  # one set, or its shards on a cluster
    for key in every:
        pipe.zcard(key)
        pipe.zrevrange(key, 0, 0, withscores=True)
    pipe.smembers(keys.paused)
    store.queue_timer_counts(pipe, int(now * 1000))
    res = pipe.execute()
    metrics = merged(res[:len(store.metrics_read_keys)])
    res = res[len(store.metrics_read_keys):]
    sizes, tops = res[:2 * len(every):2], res[1:2 * len(every):2]
    paused, *counts = res[2 * len(every):]
    n = sum(int(x) for x in sizes)
    top = max((row for t in tops for row in t), key=lambda r: (r[1], r[0]), default=None)
    top = [top] if top is not None else []
    timers, due, _oldest = store.timer_counts(counts)
    return _digest((sorted(metrics.items()), n,
                    [(_s(m), s) for m, s in top], sorted(_s(p) for p in paused), timers, due))


def run_stamp(store: Store, run_id: str) -> str:
    pipe = store.r.pipeline(transaction=False)
    pipe.hgetall(store.keys.run(run_id))
    pipe.lindex(store.keys.audit_on(run_id), 0)
    pipe.smembers(store.keys.paused)
    fields, audit, paused = pipe.execute()
    return _digest((sorted((_s(k), _s(v)) for k, v in fields.items()),
                    None if audit is None else _s(audit), sorted(_s(p) for p in paused)))


__all__ = ["fleet_stamp", "run_stamp"]
