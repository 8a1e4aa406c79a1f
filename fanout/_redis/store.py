"""The Redis state store: runs, steps, events, timers and indexes.

Redis is the source of truth; broker messages carry only ids.  Every write that
must be atomic is a Lua script (``scripts.py``, ``lua/``); every key is built by
:class:`~fanout._redis.keyspace.Keyspace`; every reply is decoded by ``replies.py``.
:class:`Store` implements the run transitions of
:class:`~fanout._core.run_store.RunStore` (those of a pass in ``run_passes.py``, the
timer sets' claims in ``timer_sets.py``, both mixins of it) and holds the stores of the
other concepts:
flow control (``store.flow``, ``flow_store.py``) and open waits (``store.waits``,
``wait_store.py``).

The key layout, the run record's fields and what each script guarantees are in
``docs/internals.md``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from typing import Any

import redis

from .._core.records import RunInfo
from .._core.run_record import CREATED, EV, ST, lease_step
from .._core.run_store import Created
from .._core.run_view import to_run_info
from .cluster import CROSS_SLOT, counts_on_cluster
from .declared import DeclaredStore, StoredEvents, live
from .event_series import DEFAULT_CAP as DEFAULT_EVENT_NAMES
from .event_series import EventSeries
from .flow_store import FlowStore
from .keyspace import Keyspace
from .merged_index import rev
from .metric_shards import MetricShards
from .node_shards import NodeShards
from .observations import Observations
from .replies import field_map, flatten, text, text_or_none, texts
from .run_passes import RunPasses
from .scripts import Scripts
from .timer_sets import TimerSets
from .wait_store import WaitStore

EVENT_NAME_INDEX_SECONDS = 86400

#: The store's errors, under names the layers above use instead of importing redis.
StoreError = redis.RedisError
StoreUnreachable = redis.ConnectionError


def connect(url: str) -> redis.Redis:
    """A Redis client for ``url``; ``memory://`` is an in-process store (fakeredis)."""
    if url.startswith(("redis+cluster://", "rediss+cluster://")):
        from .cluster import cluster_connect

        cluster: redis.Redis = cluster_connect(url)
        return cluster
    if url.startswith("memory://"):
        from .memory import memory_redis

        client: redis.Redis = memory_redis(url)
        return client
    return redis.Redis.from_url(url, health_check_interval=30, socket_keepalive=True)


def _is_cluster(client: Any) -> bool:
    from redis.cluster import RedisCluster

    return isinstance(client, RedisCluster)


def _created_ms(value: Any, default: int) -> int:
    """A run's creation time (its ``c`` field, epoch seconds) in ms, as the run scripts
    compute it (``lua/_indexes.lua``: the floor)."""
    try:
        return int(float(value) * 1000) if value else default
    except (TypeError, ValueError):
        return default


