"""The Redis state store: runs, steps, events, timers and indexes.

Redis is the source of truth; broker messages carry only ids.  Every write that
must be atomic is a Lua script shipped in ``fanout/_redis/lua``.  Each run's keys
share one hash tag (``{run id}``) so a script touches one cluster slot.

The key layout, the run record's fields and what each script guarantees are in
``docs/internals.md``; flow control's commands are in ``flow_store.py``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from importlib import resources
from typing import Any

import redis

from .._core.event import dumps
from .._core.ids import key_part
from .._core.records import RunInfo, StepRecord
from .._core.run_record import to_run_info
from .flow_store import FlowStore
from .observations import Observations

EVENT_NAME_INDEX_SECONDS = 86400

_SCRIPTS = (
    "create_run",
    "begin_pass",
    "save_step",
    "end_pass",
    "finish_run",
    "renew_lease",
    "claim_due",
    "drop_claimed",
    "cancel_run",
    "resolve_step",
    "begin_branch",
    "end_branch",
    "fc_claim",
    "fc_rate",
    "fc_throttle",
    "fc_singleton",
    "fc_release",
    "fc_debounce",
    "fc_debounce_run",
    "fc_batch",
    "fc_batch_run",
    "fc_slots_acquire",
    "fc_slots_release",
    "cron_cursor",
)


#: The store's errors, under names the layers above use instead of importing redis.
StoreError = redis.RedisError
StoreUnreachable = redis.ConnectionError


def load_script(name: str) -> str:
    """The text of ``lua/<name>.lua``, with each ``--#include <lib>`` line replaced by
    ``lua/<lib>.lua`` (the metrics helpers several scripts share)."""
    folder = resources.files("fanout._redis").joinpath("lua")
    lines = folder.joinpath(f"{name}.lua").read_text("utf-8").splitlines(keepends=True)
    return "".join(
        folder.joinpath(f"{line.split()[1]}.lua").read_text("utf-8")
        if line.startswith("--#include ") else line
        for line in lines
    )


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


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _number(value: str | None) -> float | None:
    try:
        return float(value) if value else None
    except ValueError:
        return None


class Store:
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
    ):
        self.r = client
        self.p = prefix
        self.retention = int(retention)
        # A queued run keeps a timer too: if the broker loses its message, the timer
        # offers the run again after ``watchdog`` seconds (then with backoff).
        self.watchdog = float(watchdog)
        self._scripts = {name: client.register_script(load_script(name)) for name in _SCRIPTS}
        # The metrics hash, passed to the run scripts as KEYS[2] so counting costs no
        # round trip. A cluster cannot: a script touches one slot (the run's) only.
        if metrics is None:
            metrics = not _is_cluster(client)
        self.metrics_key: str | None = f"{prefix}:metrics" if metrics else None
        # The duration histograms: returned by the scripts, buffered in this process
        # and sent every ``metrics_interval`` seconds (observations.py says why).
        self.observations: Observations | None = (
            Observations(client, self.metrics_key, interval=metrics_interval)
            if self.metrics_key is not None else None
        )
        # Concurrency slots held with a lease: (run id, lease field) -> (keys, holder).
        self._slot_holds: dict[tuple[str, str], tuple[list[str], str]] = {}
        self.flow = FlowStore(self)

    def script(self, name: str, keys: Sequence[str], args: Sequence[Any],
               client: Any = None) -> Any:
        """Run one of fanout's Lua scripts (``fanout/_redis/lua/<name>.lua``).

        With a pipeline as ``client`` the script is queued as a bare EVALSHA: redis-py's
        own pipelined scripts cost an extra ``SCRIPT EXISTS`` round trip on every
        execute. Run such pipelines with :meth:`execute`, which loads the scripts and
        retries once when Redis answers NOSCRIPT (after a restart or a flush).
        """
        if client is None:
            return self._scripts[name](keys=list(keys), args=list(args))
        return client.evalsha(self._scripts[name].sha, len(keys), *keys, *args)

    def execute(self, pipe: Any) -> list[Any]:
        """Execute a pipeline holding fanout scripts (see :meth:`script`)."""
        stack = list(pipe.command_stack)
        try:
            return list(pipe.execute())
        except redis.exceptions.NoScriptError:
            for script in self._scripts.values():
                self.r.script_load(script.script)
            pipe.command_stack = stack  # every command of the batch is idempotent
            return list(pipe.execute())

    # -- keys --------------------------------------------------------------------

    def run_key(self, run_id: str) -> str:
        return f"{self.p}:run:{{{run_id}}}"

    def run_keys(self, run_id: str) -> list[str]:
        """KEYS of a run script: the run hash, then the metrics hash when counting."""
        if self.metrics_key is None:
            return [self.run_key(run_id)]
        return [self.run_key(run_id), self.metrics_key]

    def event_key(self, event_id: str) -> str:
        return f"{self.p}:ev:{{{event_id}}}"

    @property
    def timers_key(self) -> str:
        return f"{self.p}:timers"

    def fn_index(self, fn_key: str) -> str:
        return f"{self.p}:idx:fn:{key_part(fn_key)}"

    # -- events ------------------------------------------------------------------

    def store_events(
        self, items: Sequence[tuple[str, str, int, str]], *, route: tuple[str, str] | None = None
    ) -> None:
        """Store (id, json, ts, name) events set-if-absent: the first payload for an id
        wins.  Events are also indexed by name for a day (``wait_for_event`` lookback).

        ``route`` = (batch id, payload) records the router batch about to be published,
        with a watchdog timer, in the same round trip: if the router message is lost
        (or its worker dies before routing), the timer publishes it again.
        """
        pipe = self.r.pipeline(transaction=False)
        if route is not None:
            batch_id, payload = route
            pipe.set(f"{self.p}:route:{{{batch_id}}}", payload, ex=self.retention)
            pipe.zadd(self.timers_key, {f"route:{batch_id}": int((time.time() + self.watchdog) * 1000)})
        by_name: dict[str, dict[str, int]] = {}
        for eid, text, ts, name in items:
            pipe.set(self.event_key(eid), text, nx=True, ex=self.retention)
            by_name.setdefault(name, {})[eid] = ts
        # NX: a re-sent id keeps its first score, so live views and lookbacks see it once.
        pipe.zadd(f"{self.p}:idx:events", {eid: ts for eid, _t, ts, _n in items}, nx=True)
        horizon = int((time.time() - EVENT_NAME_INDEX_SECONDS) * 1000)
        for name, members in by_name.items():
            key = f"{self.p}:idx:evname:{name}"
            pipe.zadd(key, members, nx=True)
            pipe.zremrangebyscore(key, "-inf", horizon)
            if self.metrics_key is not None:
                pipe.hincrby(self.metrics_key, f"c|events|{name}", len(members))
        pipe.execute()

    def load_events(self, event_ids: Sequence[str]) -> list[dict[str, Any] | None]:
        if not event_ids:
            return []
        pipe = self.r.pipeline(transaction=False)
        for eid in event_ids:
            pipe.get(self.event_key(eid))
        return [json.loads(raw) if raw else None for raw in pipe.execute()]

    # -- runs ----------------------------------------------------------------------

    def create_runs(
        self, runs: Sequence[tuple[str, str, Mapping[str, Any]]]
    ) -> list[tuple[str, bool, bool]]:
        """Create (run_id, fn_key, fields) runs set-if-absent.

        Returns (run_id, created, needs_enqueue): a run that already existed but has
        never started is enqueued again (its first message may have been lost).
        """
        if not runs:
            return []
        now_ms = int(time.time() * 1000)
        pipe = self.r.pipeline(transaction=False)
        for run_id, _fn, fields in runs:
            flat: list[Any] = []
            for k, v in fields.items():
                flat.extend((k, v))
            self.script("create_run", self.run_keys(run_id), flat, client=pipe)
        results = self.execute(pipe)
        out: list[tuple[str, bool, bool]] = []
        idx = self.r.pipeline(transaction=False)
        watch = int(now_ms + self.watchdog * 1000)
        for (run_id, fn_key, fields), res in zip(runs, results, strict=True):
            if res is None:
                out.append((run_id, True, True))
                if fields.get("st") == "queued":
                    idx.zadd(self.timers_key, {run_id: watch}, nx=True)
                idx.zadd(f"{self.p}:idx:runs", {run_id: now_ms})
                idx.zadd(self.fn_index(fn_key), {run_id: now_ms})
                for eid in json.loads(fields.get("ev", "[]")):
                    idx.sadd(f"{self.event_key(eid)}:runs", run_id)
                    idx.expire(f"{self.event_key(eid)}:runs", self.retention)
            else:
                st, seq, t0, c = (_s(x) for x in (*res, "")[:4])
                again = st == "queued" and seq == "0" and not t0
                if again:
                    idx.zadd(self.timers_key, {run_id: watch}, nx=True)
                # The run exists; its index entries may not (a Redis out of memory failed
                # the pipeline that writes them after the run was created). Writing them
                # again, NX, under the run's own creation time repairs the listing when
                # the router batch is retried, and changes nothing otherwise.
                created_ms = int(float(c) * 1000) if c else now_ms
                idx.zadd(f"{self.p}:idx:runs", {run_id: created_ms}, nx=True)
                idx.zadd(self.fn_index(fn_key), {run_id: created_ms}, nx=True)
                out.append((run_id, False, again))
        if len(idx):
            idx.execute()
        return out

    def begin_pass(
        self, run_id: str, token: str, lease_until_ms: int, seq: int | None
    ) -> tuple[str, dict[str, str]]:
        """Take the lease; returns ('ok', fields) or (reason, {})."""
        now = time.time()
        pipe = self.r.pipeline(transaction=False)
        # Arm the recovery timer first: if this process dies after taking the lease,
        # the timer fires at lease expiry and another worker resumes the run.
        pipe.zadd(self.timers_key, {run_id: lease_until_ms})
        self.script(
            "begin_pass",
            [self.run_key(run_id)],
            [token, repr(now), repr(lease_until_ms / 1000), "" if seq is None else seq],
            client=pipe,
        )
        _z, res = self.execute(pipe)
        head = _s(res[0])
        if head != "ok":
            if head in ("terminal", "missing", "stale"):
                self.r.zrem(self.timers_key, run_id) if head != "stale" else None
            elif head in ("early", "busy"):
                # Keep a timer armed for the due time / the holder's lease expiry.
                self.r.zadd(self.timers_key, {run_id: int(float(_s(res[1])) * 1000)}, gt=True)
            return head, {}
        it = iter(res[1:])
        fields = {_s(k): _s(v) for k, v in zip(it, it, strict=True)}
        if self.observations is not None:
            since = _number(fields.get("qa")) or _number(fields.get("c"))
            if since is not None:
                self.observations.observe("queue_delay", fields.get("app", ""),
                                          fields.get("fn", ""), now - since)
        return "ok", fields

    def _observed(self, name: str, tail: Sequence[Any]) -> None:
        """Observe what a script's reply ends with: app, fn, then durations."""
        if self.observations is not None and len(tail) > 2:
            self.observations.observe_many(name, _s(tail[0]), _s(tail[1]),
                                           (v for v in tail[2:] if v not in (b"", "")))

    def save_step(
        self,
        run_id: str,
        token: str,
        rec: StepRecord,
        *,
        lease_field: str = "lease",
        group: Sequence[str] = (),
    ) -> tuple[str, StepRecord | None, bool]:
        """Save a step record under our lease: (head, existing final record, joined)."""
        res = self.script("save_step", self.run_keys(run_id), [token, f"s:{rec.id}", dumps(rec.to_json()), lease_field,
                  *(f"s:{sid}" for sid in group)],
        )
        head = _s(res[0])
        if head == "exists":
            return head, StepRecord.from_json(json.loads(_s(res[1]))), bool(int(res[2]))
        self._observed("step_duration", res[2:])
        if head == "ok":
            return head, None, bool(int(res[1]))
        return head, None, False

    def resolve_step(self, run_id: str, rec: StepRecord) -> str:
        """Finish a waiting step from outside its run (exactly once)."""
        return _s(self._scripts["resolve_step"](
            keys=[self.run_key(run_id)],
            args=[f"s:{rec.id}", dumps(rec.to_json()), repr(time.time())],
        ))

    def begin_branch(
        self, run_id: str, step_id: str, token: str, lease_until_ms: int
    ) -> tuple[str, dict[str, str], bool]:
        now = time.time()
        member = f"branch:{run_id}:{step_id}"
        pipe = self.r.pipeline(transaction=False)
        pipe.zadd(self.timers_key, {member: lease_until_ms})
        self.script(
            "begin_branch",
            [self.run_key(run_id)],
            [token, repr(now), repr(lease_until_ms / 1000), f"s:{step_id}", f"bl:{step_id}"],
            client=pipe,
        )
        _z, res = self.execute(pipe)
        head = _s(res[0])
        if head == "ok":
            it = iter(res[1:])
            return head, {_s(k): _s(v) for k, v in zip(it, it, strict=True)}, False
        if head == "busy":
            self.r.zadd(self.timers_key, {member: int(float(_s(res[1])) * 1000)}, gt=True)
        elif head == "terminal":
            self.r.zrem(self.timers_key, member)
        return head, {}, head == "done" and bool(int(res[1]))

    def end_branch(self, run_id: str, step_id: str, token: str) -> None:
        self.script("end_branch", [self.run_key(run_id)], [token, f"bl:{step_id}"])

    def cancel_run(self, run_id: str, reason: Mapping[str, Any]) -> str:
        """Cancel now if the run is between passes, else flag it for its pass."""
        res = self._scripts["cancel_run"](
            keys=self.run_keys(run_id), args=[repr(time.time()), self.retention, dumps(reason)]
        )
        if isinstance(res, list):  # counting: 'cancelled', app, fn, run duration
            self._observed("run_duration", res[1:])
            res = res[0]
        head = _s(res)
        if head == "cancelled":
            self.r.zrem(self.timers_key, run_id)
        return head

    def end_pass(
        self,
        run_id: str,
        token: str,
        status: str,
        *,
        wake: float | None = None,
        awaiting: str | None = None,
        fields: Mapping[str, Any] | None = None,
    ) -> tuple[int | None, bool]:
        """Release the lease; arm the timer when the run must wake at ``wake``.

        Returns (new seq or None if the lease was lost or -1 if cancelled, resolved):
        ``resolved`` says the step named by ``awaiting`` was already finished by a
        resolver, so the run is queued now and the caller must enqueue a pass.
        """
        flat: list[Any] = []
        for k, v in (fields or {}).items():
            flat.extend((k, v))
        pipe = self.r.pipeline(transaction=False)
        self.script(
            "end_pass",
            self.run_keys(run_id),
            [token, status, repr(wake or 0), f"s:{awaiting}" if awaiting else "", *flat],
            client=pipe,
        )
        # The timer now means "wake up" (sleep, retry, wait timeout) or, for a run
        # handed to the broker, "the message may be lost": it replaces the lease timer
        # before the next message is published, so it cannot race the next pass.
        due = wake if wake is not None else time.time() + self.watchdog
        pipe.zadd(self.timers_key, {run_id: int(due * 1000)})
        res = self.execute(pipe)[0]
        if res is None:
            return None, False
        self._observed("step_duration", res[2:])
        return int(res[0]), bool(int(res[1]))

    def drop_timer(self, run_id: str) -> None:
        self.r.zrem(self.timers_key, run_id)

    def finish_run(
        self, run_id: str, token: str, status: str, fields: Mapping[str, Any]
    ) -> int:
        """End the run: 1, or 0 (lease lost, already ended), or 2 when it completed
        with a cancel requested meanwhile (it ends ``cancelled``)."""
        flat: list[Any] = []
        for k, v in fields.items():
            flat.extend((k, v))
        pipe = self.r.pipeline(transaction=False)
        self.script(
            "finish_run",
            self.run_keys(run_id),
            [token, status, repr(time.time()), self.retention, *flat],
            client=pipe,
        )
        pipe.zrem(self.timers_key, run_id)
        res = self.execute(pipe)[0]
        if len(res) > 1:  # counting: app, fn, the run's duration, the attempts'
            self._observed("run_duration", res[1:4])
            self._observed("step_duration", [res[1], res[2], *res[4:]])
        return int(res[0] or 0)

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
            self.script(
                "renew_lease", [self.run_key(run_id)],
                [token, repr(until_ms / 1000), lease_field], client=pipe,
            )
        held = self.execute(pipe)
        pipe = self.r.pipeline(transaction=False)
        lost: list[tuple[str, str]] = []
        for (run_id, lease_field, _token), ok in zip(items, held, strict=True):
            if not ok:
                lost.append((run_id, lease_field))
                continue
            member = run_id if lease_field == "lease" else f"branch:{run_id}:{lease_field[3:]}"
            pipe.zadd(self.timers_key, {member: until_ms}, xx=True)
            slots = self._slot_holds.get((run_id, lease_field))  # concurrency slots
            for key in slots[0] if slots else ():  # live as long as the lease
                pipe.zadd(key, {slots[1]: until_ms}, xx=True)  # type: ignore[index]
        if len(pipe):
            self.execute(pipe)
        return lost

    def hold_slots(self, run_id: str, lease_field: str, slot_keys: list[str], holder: str) -> None:
        """Concurrency slots ``holder`` took: :meth:`renew_leases` renews them with the lease."""
        self._slot_holds[(run_id, lease_field)] = (slot_keys, holder)

    def drop_slot_hold(self, run_id: str, lease_field: str) -> None:
        self._slot_holds.pop((run_id, lease_field), None)

    # -- waits ---------------------------------------------------------------------

    def waits_key(self, name: str, bucket: str | None = None) -> str:
        return f"{self.p}:waits:{name}" if bucket is None else f"{self.p}:waits:{name}|{bucket}"

    def register_wait(
        self, name: str, member: str, spec: Mapping[str, Any], bucket: str | None = None
    ) -> None:
        pipe = self.r.pipeline(transaction=False)
        pipe.hset(self.waits_key(name, bucket), member, dumps(spec))
        if bucket is not None:
            pipe.sadd(f"{self.waits_key(name)}|paths", bucket.split("=", 1)[0])
        pipe.execute()

    def wait_paths(self, names: Sequence[str]) -> dict[str, list[str]]:
        """The ``match`` paths that open waits use, by event name."""
        pipe = self.r.pipeline(transaction=False)
        for name in names:
            pipe.smembers(f"{self.waits_key(name)}|paths")
        return {n: sorted(_s(p) for p in ps) for n, ps in zip(names, pipe.execute(), strict=True)}

    def waits_in(self, keys: Sequence[tuple[str, str | None]]) -> dict[tuple[str, str | None], dict[str, dict[str, Any]]]:
        """Open waits in the given (event name, bucket) hashes: {key: {member: spec}}."""
        if not keys:
            return {}
        pipe = self.r.pipeline(transaction=False)
        for name, bucket in keys:
            pipe.hgetall(self.waits_key(name, bucket))
        out: dict[tuple[str, str | None], dict[str, dict[str, Any]]] = {}
        for key, raw in zip(keys, pipe.execute(), strict=True):
            if raw:
                out[key] = {_s(k): json.loads(v) for k, v in raw.items()}
        return out

    def drop_waits(self, name: str, members: Sequence[str], bucket: str | None = None) -> None:
        if members:
            self.r.hdel(self.waits_key(name, bucket), *members)

    def events_since(self, name: str, since: float) -> list[dict[str, Any]]:
        """Stored events named ``name`` with ts >= ``since`` (oldest first)."""
        ids = [_s(m) for m in self.r.zrangebyscore(
            f"{self.p}:idx:evname:{name}", int(since * 1000), "+inf", start=0, num=1000
        )]
        return [e for e in self.load_events(ids) if e is not None]

    # -- timers --------------------------------------------------------------------

    def claim_due(
        self, *, rearm_s: float, limit: int = 500
    ) -> tuple[list[str], int, float | None]:
        """Claim the due timers: (members, the score they were re-armed at, the time
        in seconds the earliest remaining timer is due, or None if there is none)."""
        now = time.time()
        rearm = int((now + rearm_s) * 1000)
        *due, first = self._scripts["claim_due"](
            keys=[self.timers_key], args=[int(now * 1000), rearm, limit]
        )
        nxt = float(first) / 1000 if first not in (b"", "") else None
        return [_s(m) for m in due], rearm, nxt

    def drop_claimed(self, members: Sequence[str], rearm: int) -> None:
        """Remove timers whose score is still ``rearm`` (nobody re-armed them since)."""
        self.retime(rearm, {m: None for m in members})

    def retime(self, expected: int, members: Mapping[str, int | None]) -> None:
        """Set (or, for None, remove) timers whose score is still ``expected``."""
        if members:
            args: list[Any] = [expected]
            for member, score in members.items():
                args.extend((member, "" if score is None else score))
            self._scripts["drop_claimed"](keys=[self.timers_key], args=args)

    def watchdog_backoff(self, members: Sequence[str]) -> dict[str, int]:
        """The next watchdog due time (ms) for each fired timer: doubling, at most 1 h.

        The count lives in the run hash (``wd`` or ``wd:<step>``) and is reset when a
        pass or branch begins."""
        pipe = self.r.pipeline(transaction=False)
        for member in members:
            if member.startswith("branch:"):
                _, rid, sid = member.split(":", 2)
                pipe.hincrby(self.run_key(rid), f"wd:{sid}", 1)
            else:
                pipe.hincrby(self.run_key(member), "wd", 1)
        now = time.time()
        out: dict[str, int] = {}
        for member, n in zip(members, pipe.execute(), strict=True):
            delay = min(3600.0, self.watchdog * 2 ** max(0, int(n) - 1))
            out[member] = int((now + delay) * 1000)
        return out

    def arm(self, member: str, due: float) -> None:
        self.r.zadd(self.timers_key, {member: int(due * 1000)})

    # -- router batches (recovery of a router that died mid-batch) -------------------

    def begin_route(self, batch_id: str, payload: str, lease_s: float) -> None:
        pipe = self.r.pipeline(transaction=False)
        pipe.zadd(self.timers_key, {f"route:{batch_id}": int((time.time() + lease_s) * 1000)})
        pipe.set(f"{self.p}:route:{{{batch_id}}}", payload, ex=self.retention)
        pipe.execute()

    def end_route(self, batch_id: str) -> None:
        pipe = self.r.pipeline(transaction=False)
        pipe.zrem(self.timers_key, f"route:{batch_id}")
        pipe.delete(f"{self.p}:route:{{{batch_id}}}")
        pipe.execute()

    def route_payload(self, batch_id: str) -> str | None:
        raw = self.r.get(f"{self.p}:route:{{{batch_id}}}")
        return None if raw is None else _s(raw)

    # -- cron cursors ----------------------------------------------------------------

    def cron_key(self, fn_key: str) -> str:
        return f"{self.p}:cron:{key_part(fn_key)}"

    def cron_cursor(self, fn_key: str) -> int | None:
        """The instant (ms) up to which a cron function's ticks are handled."""
        raw = self.r.hget(self.cron_key(fn_key), "at")
        return None if raw is None else int(raw)

    def advance_cron(
        self, fn_key: str, horizon_ms: int, skipped: Sequence[str], run_ms: str
    ) -> None:
        """Expire the skipped tick runs just recorded and move the cursor forward."""
        pipe = self.r.pipeline(transaction=False)
        for rid in skipped:
            pipe.expire(self.run_key(rid), self.retention)
        self.script("cron_cursor", [self.cron_key(fn_key)], [horizon_ms, len(skipped), run_ms],
                    client=pipe)
        self.execute(pipe)

    def store_event_text(self, event_id: str, text: str) -> None:
        """Store one event's JSON, set-if-absent, with the retention TTL."""
        self.r.set(self.event_key(event_id), text, nx=True, ex=self.retention)

    # -- trace context -----------------------------------------------------------------

    def save_trace_context(self, run_id: str, text: str, ttl: int) -> None:
        self.r.set(f"{self.p}:trace:{{{run_id}}}", text, nx=True, ex=ttl)

    def trace_context(self, run_id: str) -> str | None:
        raw = self.r.get(f"{self.p}:trace:{{{run_id}}}")
        return None if not raw else _s(raw)

    # -- inspection ------------------------------------------------------------------

    def run_exists(self, run_id: str) -> bool:
        return bool(self.r.exists(self.run_key(run_id)))

    def run_field(self, run_id: str, field: str) -> str | None:
        raw = self.r.hget(self.run_key(run_id), field)
        return None if raw is None else _s(raw)

    def runs_field(self, run_ids: Sequence[str], field: str) -> list[str | None]:
        """One field of each run, in one round trip (None where the run is gone)."""
        pipe = self.r.pipeline(transaction=False)
        for rid in run_ids:
            pipe.hget(self.run_key(rid), field)
        return [None if v is None else _s(v) for v in pipe.execute()]

    def run_fields(self, run_id: str) -> dict[str, str]:
        raw = self.r.hgetall(self.run_key(run_id))
        return {_s(k): _s(v) for k, v in raw.items()}

    def run_info(self, run_id: str, fields: Mapping[str, str] | None = None) -> RunInfo | None:
        f = dict(fields) if fields is not None else self.run_fields(run_id)
        if not f.get("st"):
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
            pipe.smembers(f"{self.event_key(eid)}:runs")
        found: dict[int, list[str]] = {}
        for (i, _eid), members in zip(wanted, pipe.execute(), strict=True):
            found.setdefault(i, []).extend(sorted(_s(m) for m in members))
        steps = [replace(s, started_runs=found[i]) if i in found else s
                 for i, s in enumerate(info.steps)]
        return replace(info, steps=steps)

    def run_ids(
        self, *, fn_key: str | None = None, event_id: str | None = None, limit: int = 100
    ) -> list[str]:
        if event_id is not None:
            members = self.r.smembers(f"{self.event_key(event_id)}:runs")
            return sorted(_s(m) for m in members)[:limit]
        key = self.fn_index(fn_key) if fn_key else f"{self.p}:idx:runs"
        return [_s(m) for m in self.r.zrevrange(key, 0, limit - 1)]

    def many_run_fields(self, run_ids: Sequence[str]) -> list[dict[str, str]]:
        pipe = self.r.pipeline(transaction=False)
        for rid in run_ids:
            pipe.hgetall(self.run_key(rid))
        return [{_s(k): _s(v) for k, v in raw.items()} for raw in pipe.execute()]

