"""The run transitions a pass makes: the mixin of :class:`~fanout._redis.store.Store`
that begins and ends passes, saves steps and ends runs, each one Lua script.

The scripts that move a run's timer (``begin_pass``, ``end_pass``, ``go_on``,
``finish_run``) get the run's timer set as ``KEYS[4]``, on one Redis and on a Redis
Cluster (where the set is on the run's node: ``node_shards.py``); where they cannot
(Redis < 7 on a cluster, a slot map found stale), the store sends the timer's write
beside the script in one pipeline (:meth:`RunPasses._with_timer`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from typing import Any

import redis

from .._core.event import dumps
from .._core.records import StepRecord
from .._core.run_record import APP, CREATED, FN, LEASE, QUEUED_AT, branch_lease_field, step_field
from .._core.run_store import Begun, BranchBegun, Ended, Saved
from .keyspace import Keyspace
from .metric_shards import MetricShards
from .node_shards import NodeShards, non_local
from .observations import Observations
from .replies import flatten, pairs, text
from .scripts import Scripts


def _number(value: str | None) -> float | None:
    try:
        return float(value) if value else None
    except ValueError:
        return None


class RunPasses:
    """Run transitions of the store (a mixin: :class:`~fanout._redis.store.Store`)."""

    r: redis.Redis
    keys: Keyspace
    scripts: Scripts
    retention: int
    watchdog: float
    metrics_key: str | None
    metric_shards: MetricShards | None
    observations: Observations | None
    indexed: bool
    timers_in_scripts: bool
    timer_sets: NodeShards | None

    def run_keys(self, run_id: str) -> list[str]:
        """KEYS of a run script: the run hash, then the metrics hash when counting."""
        run = self.keys.run(run_id)
        if self.metrics_key is None:
            return [run]
        if self.metric_shards is not None:  # the run key, then a shard of its node
            shard = self.metric_shards.script_key(run)
            return [run] if shard is None else [run, shard]
        return [run, self.metrics_key]

    def indexed_run_keys(self, run_id: str) -> list[str]:
        """KEYS of a run script that keeps the run indexes: the run hash, the metrics
        hash ('' when not counting) and the registry of functions with runs, whose name
        the script builds the index keys from (lua/_indexes.lua)."""
        if not self.indexed:
            return self.run_keys(run_id)
        return [self.keys.run(run_id), self.metrics_key or "", self.keys.functions_index]

    def _pass_keys(self, run_id: str) -> list[str] | None:
        """KEYS of a script that moves the run's timer itself (begin_pass, end_pass,
        go_on, finish_run): the run's keys, then its timer set; None when the store
        moves the timer in the script's pipeline. On a cluster an unused KEYS[2] or
        KEYS[3] is the run key (it must be of the run's slot; the scripts read it as
        absent), KEYS[4] the run key followed by the name of its timer set."""
        if not self.timers_in_scripts:
            return None
        if self.timer_sets is None:  # one Redis
            return [*self.indexed_run_keys(run_id), self.keys.timer_key(run_id)]
        run = self.keys.run(run_id)
        timer = self.timer_sets.script_key(run, run_id)
        if timer is None:
            return None
        shard = self.metric_shards.script_key(run) if self.metric_shards is not None else None
        return [run, shard or run, run, timer]

    def _with_timer(self, name: str, run_id: str, args: Sequence[Any]) -> tuple[bool, Any]:
        """Run a script that moves the run's timer itself: (True, its reply), or
        (False, None) when the caller must use the pipeline beside the script (no such
        script here, or a cluster whose slots moved: the map is read again)."""
        keys = self._pass_keys(run_id)
        if keys is None:
            return False, None
        try:
            return True, self.scripts.run(name, keys, args)
        except redis.exceptions.ResponseError as exc:
            if self.timer_sets is None or not non_local(exc):
                raise
            self.timer_sets.refresh()  # the script wrote nothing (node_shards.py)
            return False, None

    def begin_pass(self, run_id: str, token: str, lease_until_ms: int, seq: int | None) -> Begun:
        """Take the lease; ``ok`` with the run's fields, or why not."""
        now = time.time()
        args = [token, repr(now), repr(lease_until_ms / 1000), "" if seq is None else seq]
        # The script arms the lease's recovery timer with the lease (atomically),
        # or keeps the timer a run that did not begin needs.
        in_script, res = self._with_timer("begin_pass", run_id, [*args, lease_until_ms])
        if not in_script:
            timer = self.keys.timer_key(run_id)
            pipe = self.r.pipeline(transaction=False)
            # Arm the recovery timer first: if this process dies after taking the
            # lease, the timer fires at lease expiry and another worker resumes the run.
            pipe.zadd(timer, {run_id: lease_until_ms})
            self.scripts.queue(pipe, "begin_pass", [self.keys.run(run_id)], args)
            _z, res = self.scripts.execute(pipe)
        head = text(res[0])
        if head != "ok":
            if in_script:  # the script kept the timer right
                return Begun(head, {})
            if head in ("terminal", "missing"):
                self.r.zrem(timer, run_id)
            elif head in ("early", "busy"):
                # Keep a timer armed for the due time / the holder's lease expiry.
                self.r.zadd(timer, {run_id: int(float(text(res[1])) * 1000)}, gt=True)
            return Begun(head, {})
        fields = pairs(res[1:])
        if self.observations is not None:
            since = _number(fields.get(QUEUED_AT)) or _number(fields.get(CREATED))
            if since is not None:
                self.observations.observe("queue_delay", fields.get(APP, ""),
                                          fields.get(FN, ""), now - since)
        return Begun("ok", fields)

    def _observed(self, name: str, tail: Sequence[Any]) -> None:
        """Observe what a script's reply ends with: app, fn, then durations."""
        if self.observations is not None and len(tail) > 2:
            self.observations.observe_many(name, text(tail[0]), text(tail[1]),
                                           (v for v in tail[2:] if v not in (b"", "")))

    def save_step(
        self, run_id: str, token: str, rec: StepRecord, *, lease_field: str = LEASE,
        group: Sequence[str] = (),
    ) -> Saved:
        """Save a step record under our lease (the first final record of a step wins)."""
        res = self.scripts.run("save_step", self.run_keys(run_id), [
            token, step_field(rec.id), dumps(rec.to_json()), lease_field,
            *(step_field(sid) for sid in group),
        ])
        head = text(res[0])
        if head == "exists":
            return Saved(head, StepRecord.from_json(json.loads(text(res[1]))), bool(int(res[2])))
        self._observed("step_duration", res[2:])
        if head == "ok":
            return Saved(head, None, bool(int(res[1])))
        return Saved(head, None, False)

    def resolve_step(self, run_id: str, rec: StepRecord) -> str:
        """Finish a waiting step from outside its run (exactly once)."""
        return text(self.scripts.run("resolve_step", [self.keys.run(run_id)], [
            step_field(rec.id), dumps(rec.to_json()), repr(time.time()),
        ]))

    def begin_branch(
        self, run_id: str, step_id: str, token: str, lease_until_ms: int
    ) -> BranchBegun:
        now = time.time()
        member = self.keys.branch_timer(run_id, step_id)
        pipe = self.r.pipeline(transaction=False)
        pipe.zadd(self.keys.timer_key(member), {member: lease_until_ms})
        self.scripts.queue(
            pipe, "begin_branch", [self.keys.run(run_id)],
            [token, repr(now), repr(lease_until_ms / 1000), step_field(step_id),
             branch_lease_field(step_id)],
        )
        _z, res = self.scripts.execute(pipe)
        head = text(res[0])
        if head == "ok":
            return BranchBegun(head, pairs(res[1:]), False)
        if head == "busy":
            self.r.zadd(self.keys.timer_key(member), {member: int(float(text(res[1])) * 1000)}, gt=True)
        elif head == "terminal":
            self.r.zrem(self.keys.timer_key(member), member)
        return BranchBegun(head, {}, head == "done" and bool(int(res[1])))

    def end_branch(self, run_id: str, step_id: str, token: str) -> None:
        self.scripts.run("end_branch", [self.keys.run(run_id)],
                         [token, branch_lease_field(step_id)])

    def cancel_run(self, run_id: str, reason: Mapping[str, Any]) -> str:
        """Cancel now if the run is between passes, else flag it for its pass."""
        res = self.scripts.run("cancel_run", self.indexed_run_keys(run_id),
                               [repr(time.time()), self.retention, dumps(reason)])
        if isinstance(res, list):  # counting: 'cancelled', app, fn, run duration
            self._observed("run_duration", res[1:])
            res = res[0]
        head = text(res)
        if head == "cancelled":
            self.r.zrem(self.keys.timer_key(run_id), run_id)
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
    ) -> Ended:
        """Release the lease; arm the timer when the run must wake at ``wake``.

        The new seq is None if the lease was lost, -1 if a cancel is pending;
        ``resolved`` says the step named by ``awaiting`` was already finished by a
        resolver, so the run is queued now and the caller must enqueue a pass.
        """
        args = [token, status, repr(wake or 0), step_field(awaiting) if awaiting else "",
                *flatten(fields or {})]
        # The timer now means "wake up" (sleep, retry, wait timeout) or, for a run
        # handed to the broker, "the message may be lost": it replaces the lease timer
        # before the next message is published, so it cannot race the next pass.
        due = int((wake if wake is not None else time.time() + self.watchdog) * 1000)
        in_script, res = self._with_timer("end_pass", run_id, [*args, due])
        if not in_script:
            pipe = self.r.pipeline(transaction=False)
            self.scripts.queue(pipe, "end_pass", self.indexed_run_keys(run_id), args)
            pipe.zadd(self.keys.timer_key(run_id), {run_id: due})
            res = self.scripts.execute(pipe)[0]
        if res is None:
            return Ended(None, False)
        self._observed("step_duration", res[2:])
        return Ended(int(res[0]), bool(int(res[1])))

    def go_on(self, run_id: str, token: str, lease_until_ms: int,
              fields: Mapping[str, Any]) -> Begun:
        """End a pass that goes on to the run's next step and begin that pass under the
        same lease, renewed to ``lease_until_ms`` (0: kept as it is, with its timer)
        (lua/go_on.lua): ``ok`` with the run's fields; ``lost`` (nothing written);
        ``cancel`` (``fields`` written, the lease kept: the caller finishes the run as
        cancelled)."""
        now = time.time()
        args = [token, repr(now), repr(lease_until_ms / 1000) if lease_until_ms else "0",
                lease_until_ms, *flatten(fields)]
        in_script, res = self._with_timer("go_on", run_id, args)
        if not in_script:
            timer = self.keys.timer_key(run_id)
            pipe = self.r.pipeline(transaction=False)
            self.scripts.queue(pipe, "go_on", self.indexed_run_keys(run_id), args)
            # Only a timer still armed moves, and only later: a lost lease's run keeps
            # its new holder's timer, an ended run gets none back.
            if lease_until_ms:
                pipe.zadd(timer, {run_id: lease_until_ms}, xx=True, gt=True)
            res = self.scripts.execute(pipe)[0]
        if not res:
            return Begun("lost", {})
        k = int(res[3])
        self._observed("step_duration", [res[1], res[2], *res[4:4 + k]])
        head = text(res[0])
        if head != "ok":
            return Begun(head, {})
        out = pairs(res[4 + k:])
        if self.observations is not None:
            since = _number(out.get(QUEUED_AT))
            if since is not None:
                self.observations.observe("queue_delay", out.get(APP, ""), out.get(FN, ""),
                                          now - since)
        return Begun("ok", out)

    def finish_run(self, run_id: str, token: str, status: str, fields: Mapping[str, Any]) -> int:
        """End the run: 1, or 0 (lease lost, already ended), or 2 when it completed
        with a cancel requested meanwhile (it ends ``cancelled``)."""
        args = [token, status, repr(time.time()), self.retention, *flatten(fields)]
        in_script, res = self._with_timer("finish_run", run_id, args)
        if not in_script:
            pipe = self.r.pipeline(transaction=False)
            self.scripts.queue(pipe, "finish_run", self.indexed_run_keys(run_id), args)
            pipe.zrem(self.keys.timer_key(run_id), run_id)
            res = self.scripts.execute(pipe)[0]
        if len(res) > 1:  # counting: app, fn, the run's duration, the attempts'
            self._observed("run_duration", res[1:4])
            self._observed("step_duration", [res[1], res[2], *res[4:]])
        return int(res[0] or 0)
