"""Bulk jobs: cancel or replay every run a query matches, in batches on the workers.

Key layout (``P`` is the store's prefix)::

    P:bulk:{<job>}      hash   the job: kind, query, who, reason, total, done, failed,
                               skipped, cursor, state, created, ended, batch
    P:bulk:{<job>}:runs zset   the runs it acts on: the matching runs when it was
                               submitted (a copy of the query's index, scored by
                               creation time), read by rank from ``cursor``
    P:bulk:jobs         zset   every job, scored by creation time (ms)

The copy is taken on the server in one transaction (``ZUNIONSTORE`` of the index,
then the time window cut off; on a cluster, where the index is in another slot, a
chunk at a time): the job's total is exact, and its batches read a set
that nothing else changes, so a batch redone after a worker died reads the same runs.
A batch's counts are added, and the cursor moved, only when the cursor is still where
the batch began (``WATCH``): a batch is counted once however often it runs.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

import redis

from .merged_index import Index
from .replies import text, texts
from .store import Store

STATES = ("queued", "running", "done", "cancelled")
KINDS = ("cancel", "replay")
FINISHED = ("done", "cancelled")


@dataclass(frozen=True)
class BulkQuery:
    """What a bulk job selects: the filters of a run listing (all optional, all exact
    from the indexes)."""

    fn_key: str | None = None
    status: str | None = None
    since: float | None = None
    until: float | None = None
    version: str | None = None
    search: dict[str, Any] = field(default_factory=dict)
    include_replays: bool = False
    event_name: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"fn_key": self.fn_key, "status": self.status, "since": self.since,
                "until": self.until, "version": self.version, "search": dict(self.search),
                "include_replays": self.include_replays, "event_name": self.event_name}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> BulkQuery:
        return cls(fn_key=data.get("fn_key"), status=data.get("status"),
                   since=data.get("since"), until=data.get("until"),
                   version=data.get("version"), search=dict(data.get("search") or {}),
                   include_replays=bool(data.get("include_replays")),
                   event_name=data.get("event_name") or None)  # none in a job from before

    def describe(self) -> str:
        parts = [f"{k}={v}" for k, v in (("fn", self.fn_key), ("status", self.status),
                                          ("version", self.version),
                                          ("event", self.event_name)) if v]
        parts += [f"{k}={v}" for k, v in self.search.items()]
        parts += [f"{k}={v}" for k, v in (("since", self.since), ("until", self.until))
                  if v is not None]
        return " ".join(parts) or "all runs"


@dataclass(frozen=True)
class BulkJob:
    """A bulk cancel or replay: its query, who asked and why, and its progress.

    ``total`` runs matched when it was submitted; each ends up ``done`` (cancelled, or
    replayed), ``failed`` or ``skipped`` (already ended; for a replay, a replay itself
    or an event with a newer run). A dry run has no ``id`` and state ``dry-run``;
    ``sample`` holds the first matching run ids."""

    id: str
    kind: str
    query: BulkQuery
    who: str = ""
    reason: str = ""
    total: int = 0
    done: int = 0
    failed: int = 0
    skipped: int = 0
    cursor: int = 0
    state: str = "queued"
    created_at: float = 0.0
    ended_at: float | None = None
    batch: int = 500
    sample: tuple[str, ...] = ()
    last_error: str = ""

    @property
    def finished(self) -> bool:
        return self.state in FINISHED

    @property
    def processed(self) -> int:
        return self.done + self.failed + self.skipped

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "kind": self.kind, "query": self.query.to_json(),
                "who": self.who, "reason": self.reason, "total": self.total,
                "done": self.done, "failed": self.failed, "skipped": self.skipped,
                "cursor": self.cursor, "state": self.state, "created_at": self.created_at,
                "ended_at": self.ended_at, "batch": self.batch, "sample": list(self.sample),
                "last_error": self.last_error}

    def fields(self) -> dict[str, str]:
        return {"kind": self.kind, "query": json.dumps(self.query.to_json()),
                "who": self.who, "reason": self.reason, "total": str(self.total),
                "done": str(self.done), "failed": str(self.failed),
                "skipped": str(self.skipped), "cursor": str(self.cursor),
                "state": self.state, "created": repr(self.created_at),
                "ended": "" if self.ended_at is None else repr(self.ended_at),
                "batch": str(self.batch), "sample": json.dumps(list(self.sample)),
                "last_error": self.last_error}

    @classmethod
    def from_fields(cls, job_id: str, f: dict[str, str]) -> BulkJob:
        return cls(id=job_id, kind=f.get("kind", ""),
                   query=BulkQuery.from_json(json.loads(f.get("query") or "{}")),
                   who=f.get("who", ""), reason=f.get("reason", ""),
                   total=int(f.get("total") or 0), done=int(f.get("done") or 0),
                   failed=int(f.get("failed") or 0), skipped=int(f.get("skipped") or 0),
                   cursor=int(f.get("cursor") or 0), state=f.get("state", ""),
                   created_at=float(f.get("created") or 0),
                   ended_at=float(f["ended"]) if f.get("ended") else None,
                   batch=int(f.get("batch") or 500),
                   sample=tuple(json.loads(f.get("sample") or "[]")),
                   last_error=f.get("last_error", ""))


class BulkStore:
    """The bulk jobs of one store (see the module docstring)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.r: Any = store.r
        self.keys = store.keys
        self.ttl = max(store.retention, 86400) + 86400

    def create(self, job: BulkJob, index_key: Index, *, since: float | None,
               until: float | None, sample: int = 10) -> BulkJob:
        """Record ``job`` with a copy of the runs of ``index_key`` in the window, in one
        transaction; returns it with its exact ``total`` and first ids."""
        runs = self.keys.bulk_runs(job.id)
        if self.store.indexed and isinstance(index_key, str):
            pipe = self.r.pipeline(transaction=True)
            pipe.zunionstore(runs, [index_key])
            if since is not None:
                pipe.zremrangebyscore(runs, "-inf", f"({round(since * 1000)}")
            if until is not None:
                pipe.zremrangebyscore(runs, f"({round(until * 1000)}", "+inf")
            pipe.execute()
        else:  # a cluster: the index is in other slots (shards); copy it a chunk at a time
            from .run_index import RunIndex

            for chunk in RunIndex(self.store).walk(index_key, since=since, until=until):
                self.r.zadd(runs, dict(chunk))
        pipe = self.r.pipeline(transaction=False)
        pipe.zcard(runs)
        pipe.zrange(runs, 0, sample - 1)
        pipe.expire(runs, self.ttl)
        res = pipe.execute()
        total, first = int(res[0]), tuple(texts(res[1]))
        made = BulkJob(**{**job.__dict__, "total": total, "sample": first})
        if total == 0:
            made = BulkJob(**{**made.__dict__, "state": "done", "ended_at": made.created_at})
        key = self.keys.bulk_job(job.id)
        pipe = self.r.pipeline(transaction=False)
        pipe.hset(key, mapping=made.fields())
        pipe.expire(key, self.ttl)
        pipe.zadd(self.keys.bulk_jobs, {job.id: round(job.created_at * 1000)})
        pipe.zremrangebyscore(self.keys.bulk_jobs, "-inf",
                              f"({round((job.created_at - self.ttl) * 1000)}")
        pipe.execute()
        return made

    def get(self, job_id: str) -> BulkJob | None:
        raw = self.r.hgetall(self.keys.bulk_job(job_id))
        if not raw:
            return None
        return BulkJob.from_fields(job_id, {text(k): text(v) for k, v in raw.items()})

    def jobs(self, limit: int = 50, offset: int = 0) -> list[BulkJob]:
        """The jobs, newest first (those past the retention left out)."""
        ids = texts(self.r.zrevrange(self.keys.bulk_jobs, offset, offset + limit - 1))
        found = [self.get(i) for i in ids]
        return [j for j in found if j is not None]

    def runs(self, job_id: str, start: int, count: int) -> list[str]:
        """The job's runs from rank ``start`` (oldest first)."""
        return texts(self.r.zrange(self.keys.bulk_runs(job_id), start, start + count - 1))

    def start(self, job_id: str) -> BulkJob | None:
        """Mark a queued job running; returns it (None when unknown)."""
        key = self.keys.bulk_job(job_id)
        self._cas(key, "state", "queued", {"state": "running"})
        return self.get(job_id)

    def _cas(self, key: str, name: str, expect: str, mapping: dict[str, str]) -> bool:
        """Set ``mapping`` on hash ``key`` when its field ``name`` is ``expect``."""
        with self.r.pipeline(transaction=True) as pipe:
            while True:
                try:
                    pipe.watch(key)
                    if text(pipe.hget(key, name) or b"") != expect:
                        pipe.unwatch()
                        return False
                    pipe.multi()
                    pipe.hset(key, mapping=mapping)
                    pipe.execute()
                    return True
                except redis.WatchError:
                    continue

    def commit(self, job_id: str, start: int, end: int, *, done: int, failed: int,
               skipped: int, last_error: str = "", now: float | None = None,
               ) -> tuple[BulkJob | None, str]:
        """Count one batch (runs ``start`` to ``end``) and move the cursor to ``end``,
        only if the cursor is still ``start``: a batch redone is counted once. Returns
        the job as it is now, and what this call did: ``counted``, ``finished`` (counted
        the last batch) or ``stale`` (someone else counted this batch)."""
        outcome = "stale"
        key = self.keys.bulk_job(job_id)
        with self.r.pipeline(transaction=True) as pipe:
            while True:
                try:
                    pipe.watch(key)
                    raw = pipe.hgetall(key)
                    if not raw:
                        pipe.unwatch()
                        return None, outcome
                    f = {text(k): text(v) for k, v in raw.items()}
                    if int(f.get("cursor") or 0) != start:
                        pipe.unwatch()
                        outcome = "stale"
                        break
                    total = int(f.get("total") or 0)
                    pipe.multi()
                    pipe.hincrby(key, "done", done)
                    pipe.hincrby(key, "failed", failed)
                    pipe.hincrby(key, "skipped", skipped)
                    change = {"cursor": str(end)}
                    if last_error:
                        change["last_error"] = last_error[:500]
                    if end >= total and f.get("state") not in FINISHED:
                        change["state"] = "done"
                        change["ended"] = repr(time.time() if now is None else now)
                    pipe.hset(key, mapping=change)
                    pipe.execute()
                    outcome = "finished" if "state" in change else "counted"
                    break
                except redis.WatchError:
                    continue
        return self.get(job_id), outcome

    def cancel(self, job_id: str, now: float | None = None) -> BulkJob | None:
        """Stop a job after its current batch; a finished job stays as it is."""
        return self.stop(job_id, now)[0]

    def stop(self, job_id: str, now: float | None = None) -> tuple[BulkJob | None, bool]:
        """As :meth:`cancel`; also whether this call is the one that stopped it (False
        when it had finished, or was cancelled, already)."""
        key = self.keys.bulk_job(job_id)
        at = repr(time.time() if now is None else now)
        stopped = False
        for state in ("queued", "running"):
            if self._cas(key, "state", state, {"state": "cancelled", "ended": at}):
                stopped = True
                break
        return self.get(job_id), stopped


__all__ = ["BulkJob", "BulkQuery", "BulkStore", "KINDS", "STATES"]
