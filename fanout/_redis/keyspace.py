"""Every Redis key fanout writes, built in one place.

``P`` is the prefix (``fanout`` by default).  A run's keys carry its id as the hash
tag (``{RID}``), an event's its id, a flow-control key a digest of the function and
the key's value, so a script touches one cluster slot; ``docs/internals.md`` lists
the layout.  Timer members are built here too: a run id, a parallel branch
``branch:<run>:<step>``, a router batch ``route:<batch>``.  They live in
:data:`TIMER_SHARDS` sorted sets ``P:timers:{t<k>}``, ``k`` a hash of the run (or
batch) id: 16 sets ``P:timers:{t<k>}`` on one Redis. On a Redis Cluster, where one
of those 16 took more than 2 % of the store's commands and half of them sat on one of
three masters, :data:`CLUSTER_TIMER_SHARDS` sets ``P:timers:{T<k>.<i>}``, the k-th in
the k-th 48th of the slots (:func:`shard_tags`), so every master of an evenly split
cluster holds its share (each set more costs the timer scan one command); there a
timer goes to a set on the node of its run's slot (:attr:`Keyspace.timer_locator`), so
the run's scripts move it (``node_shards.py``). The sets of
earlier versions (``P:timers``, and on a cluster the 16 ``{t<k>}``) are still
scanned, less often, and a timer claimed from a set that is not its home is moved
home, so they drain.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Sequence
from functools import cache

from redis.crc import key_slot

from .._core.flow_math import bucket
from .._core.ids import key_part
from .._core.run_store import branch_timer

TIMER_SHARDS = 16  # sorted sets holding the timers, each in a cluster slot of its own
CLUSTER_TIMER_SHARDS = 48  # on a Redis Cluster, spread by slot range (16 per master of 3)
METRICS_SHARDS = 16  # metrics hashes on a Redis Cluster (metric_shards.py)
INDEX_SHARDS = 16  # on a Redis Cluster, the sets P:idx:runs and P:idx:fn:<fk> are each this many


@cache
def shard_tags(n: int, letter: str) -> list[str]:
    """Hash tags ``<letter><k>.<i>``, the k-th in the k-th of ``n`` equal ranges of the
    16,384 cluster slots, so a cluster whose masters each hold a contiguous range of at
    least 16384 / n slots has a shard on every master."""
    width, out = 16384 // n, []  # (i is found within a few dozen tries)
    for k in range(n):
        i = 0
        while key_slot(f"{letter}{k}.{i}".encode()) // width != k:
            i += 1
        out.append(f"{letter}{k}.{i}")
    return out


def metrics_shard_tags(n: int = METRICS_SHARDS) -> list[str]:
    """The hash tags ``m<k>.<i>`` of the metrics shards (:func:`shard_tags`)."""
    return shard_tags(n, "m")


def timer_owner(member: str) -> str:
    """The run id (or router batch id) a timer belongs to."""
    kind, _, rest = member.partition(":")
    return rest.split(":", 1)[0] if kind in ("branch", "route") and rest else member


def _timer_hash(member: str) -> int:
    """The hash that places a timer: of its run id (or router batch id)."""
    return zlib.crc32(timer_owner(member).encode())


class Keyspace:
    def __init__(self, prefix: str = "fanout", *, cluster: bool = False) -> None:
        self.prefix = prefix
        p = prefix
        self.cluster = cluster
        self.timers = f"{p}:timers"  # before the shards: drained, never written
        one_redis = [f"{p}:timers:{{t{k}}}" for k in range(TIMER_SHARDS)]
        self.timer_shards = ([f"{p}:timers:{{{t}}}" for t in
                              shard_tags(CLUSTER_TIMER_SHARDS, "T")] if cluster else one_redis)
        # Sets no timer is armed in any more, scanned until they are empty.
        self.old_timer_keys = [*one_redis, self.timers] if cluster else [self.timers]
        # On a cluster, the store sets this: a timer's set on its owner's node (owner ->
        # set, None when that node holds none); timer_key then places timers by it.
        self.timer_locator: Callable[[str], str | None] | None = None
        self.runs_index = f"{p}:idx:runs"
        # On a cluster every run is listed in the shard of its id,
        # P:idx:runs:{r<k>.<i>} and P:idx:fn:<fk>:{r<k>.<i>}; readers merge the shards
        # and the unsharded set of earlier versions (run_index.py).
        self.index_tags = shard_tags(INDEX_SHARDS, "r") if cluster else []
        self.runs_index_shards = [f"{p}:idx:runs:{{{t}}}" for t in self.index_tags]
        self.events_index = f"{p}:idx:events"
        self.functions_index = f"{p}:idx:fns"
        self.reindex_lock = f"{p}:idx:reindexing"
        # Set once the backfill is done; a new index bumps its generation (":2": the
        # runs by event name) so the backfill runs again on an upgraded store.
        self.reindexed = f"{p}:idx:reindexed:2"
        # The ended feed (run id -> ended, ms) the history store's copier reads, its
        # cursor and the lease of the one process copying (fanout/_redis/ended_feed.py).
        self.ended_index = f"{p}:idx:ended"
        self.history_cursor = f"{p}:history:cursor"
        self.history_lease = f"{p}:history:lease"
        self.metrics = f"{p}:metrics"
        # On a Redis Cluster the counters go to these, one per slot range (metric_shards.py).
        self.metrics_shards = [f"{p}:metrics:{{{t}}}" for t in metrics_shard_tags()]
        # The event names counted under their own name in the metrics (the rest: "other").
        self.metric_event_names = f"{p}:metrics:evnames"
        self.paused = f"{p}:paused"
        # What the workers declare, for routing in the sender (fanout/_redis/declared.py).
        self.declared = f"{p}:declared"
        self.ingest_keys = f"{p}:ingest:keys"
        self.audit = f"{p}:audit"

    # -- runs and events --------------------------------------------------------------

    def run(self, run_id: str) -> str:
        return f"{self.prefix}:run:{{{run_id}}}"

    def event(self, event_id: str) -> str:
        return f"{self.prefix}:ev:{{{event_id}}}"

    def event_runs(self, event_id: str) -> str:
        """The runs an event started (or was folded into)."""
        return f"{self.prefix}:ev:{{{event_id}}}:runs"

    def event_resumed(self, event_id: str) -> str:
        """The runs whose ``wait_for_event`` an event ended."""
        return f"{self.prefix}:ev:{{{event_id}}}:resumed"

    def fn_index(self, fn_key: str) -> str:
        return f"{self.prefix}:idx:fn:{key_part(fn_key)}"

    def fn_index_pattern(self) -> str:
        return f"{self.prefix}:idx:fn:*"

    def _index_tag(self, run_id: str) -> str:
        return self.index_tags[zlib.crc32(run_id.encode()) % len(self.index_tags)]

    def runs_index_of(self, run_id: str) -> str:
        """The set of every run that lists ``run_id``: its shard on a cluster."""
        if not self.index_tags:
            return self.runs_index
        return f"{self.runs_index}:{{{self._index_tag(run_id)}}}"

    def fn_index_of(self, fn_key: str, run_id: str) -> str:
        """The set of a function's runs that lists ``run_id``: its shard on a cluster."""
        if not self.index_tags:
            return self.fn_index(fn_key)
        return f"{self.fn_index(fn_key)}:{{{self._index_tag(run_id)}}}"

    @property
    def stuck_sweep(self) -> str:
        """The score where the watchdog's walk over every run stopped (shared by the
        workers, so each minute's window follows the last)."""
        return f"{self.prefix}:stuck:sweep"

    @property
    def stuck_suspects(self) -> str:
        """Runs the walk saw stuck once, read again at every check until they move or
        are handled (so the second sighting does not wait a whole walk)."""
        return f"{self.prefix}:stuck:suspects"

    def runs_indexes(self, fn_key: str | None = None) -> str | tuple[str, ...]:
        """What lists every run (of one function, or of all): one sorted set, or on a
        cluster its shards and the unsharded set of earlier versions, read merged."""
        base = self.fn_index(fn_key) if fn_key else self.runs_index
        if not self.index_tags:
            return base
        return (*(f"{base}:{{{t}}}" for t in self.index_tags), base)

    # -- the run indexes the run scripts keep (lua/_indexes.lua names them the same way) --

    def status_index(self, status: str, fn_key: str | None = None) -> str:
        """The runs of a status group (``active`` or a terminal status), of one
        function or of all (the active runs are kept per function only)."""
        if fn_key is None:
            if status == "active":
                raise ValueError("the active runs are kept per function (union them)")
            return f"{self.prefix}:idx:st:{status}"
        base = self.fn_index(fn_key)
        return f"{base}|active" if status == "active" else f"{base}|st:{status}"

    def version_index(self, fn_key: str | None, version: str) -> str:
        """The runs (of one function, or of all) created on a version or with a pass
        that ran on it."""
        if fn_key is None:
            return f"{self.prefix}:idx:ver:{key_part(version)}"
        return f"{self.fn_index(fn_key)}|v:{key_part(version)}"

    def run_event_name_index(self, fn_key: str | None, name: str) -> str:
        """The runs (of one function, or of all) started by an event named ``name`` (a
        batch run: by any of its events). Not :meth:`event_name_index`, the events."""
        if fn_key is None:
            return f"{self.prefix}:idx:en:{key_part(name)}"
        return f"{self.fn_index(fn_key)}|en:{key_part(name)}"

    def search_index(self, fn_key: str, path: str, value: str) -> str:
        """The runs of one function whose search attribute ``path`` has ``value``
        (:func:`fanout._core.search.value_part` encodes it)."""
        return f"{self.prefix}:idx:sa:{key_part(fn_key)}|{key_part(path)}|{value}"

    def index_patterns(self) -> list[str]:
        """Every run index but the events' (what pruning walks)."""
        return [f"{self.prefix}:idx:st:*", f"{self.prefix}:idx:ver:*",
                f"{self.prefix}:idx:en:*", f"{self.prefix}:idx:sa:*"]

    def temp_index(self, name: str) -> str:
        """A short-lived sorted set a query builds (a union or an intersection)."""
        return f"{self.prefix}:idx:tmp:{name}"

    def event_name_index(self, name: str) -> str:
        return f"{self.prefix}:idx:evname:{name}"

    def event_name_index_pattern(self) -> str:
        return f"{self.prefix}:idx:evname:*"

    def trace(self, run_id: str) -> str:
        return f"{self.prefix}:trace:{{{run_id}}}"

    # -- timers and router batches ------------------------------------------------------

    def timer_key(self, member: str) -> str:
        """The timer shard of a member: by its run id (or router batch id), so a run's
        timers share one set; on a cluster, one of the sets on the node of that id's
        slot (:attr:`timer_locator`), so the run's scripts move its timer themselves."""
        if self.timer_locator is not None:
            home = self.timer_locator(timer_owner(member))
            if home is not None:
                return home
        return self.timer_shards[_timer_hash(member) % len(self.timer_shards)]

    def timer_homes(self, member: str) -> list[str]:
        """Every set ``member`` can be in, its shard first: on a cluster the set that
        placed it by its id alone (earlier versions, or a node without a set), its set
        among the 16 of earlier versions, then the old single set."""
        home = self.timer_key(member)
        if not self.cluster:
            return [home, self.timers]
        by_id = self.timer_shards[_timer_hash(member) % len(self.timer_shards)]
        return [home, *([by_id] if by_id != home else []),
                self.old_timer_keys[_timer_hash(member) % TIMER_SHARDS], self.timers]

    @property
    def timer_keys(self) -> list[str]:
        """Every set a timer can be in: the shards, then the sets of earlier versions
        (the old single set last)."""
        return [*self.timer_shards, *self.old_timer_keys]

    def route(self, batch_id: str) -> str:
        return f"{self.prefix}:route:{{{batch_id}}}"

    branch_timer = staticmethod(branch_timer)

    @staticmethod
    def route_timer(batch_id: str) -> str:
        return f"route:{batch_id}"

    # -- waits, cron, pause ----------------------------------------------------------------

    def waits(self, name: str, bucket: str | None = None) -> str:
        return f"{self.prefix}:waits:{name}" if bucket is None else \
            f"{self.prefix}:waits:{name}|{bucket}"

    def wait_paths(self, name: str) -> str:
        return f"{self.prefix}:waits:{name}|paths"

    def cron(self, fn_key: str) -> str:
        return f"{self.prefix}:cron:{key_part(fn_key)}"

    def pause_flag(self, fn_key: str) -> str:
        return f"{self.prefix}:pause:{{{fn_key}}}"

    def parked(self, fn_key: str) -> str:
        return f"{self.prefix}:parked:{{{fn_key}}}"

    # -- flow control --------------------------------------------------------------------

    def flow(self, kind: str, *parts: str) -> str:
        """``P:fc:<kind>:{B}``: one flow-control key under its own hash tag."""
        return f"{self.prefix}:fc:{kind}:{{{bucket(*parts)}}}"

    def concurrency(self, app_id: str, buckets: Sequence[str]) -> list[str]:
        """slots, waiting [, slots, waiting]: all of an app's under one hash tag."""
        out: list[str] = []
        for b in buckets:
            out += [f"{self.prefix}:fc:cc:{{{app_id}}}:{b}", f"{self.prefix}:fc:ccw:{{{app_id}}}:{b}"]
        return out

    # -- the HTTP endpoint -------------------------------------------------------------------

    def ingest_seen(self, token: str) -> str:
        return f"{self.prefix}:ingest:seen:{token}"

    def ingest_rate(self, key_id: str, window: int, n: int) -> str:
        """Events an ingest key sent in window ``n`` of ``window`` seconds."""
        return f"{self.prefix}:ingest:rate:{key_id}:{window}:{n}"

    # -- the dashboard ---------------------------------------------------------------------

    def audit_on(self, target: str) -> str:
        """The audit records about one run, event or function."""
        return f"{self.prefix}:audit:on:{target}"

    # -- bulk jobs (cancel or replay by query, in batches on the workers) -----------------

    def bulk_job(self, job_id: str) -> str:
        """One bulk job's record (a hash); its id is the hash tag, as for a run."""
        return f"{self.prefix}:bulk:{{{job_id}}}"

    def bulk_runs(self, job_id: str) -> str:
        """The runs a bulk job acts on: the matching runs when it was submitted."""
        return f"{self.prefix}:bulk:{{{job_id}}}:runs"

    @property
    def bulk_jobs(self) -> str:
        """Every bulk job, scored by its creation time (ms)."""
        return f"{self.prefix}:bulk:jobs"

    # -- the metrics' rollups (beside the metrics hash, whatever its name) ------------------

    @staticmethod
    def rollup(metrics: str, tier: str, start: int) -> str:
        return f"{metrics}:roll:{tier}:{start}"

    @staticmethod
    def rollup_last(metrics: str) -> str:
        return f"{metrics}:roll:last"

    @staticmethod
    def rollup_claim(metrics: str, minute: int) -> str:
        return f"{metrics}:roll:claim:{minute}"