class Store(RunPasses, TimerSets):
    """Typed operations over the key layout; one instance per process and URL."""

    def __init__(
        self,
        client: redis.Redis,
        *,
        prefix: str = "fanout",
        retention: float = 7 * 86400,
        watchdog: float = 300.0,
        metrics: bool | None = None,
        metrics_interval: float = 1.0,
        metrics_event_names: int = DEFAULT_EVENT_NAMES,
    ):
        self.r = client
        self.p = prefix
        cluster = _is_cluster(client)
        # On a cluster, more timer shards and the lists of all runs (and of a function's)
        # in shards too, so no one key takes much of the commands.
        self.keys = Keyspace(prefix, cluster=cluster)
        self.retention = int(retention)
        # A queued run keeps a timer too: if the broker loses its message, the timer
        # offers the run again after ``watchdog`` seconds (then with backoff).
        self.watchdog = float(watchdog)
        # The metrics hash, passed to the run scripts as KEYS[2] so counting costs no
        # command. On a Redis Cluster (7.0 or later) the counts go to shards, a run's
        # to one on its node (metric_shards.py); the scripts carry the flag for it.
        # Scripts may name keys of other slots on their node (Redis 7.0 or later on
        # every primary): the metrics shard and the timer set (node_shards.py).
        cross = cluster and counts_on_cluster(client)
        if metrics is None or (metrics and cluster):
            metrics = not cluster or cross
        self.scripts = Scripts(client, CROSS_SLOT if cross else "")
        self.metrics_key: str | None = self.keys.metrics if metrics else None
        self.metric_shards: MetricShards | None = (
            MetricShards(client, self.keys.metrics_shards) if metrics and cluster else None)
        # The hashes a reader adds up (none when not counting).
        self.metrics_read_keys: list[str] = (
            [] if not metrics else self.keys.metrics_shards if cluster else [self.keys.metrics])
        # The run indexes (status, version, search attributes) are written by the run
        # scripts (lua/_indexes.lua), which name keys outside the run's slot: not on
        # a cluster, where listings read P:idx:runs and P:idx:fn:<fk> only.
        self.indexed = not _is_cluster(client)
        # The run scripts arm and remove the run's timer themselves (KEYS[4], the
        # timer shard). On a cluster the run's timer lives in a set on the run's node
        # (keyspace.timer_key), named after the run key as the metrics shard is; on
        # Redis < 7 there (no script flags) or for a node with no set, the store sends
        # the timer's write beside the script in the same pipeline.
        self.timers_in_scripts = not cluster or cross
        self.timer_sets: NodeShards | None = None
        if cross:
            homes = self.timer_sets = NodeShards(
                client, self.keys.timer_shards, "timer",
                "its runs' timers are written beside their scripts")
            self.keys.timer_locator = lambda owner: homes.local(self.keys.run(owner), owner)
        # The duration histograms: returned by the scripts, buffered in this process
        # and sent every ``metrics_interval`` seconds (observations.py says why).
        self.observations: Observations | None = (
            Observations(client, self.metrics_key, interval=metrics_interval,
                         shards=self.keys.metrics_shards if self.metric_shards else ())
            if self.metrics_key is not None else None
        )
        # Event names with a series of their own (the rest count as "other").
        self.event_series = EventSeries(self.scripts, self.keys.metric_event_names,
                                        metrics_event_names)
        # Concurrency slots held with a lease: (run id, lease field) -> (keys, holder).
        self._slot_holds: dict[tuple[str, str], tuple[list[str], str]] = {}
        self.flow = FlowStore(client, self.keys, self.scripts, self.retention,
                              indexed=self.indexed)
        self.waits = WaitStore(client, self.keys, self.retention)
        self.declared = DeclaredStore(client, self.keys.declared, self.scripts)
        # Timers claimed from a set not their shard (P:timers, an old shard) -> that set.
        self._legacy_claims: dict[str, str] = {}
        self._timer_heads: dict[str, int] = {}
        self._timer_scans = 0
        self._timer_peeked = float("-inf")
        self.timer_peek_every = 0.25  # the timer thread's poll interval

    # -- keys --------------------------------------------------------------------

    def run_key(self, run_id: str) -> str:
        return self.keys.run(run_id)

    def event_key(self, event_id: str) -> str:
        return self.keys.event(event_id)

    def fn_index(self, fn_key: str) -> str:
        return self.keys.fn_index(fn_key)

    # -- events ------------------------------------------------------------------

    def store_events(
        self, items: Sequence[tuple[str, str, int, str]], *, route: tuple[str, str] | None = None,
        read_declared: bool = False, read_waits: bool = False,
    ) -> StoredEvents:
        """Store (id, json, ts, name) events set-if-absent: the first payload for an id
        wins.  Events are also indexed by name over the retention (the events listing
        by name, and ``wait_for_event`` lookback).

        ``route`` = (batch id, payload) records the router batch about to be published,
        with a watchdog timer, in the same round trip: if the router message is lost
        (or its worker dies before routing), the timer publishes it again.
        ``read_declared`` reads the workers' declared functions in that round trip too
        (``declared.py``), for a sender that may route the batch itself, and
        ``read_waits`` the waits on these event names (after the events are written,
        as the router reads them after loading the events).
        """
        keys = self.keys
        pipe = self.r.pipeline(transaction=False)
        if route is not None:
            batch_id, payload = route
            pipe.set(keys.route(batch_id), payload, ex=self.retention)
            member = keys.route_timer(batch_id)
            pipe.zadd(keys.timer_key(member),
                      {member: int((time.time() + self.watchdog) * 1000)})
        first = 0 if route is None else 2  # the replies of the events' SET NX start here
        by_name: dict[str, dict[str, int]] = {}
        for eid, event_text, ts, name in items:
            pipe.set(keys.event(eid), event_text, nx=True, ex=self.retention)
            by_name.setdefault(name, {})[eid] = ts
        # NX: a re-sent id keeps its first score, so live views and lookbacks see it once.
        pipe.zadd(keys.events_index, {eid: ts for eid, _t, ts, _n in items}, nx=True)
        horizon = int((time.time() - self.retention) * 1000)
        for name, members in by_name.items():
            key = keys.event_name_index(name)
            pipe.zadd(key, members, nx=True)
            pipe.zremrangebyscore(key, "-inf", horizon)
            if self.metrics_key is not None:
                label = self.event_series.label(name)
                key = (self.metric_shards.any(name) if self.metric_shards is not None
                       else self.metrics_key)
                pipe.hincrby(key, f"c|events|{label}", len(members))
        names = sorted(by_name) if read_waits else []
        self.waits.queue_read(pipe, names)
        if read_declared:
            pipe.hgetall(keys.declared)
        replies = pipe.execute()
        tail = replies[len(replies) - 2 * len(names) - int(read_declared):]
        return StoredEvents(
            fresh=[bool(x) for x in replies[first:first + len(items)]],
            declared=live(tail[-1]) if read_declared else None,
            waits=self.waits.parse_read(names, tail[:2 * len(names)]) if read_waits else None,
        )

    def load_events(self, event_ids: Sequence[str]) -> list[dict[str, Any] | None]:
        if not event_ids:
            return []
        pipe = self.r.pipeline(transaction=False)
        for eid in event_ids:
            pipe.get(self.keys.event(eid))
        return [json.loads(raw) if raw else None for raw in pipe.execute()]

    def store_event_text(self, event_id: str, event_text: str) -> None:
        """Store one event's JSON, set-if-absent, with the retention TTL."""
        self.r.set(self.keys.event(event_id), event_text, nx=True, ex=self.retention)

    def events_since(self, name: str, since: float) -> list[dict[str, Any]]:
        """Stored events named ``name`` with ts >= ``since`` (oldest first)."""
        ids = texts(self.r.zrangebyscore(
            self.keys.event_name_index(name), int(since * 1000), "+inf", start=0, num=1000
        ))
        return [e for e in self.load_events(ids) if e is not None]

    def index_event_run(self, event_id: str, run_id: str) -> None:
        """List ``run_id`` among the runs of an event folded into it (debounce, batch)."""
        key = self.keys.event_runs(event_id)
        pipe = self.r.pipeline(transaction=False)
        pipe.sadd(key, run_id)
        pipe.expire(key, self.retention)
        pipe.execute()

    # -- the run transitions (fanout._core.run_store.RunStore) ----------------------

    def create_runs(self, runs: Sequence[tuple[str, str, Mapping[str, Any]]]) -> list[Created]:
        """Create (run_id, fn_key, fields) runs set-if-absent.

        A run that already existed but has never started is enqueued again (its
        first message may have been lost).
        """
        if not runs:
            return []
        keys = self.keys
        now_ms = int(time.time() * 1000)
        pipe = self.r.pipeline(transaction=False)
        for run_id, _fn, fields in runs:
            self.scripts.queue(pipe, "create_run", self.indexed_run_keys(run_id),
                               flatten(fields))
        results = self.scripts.execute(pipe)
        out: list[Created] = []
        idx = self.r.pipeline(transaction=False)
        watch = int(now_ms + self.watchdog * 1000)
        # The functions that have runs (a listing over all functions by version or search
        # attribute unions their sets): one SADD per batch.
        idx.sadd(keys.functions_index, *{fn_key for _r, fn_key, _f in runs})
        for (run_id, fn_key, fields), res in zip(runs, results, strict=True):
            if res is None:
                out.append(Created(run_id, True, True))
                if fields.get(ST) == "queued":
                    idx.zadd(keys.timer_key(run_id), {run_id: watch}, nx=True)
                # Scored by the run's creation time, as the scripts score the other indexes.
                created_ms = _created_ms(fields.get(CREATED), now_ms)
                idx.zadd(keys.runs_index_of(run_id), {run_id: created_ms})
                idx.zadd(keys.fn_index_of(fn_key, run_id), {run_id: created_ms})
                for eid in json.loads(fields.get(EV, "[]")):
                    idx.sadd(keys.event_runs(eid), run_id)
                    idx.expire(keys.event_runs(eid), self.retention)
            else:
                st, seq, t0, c = (text(x) for x in (*res, "")[:4])
                again = st == "queued" and seq == "0" and not t0
                if again:
                    idx.zadd(keys.timer_key(run_id), {run_id: watch}, nx=True)
                # The run exists; its index entries may not (a Redis out of memory failed
                # the pipeline that writes them after the run was created). Writing them
                # again, NX, under the run's own creation time repairs the listing when
                # the router batch is retried, and changes nothing otherwise.
                created_ms = int(float(c) * 1000) if c else now_ms
                idx.zadd(keys.runs_index_of(run_id), {run_id: created_ms}, nx=True)
                idx.zadd(keys.fn_index_of(fn_key, run_id), {run_id: created_ms}, nx=True)
                out.append(Created(run_id, False, again))
        if len(idx):
            idx.execute()
        return out

    def renew_leases(
        self, leases: Iterable[tuple[str, str, str]], until_ms: int
    ) -> list[tuple[str, str]]:
        """Extend (run_id, lease field, token) leases; returns the (run_id, field) pairs
        whose lease is no longer ours (the pass ended, or another worker took over).

        The lease field is ``lease`` for a pass and ``bl:<step>`` for a parallel branch.
        Only a lease still held moves its recovery timer: a process stuck after its
        pass ended must not keep pushing back the timer that would recover the run.
        """
        items = list(leases)
        if not items:
            return []
        pipe = self.r.pipeline(transaction=False)
        for run_id, lease_field, token in items:
            self.scripts.queue(pipe, "renew_lease", [self.keys.run(run_id)],
                               [token, repr(until_ms / 1000), lease_field])
        held = self.scripts.execute(pipe)
        pipe = self.r.pipeline(transaction=False)
        lost: list[tuple[str, str]] = []
        for (run_id, lease_field, _token), ok in zip(items, held, strict=True):
            if not ok:
                lost.append((run_id, lease_field))
                continue
            step = lease_step(lease_field)
            member = run_id if step is None else self.keys.branch_timer(run_id, step)
            pipe.zadd(self.keys.timer_key(member), {member: until_ms}, xx=True)
            slots = self._slot_holds.get((run_id, lease_field))  # concurrency slots
            for key in slots[0] if slots else ():  # live as long as the lease
                pipe.zadd(key, {slots[1]: until_ms}, xx=True)  # type: ignore[index]
        if len(pipe):
            self.scripts.execute(pipe)
        return lost

    def hold_slots(self, run_id: str, lease_field: str, slot_keys: list[str], holder: str) -> None:
        """Concurrency slots ``holder`` took: :meth:`renew_leases` renews them with the lease."""
        self._slot_holds[(run_id, lease_field)] = (slot_keys, holder)

    def drop_slot_hold(self, run_id: str, lease_field: str) -> None:
        self._slot_holds.pop((run_id, lease_field), None)

    # -- router batches (recovery of a router that died mid-batch) -------------------

    def begin_route(self, batch_id: str, payload: str, lease_s: float) -> None:
        pipe = self.r.pipeline(transaction=False)
        member = self.keys.route_timer(batch_id)
        pipe.zadd(self.keys.timer_key(member), {member: int((time.time() + lease_s) * 1000)})
        pipe.set(self.keys.route(batch_id), payload, ex=self.retention)
        pipe.execute()

    def end_route(self, batch_id: str) -> None:
        pipe = self.r.pipeline(transaction=False)
        member = self.keys.route_timer(batch_id)
        pipe.zrem(self.keys.timer_key(member), member)
        pipe.delete(self.keys.route(batch_id))
        pipe.execute()

    def route_payload(self, batch_id: str) -> str | None:
        return text_or_none(self.r.get(self.keys.route(batch_id)))

    # -- cron cursors ----------------------------------------------------------------

    def cron_key(self, fn_key: str) -> str:
        return self.keys.cron(fn_key)

    def cron_cursor(self, fn_key: str) -> int | None:
        """The instant (ms) up to which a cron function's ticks are handled."""
        raw = self.r.hget(self.keys.cron(fn_key), "at")
        return None if raw is None else int(raw)

    def advance_cron(
        self, fn_key: str, horizon_ms: int, skipped: Sequence[str], run_ms: str
    ) -> None:
        """Expire the skipped tick runs just recorded and move the cursor forward."""
        pipe = self.r.pipeline(transaction=False)
        for rid in skipped:
            pipe.expire(self.keys.run(rid), self.retention)
        self.scripts.queue(pipe, "cron_cursor", [self.keys.cron(fn_key)],
                           [horizon_ms, len(skipped), run_ms])
        self.scripts.execute(pipe)

    # -- trace context -----------------------------------------------------------------

    def save_trace_context(self, run_id: str, context: str, ttl: int) -> None:
        self.r.set(self.keys.trace(run_id), context, nx=True, ex=ttl)

    def trace_context(self, run_id: str) -> str | None:
        raw = self.r.get(self.keys.trace(run_id))
        return None if not raw else text(raw)

    # -- inspection ------------------------------------------------------------------

    def run_exists(self, run_id: str) -> bool:
        return bool(self.r.exists(self.keys.run(run_id)))

    def run_field(self, run_id: str, field: str) -> str | None:
        return text_or_none(self.r.hget(self.keys.run(run_id), field))

    def runs_field(self, run_ids: Sequence[str], field: str) -> list[str | None]:
        """One field of each run, in one round trip (None where the run is gone)."""
        pipe = self.r.pipeline(transaction=False)
        for rid in run_ids:
            pipe.hget(self.keys.run(rid), field)
        return [text_or_none(v) for v in pipe.execute()]

    def runs_fields(self, run_ids: Sequence[str], fields: Sequence[str]) -> list[list[str | None]]:
        """Some fields of each run, in one round trip (Nones where the run is gone)."""
        pipe = self.r.pipeline(transaction=False)
        for rid in run_ids:
            pipe.hmget(self.keys.run(rid), list(fields))
        return [[text_or_none(v) for v in row] for row in pipe.execute()]

    def run_fields(self, run_id: str) -> dict[str, str]:
        return field_map(self.r.hgetall(self.keys.run(run_id)))

    def run_info(self, run_id: str, fields: Mapping[str, str] | None = None) -> RunInfo | None:
        f = dict(fields) if fields is not None else self.run_fields(run_id)
        if not f.get(ST):
            return None
        return self.with_started_runs(to_run_info(run_id, f))

    def with_started_runs(self, info: RunInfo, limit: int = 1000) -> RunInfo:
        """``info`` with each send_event step's ``started_runs``: the runs its events
        started (one SMEMBERS per event, in one round trip; at most ``limit`` events)."""
        wanted = [(i, eid) for i, s in enumerate(info.steps) for eid in s.sent_event_ids][:limit]
        if not wanted:
            return info
        pipe = self.r.pipeline(transaction=False)
        for _i, eid in wanted:
            pipe.smembers(self.keys.event_runs(eid))
        found: dict[int, list[str]] = {}
        for (i, _eid), members in zip(wanted, pipe.execute(), strict=True):
            found.setdefault(i, []).extend(sorted(texts(members)))
        steps = [replace(s, started_runs=found[i]) if i in found else s
                 for i, s in enumerate(info.steps)]
        return replace(info, steps=steps)

    def run_ids(
        self, *, fn_key: str | None = None, event_id: str | None = None, limit: int = 100
    ) -> list[str]:
        if event_id is not None:
            return sorted(texts(self.r.smembers(self.keys.event_runs(event_id))))[:limit]
        key = self.keys.runs_indexes(fn_key)
        if isinstance(key, str):
            return texts(self.r.zrevrange(key, 0, limit - 1))
        return [m for m, _s in rev(self.r, key, "+inf", "-inf", 0, limit)]

    def many_run_fields(self, run_ids: Sequence[str]) -> list[dict[str, str]]:
        pipe = self.r.pipeline(transaction=False)
        for rid in run_ids:
            pipe.hgetall(self.keys.run(rid))
        return [field_map(raw) for raw in pipe.execute()]

    def expire_run(self, run_id: str) -> None:
        """Give a run that will never start (a skipped one) the retention TTL."""
        self.r.expire(self.keys.run(run_id), self.retention)
