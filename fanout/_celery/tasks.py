"""fanout's Celery tasks, registered on the app of one :class:`Runtime`.

* ``fanout.step(fn, run_id, seq, branch)``: one pass of a run, or one parallel
  branch (``passes.py``);
* ``fanout.route(event_ids, ...)``: the router (``routing.py``), bound to the
  ``fanout.events`` exchange;
* ``fanout.cron``: cron ticks from Celery beat (``cron.py``);
* ``fanout.bulk(job_id)``: one batch of a bulk cancel or replay (``bulk_jobs.py``).

While Redis is unreachable a message is put back (a retry a few seconds later)
rather than acknowledged as failed; the run's timer in Redis is the second line of
defence.
"""

from __future__ import annotations

import logging
import random
import time
from typing import Any

from celery.exceptions import Retry
from kombu import Queue  # type: ignore[attr-defined]

from .._core.outage import Outage
from .._redis.store import StoreError
from . import bulk_jobs, passes, routing
from .cron import CRON_TASK
from .runlog import take_failed, take_retrying
from .runtime import ROUTER_QUEUE, Runtime

log = logging.getLogger("fanout")

_OPTIONS: dict[str, Any] = dict(
    acks_late=True, reject_on_worker_lost=True, ignore_result=True, serializer="json",
    shared=False,
)


# The messages of this process that met a Redis outage: logged once when it starts
# (the first message), at most once a minute, and once when messages have gone through
# for 10 s without a failure (while one master of a cluster is down, the messages of
# runs on the other masters go through between the failures: one outage, not many).
_messages = Outage("passes and routing (Redis errors: the messages are put back with a "
                   "retry, backing off up to 30s)", calm=10.0)


def _store_retry(task: Any, exc: StoreError, where: str) -> Exception:
    """Put the message back while Redis is away: a retry backing off from 1s to 30s
    (with jitter); the outage is logged by :data:`_messages`."""
    tries = int(getattr(task.request, "retries", 0) or 0)
    log.debug("fanout: Redis error %s, retrying the message: %s", where, exc)
    _messages.failed(exc)
    countdown = min(30.0, 2.0 ** tries) * (0.5 + 0.5 * random.random())
    retry: Exception = task.retry(exc=exc, countdown=round(countdown, 2), max_retries=None)
    return retry


def register(rt: Runtime) -> None:
    """Register the tasks on ``rt.app`` and add the router's queue to its queues."""
    app = rt.app

    @app.task(name="fanout.step", bind=True, **_OPTIONS)  # type: ignore[untyped-decorator]
    def step(
        task: Any, fn: str, run_id: str, seq: int | None = None, branch: str | None = None
    ) -> None:
        take_failed()
        take_retrying()
        try:
            if branch is None:
                passes.execute_pass(rt, fn, run_id, seq)
            else:
                passes.execute_branch(rt, fn, run_id, branch)
        except StoreError as exc:
            raise _store_retry(task, exc, f"in run {run_id}") from None
        _messages.ok()
        failed, retrying = take_failed(), take_retrying()
        if not rt.app.conf.get("fanout_task_failure", True):
            return
        # The run's end is recorded: report the task as failed, so Flower, `celery
        # events` and task_failure hooks see it, with the user's traceback as the
        # cause. Celery acks a task that raised.
        if failed is not None:
            raise failed from failed.__cause__
        # A failed attempt that fanout retries (its timer is armed in Redis): Celery's
        # own RETRY state and task-retried event, with the error. Raising Retry
        # publishes nothing; the message is acknowledged.
        if retrying is not None:
            countdown = max(0.0, retrying.retry_at - time.time())
            raise Retry(exc=retrying, when=round(countdown, 1)) from retrying.__cause__

    @app.task(name="fanout.route", bind=True, **_OPTIONS)  # type: ignore[untyped-decorator]
    def route(
        task: Any,
        event_ids: list[str],
        parent_run_id: str | None = None,
        target: str | None = None,
        batch_id: str | None = None,
        invoker: dict[str, Any] | None = None,
    ) -> None:
        try:
            routing.route(rt, event_ids, parent_run_id=parent_run_id, target=target,
                          invoker=invoker, batch_id=batch_id)
        except StoreError as exc:
            raise _store_retry(task, exc, "while routing") from None
        _messages.ok()

    @app.task(  # type: ignore[untyped-decorator]
        name=CRON_TASK,
        acks_late=True,
        reject_on_worker_lost=True,
        ignore_result=True,
        serializer="json",
        shared=False,
        autoretry_for=(StoreError,),
        retry_backoff=1,
        retry_backoff_max=30,
        max_retries=20,
    )
    def cron(upto: str | None = None) -> int:
        return rt.cron.run(upto)

    @app.task(name=bulk_jobs.BULK_TASK, bind=True, **_OPTIONS)  # type: ignore[untyped-decorator]
    def bulk(task: Any, job_id: str) -> None:
        try:
            bulk_jobs.run_batch(rt, job_id)
        except StoreError as exc:
            raise _store_retry(task, exc, f"in bulk job {job_id}") from None
        _messages.ok()

    queues = app.conf.task_queues
    if queues is None:
        default = Queue(app.conf.task_default_queue)  # type: ignore[no-untyped-call]
        app.conf.task_queues = [default, rt.router_queue]
    elif not any(q.name == ROUTER_QUEUE for q in queues):
        app.conf.task_queues = [*queues, rt.router_queue]
