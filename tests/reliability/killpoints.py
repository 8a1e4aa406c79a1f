"""Test-only crash hooks: ``kill -9`` a worker at a chosen point of a chosen run.

A test writes a *plan* for a run id before the run starts::

    plan(r, run_id, "after-save:2", scope="group")

and the worker SIGKILLs itself the first time that run reaches the point. The
points are:

``before:K``
    step K's function is about to do its work (nothing of step K happened yet);
``mid:K``
    step K's side effect happened but its record is not saved yet;
``after-save:K``
    step K's completed record was just saved in Redis (with the end of its pass, or
    earlier when the pass saved it before a side effect);
``after-end:K``
    the pass that executed step K has released the run (``end_pass``) and the next
    pass is not enqueued yet; or, for a pass that goes on to the next step in its
    task, ``go_on`` has written step K's record and begun the next pass.

``scope`` is ``self`` (the pool process running the pass: Celery's main process
notices and replaces it) or ``group`` (the whole worker: main process and pool).
Each plan fires once (``HSETNX kill:done``).  ``before``/``mid`` are checked by the
step function itself; ``after-save``/``after-end`` need :func:`install_store_hooks`,
which wraps two :class:`fanout._redis.store.Store` methods and must only be called in a
worker process (the scenario module calls it when ``FANOUT_TEST_KILL_HOOKS=1``).
"""

from __future__ import annotations

import os
import signal
from typing import Any

import redis

PLAN = "kill:plan"
SCOPE = "kill:scope"
DONE = "kill:done"


def plan(r: redis.Redis, run_id: str, point: str, *, scope: str = "self") -> None:
    if scope not in ("self", "group"):
        raise ValueError(f"scope must be 'self' or 'group', not {scope!r}")
    pipe = r.pipeline()
    pipe.hset(PLAN, run_id, point)
    pipe.hset(SCOPE, run_id, scope)
    pipe.execute()


def fired(r: redis.Redis, run_id: str) -> str | None:
    raw = r.hget(DONE, run_id)
    return None if raw is None else raw.decode()


def maybe_kill(r: redis.Redis, run_id: str, point: str) -> None:
    """SIGKILL this worker if ``run_id``'s plan is ``point`` and has not fired yet."""
    want = r.hget(PLAN, run_id)
    if want is None or want.decode() != point:
        return
    if not r.hsetnx(DONE, run_id, f"{point} pid={os.getpid()}"):
        return
    scope = (r.hget(SCOPE, run_id) or b"self").decode()
    if scope == "group":
        os.killpg(os.getpgrp(), signal.SIGKILL)
    os.kill(os.getpid(), signal.SIGKILL)


def install_store_hooks(redis_factory: Any) -> None:
    """Wrap the Store methods that save step records with the after-save / after-end points.

    A step's record is saved by ``save_step`` or, for a step the pass executed, with
    the end of the pass (``end_pass`` / ``go_on`` / ``finish_run`` write the deferred
    records).
    ``redis_factory()`` returns the Redis client holding the plans.
    """
    from fanout._redis import store as _store

    if getattr(_store.Store, "_kill_hooks", False):
        return
    orig_save = _store.Store.save_step
    orig_end = _store.Store.end_pass
    orig_finish = _store.Store.finish_run
    orig_go_on = _store.Store.go_on

    def saved(run_id: str, fields: Any) -> None:
        for key, value in (fields or {}).items():
            if key.startswith("s:s") and '"st":"completed"' in str(value):
                maybe_kill(redis_factory(), run_id, f"after-save:{key[3:]}")

    def save_step(self: Any, run_id: str, token: str, rec: Any, **kw: Any) -> Any:
        out = orig_save(self, run_id, token, rec, **kw)
        if rec.status == "completed" and rec.id.startswith("s"):
            maybe_kill(redis_factory(), run_id, f"after-save:{rec.id[1:]}")
        return out

    def end_pass(self: Any, run_id: str, token: str, status: str, **kw: Any) -> Any:
        out = orig_end(self, run_id, token, status, **kw)
        if out[0] is not None:
            saved(run_id, kw.get("fields"))
        seq = out[0]
        if seq is not None and seq > 0:
            maybe_kill(redis_factory(), run_id, f"after-end:{seq}")
        return out

    def finish_run(self: Any, run_id: str, token: str, status: str, fields: Any) -> Any:
        out = orig_finish(self, run_id, token, status, fields)
        if out:
            saved(run_id, fields)
        return out

    def go_on(self: Any, run_id: str, token: str, lease_until_ms: int, fields: Any) -> Any:
        out = orig_go_on(self, run_id, token, lease_until_ms, fields)
        if out.head in ("ok", "cancel"):
            saved(run_id, fields)
        if out.head == "ok":
            maybe_kill(redis_factory(), run_id, f"after-end:{out.fields['seq']}")
        return out

    _store.Store.save_step = save_step  # type: ignore[method-assign]
    _store.Store.go_on = go_on  # type: ignore[method-assign]
    _store.Store.end_pass = end_pass  # type: ignore[method-assign]
    _store.Store.finish_run = finish_run  # type: ignore[method-assign]
    _store.Store._kill_hooks = True  # type: ignore[attr-defined]
