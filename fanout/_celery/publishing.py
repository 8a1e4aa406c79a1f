"""Publishing: events to the router, and the ``fanout.step`` messages of passes.

Messages carry ids only; what they point at is in Redis before they leave.  The
wire format and its cost are in :mod:`fanout._celery.publisher`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from celery import Celery

from .._core.event import Event, dumps
from .._core.ids import new_token
from .._errors import ConfigError, PublishError
from .._redis.store import StoreError

if TYPE_CHECKING:
    from .runtime import Runtime

FIRST_PASS_PRIORITY = 3  # the Redis transport's second priority step (0, 3, 6, 9)


def publish(
    rt: Runtime,
    events: Sequence[tuple[Event, str]],
    *,
    parent_run_id: str | None = None,
    target: str | None = None,
    invoker: dict[str, Any] | None = None,
) -> list[str]:
    """Store the events and publish one router message; never waits for a worker."""
    ids = [ev.id or "" for ev, _ in events]
    batch = new_token()
    payload = dumps({"ids": ids, "parent": parent_run_id, "target": target, "invoker": invoker})
    try:
        rt.store.store_events(
            [(ev.id or "", text, ev.ts or 0, ev.name) for ev, text in events],
            route=(batch, payload),
        )
    except StoreError as exc:
        raise PublishError(f"could not store {len(ids)} event(s) in Redis: {exc}") from exc
    rt.publish_route(
        ids, parent_run_id=parent_run_id, target=target, invoker=invoker, batch_id=batch
    )
    return ids


def publish_route(
    rt: Runtime,
    ids: list[str],
    *,
    parent_run_id: str | None = None,
    target: str | None = None,
    invoker: dict[str, Any] | None = None,
    batch_id: str | None = None,
    producer: Any = None,
) -> None:
    """Publish one ``fanout.route`` message for events already stored."""
    shown = f"{len(ids)} event(s): {ids[0]}" + (f" .. {ids[-1]}" if len(ids) > 1 else "")
    if parent_run_id:
        shown += f" from run {parent_run_id}"
    if target:
        shown += f" for {target}"
    try:
        rt.publisher.send(
            "fanout.route", (ids,), argsrepr=shown,
            kwargs={"parent_run_id": parent_run_id, "target": target, "batch_id": batch_id,
                    "invoker": invoker},
            queue=rt.router_queue, producer=producer,
            retry_policy={"max_retries": 3, "interval_start": 0.1, "interval_step": 0.3},
        )
    except Exception as exc:
        raise PublishError(
            f"could not publish {len(ids)} event id(s) to the broker: {exc}"
        ) from exc


def enqueue(
    rt: Runtime, fn_key: str, run_id: str, seq: int | None, *, branch: str | None = None,
    producer: Any = None, queue: Any = None,
) -> None:
    """Publish one ``fanout.step`` message (ids only). Flower and worker logs show
    it as ``fn=<app:fn> run=<id> pass=<seq>`` (``branch=<step>`` for a branch).
    ``queue`` overrides the task's route (the timer thread's wake-ups)."""
    priority = None
    if branch is None:
        args: tuple[Any, ...] = (fn_key, run_id, seq)
        shown = f"fn={fn_key} run={run_id} pass={'next' if seq is None else seq}"
        if seq == 0:
            priority = rt.first_pass_priority
    else:
        args = (fn_key, run_id, None, branch)
        shown = f"fn={fn_key} run={run_id} branch={branch}"
    rt.publisher.send("fanout.step", args, argsrepr=shown, producer=producer, queue=queue,
                      priority=priority)


def first_pass_priority(app: Celery) -> int | None:
    """The message priority of a run's first pass: on a Redis broker, below the
    default (Redis serves 0 first), so passes of runs already under way, and
    wake-ups, do not wait behind the first passes of a large send. The Celery
    setting ``fanout_first_pass_priority`` changes it; None turns it off. Other
    brokers get no priority (a RabbitMQ queue has none unless declared with
    ``x-max-priority``, where higher means sooner)."""
    conf = app.conf
    if "fanout_first_pass_priority" in conf:
        value = conf.get("fanout_first_pass_priority")
        if value is not None and not (isinstance(value, int) and 0 <= value <= 9):
            raise ConfigError(
                f"fanout_first_pass_priority must be None or an integer from 0 to 9, "
                f"not {value!r}"
            )
        return value
    conn = app.connection_for_write()
    try:
        driver = conn.transport.driver_type
    finally:
        conn.release()
    return FIRST_PASS_PRIORITY if driver == "redis" else None
