"""Publishing: events to the router, and the ``fanout.step`` messages of passes.

Messages carry ids only; what they point at is in Redis before they leave:
:meth:`Publisher.publish` stores events and sends one ``fanout.route`` message,
:meth:`Publisher.route` sends one for events already stored, and
:meth:`Publisher.enqueue` sends one pass (or parallel branch) of a run.

Every pass of every run ends with one publish, so its cost is paid once per
step.  ``Task.apply_async`` merges the task's options, looks up the parent task
and routes the message on every call, then publishes through kombu.  For
fanout's two tasks the options are fixed, so :class:`Publisher` builds the
message with Celery's own ``create_task_message`` and hands it to Celery's
``send_task_message``.  What users rely on is kept: ``task_routes`` (routing is
done per message), the ``before_task_publish`` / ``after_task_publish`` signals
(tracing hooks them), ``task_publish_retry`` and its policy, ``task-sent``
events, and the parent and root ids that Flower shows.  The message on the
wire is the one ``apply_async`` would send.

:meth:`Publisher.batch` groups the publishes of a router chunk or a timer scan
into one round trip with kombu's ``Producer.batch`` where the transport
supports it (Redis); elsewhere each message is published at once.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Protocol

from celery import Celery
from kombu.utils.uuid import uuid

from .._core.event import Event, dumps
from .._core.ids import new_token
from .._errors import ConfigError, PublishError
from .._redis.store import Store, StoreError

log = logging.getLogger("fanout")
BATCH_SIZE = 1000
FIRST_PASS_PRIORITY = 3  # the Redis transport's second priority step (0, 3, 6, 9)


class SenderRouter(Protocol):
    """What :meth:`Publisher.publish` asks of the routing in the sender."""

    enabled: bool
    max_events: int

    def wanted(self, n: int) -> bool: ...
    def refusal(self, declared: set[str] | None) -> str | None: ...
    def route(self, ids: Sequence[str], texts: Sequence[str], fresh: Sequence[bool],
              batch: str, *, parent_run_id: str | None, target: str | None,
              invoker: dict[str, Any] | None, waits: Any = None) -> None: ...


class Publisher:
    """Sends fanout's messages for one Celery app: ``fanout.route`` to the router
    queue, ``fanout.step`` wherever the app routes it."""

    def __init__(self, app: Celery, router_queue: Any, store: Callable[[], Store]) -> None:
        self.app = app
        self.router_queue = router_queue
        self._store = store
        #: Routing in the sender (``routing.SenderRouting``), set when fanout's tasks
        #: are registered; None routes every send through the router.
        self.sender: SenderRouter | None = None

    # -- fanout's messages --------------------------------------------------------------

    def publish(
        self,
        events: Sequence[tuple[Event, str]],
        *,
        parent_run_id: str | None = None,
        target: str | None = None,
        invoker: dict[str, Any] | None = None,
    ) -> list[str]:
        """Store the events and route them: here when :attr:`sender` says this process
        may (``route_in_sender``), else with one router message.  Never waits for a
        worker."""
        ids = [ev.id or "" for ev, _ in events]
        batch = new_token()
        payload = dumps({"ids": ids, "parent": parent_run_id, "target": target,
                         "invoker": invoker})
        sender = self.sender
        here = sender is not None and sender.wanted(len(ids))
        try:
            stored = self._store().store_events(
                [(ev.id or "", text, ev.ts or 0, ev.name) for ev, text in events],
                route=(batch, payload), read_declared=here,
                read_waits=here and target is None,
            )
        except StoreError as exc:
            raise PublishError(f"could not store {len(ids)} event(s) in Redis: {exc}") from exc
        if sender is not None and here:
            why = sender.refusal(stored.declared)
            if why is None:
                try:
                    sender.route(ids, [text for _ev, text in events], stored.fresh, batch,
                                 parent_run_id=parent_run_id, target=target, invoker=invoker,
                                 waits=stored.waits)
                except Exception as exc:  # noqa: BLE001 - the router does it instead
                    log.warning("fanout: routing %d event(s) in the sender failed (%s); "
                                "publishing them to the router", len(ids), exc)
                else:
                    log.debug("fanout: routed %d event(s) in the sender", len(ids))
                    return ids
            else:
                log.debug("fanout: %d event(s) to the router: %s", len(ids), why)
        elif sender is not None and sender.enabled:
            log.debug("fanout: %d event(s) to the router: more than %d in one send",
                      len(ids), sender.max_events)
        self.route(ids, parent_run_id=parent_run_id, target=target, invoker=invoker,
                   batch_id=batch)
        return ids

    def route(
        self,
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
            self.send(
                "fanout.route", (ids,), argsrepr=shown,
                kwargs={"parent_run_id": parent_run_id, "target": target, "batch_id": batch_id,
                        "invoker": invoker},
                queue=self.router_queue, producer=producer,
                retry_policy={"max_retries": 3, "interval_start": 0.1, "interval_step": 0.3},
            )
        except Exception as exc:
            raise PublishError(
                f"could not publish {len(ids)} event id(s) to the broker: {exc}"
            ) from exc

    def enqueue(
        self, fn_key: str, run_id: str, seq: int | None, *, branch: str | None = None,
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
                priority = self.first_pass_priority
        else:
            args = (fn_key, run_id, None, branch)
            shown = f"fn={fn_key} run={run_id} branch={branch}"
        self.send("fanout.step", args, argsrepr=shown, producer=producer, queue=queue,
                  priority=priority)

    @functools.cached_property
    def first_pass_priority(self) -> int | None:
        """The message priority of a run's first pass: on a Redis broker, below the
        default (Redis serves 0 first), so passes of runs already under way, and
        wake-ups, do not wait behind the first passes of a large send. The Celery
        setting ``fanout_first_pass_priority`` changes it; None turns it off. Other
        brokers get no priority (a RabbitMQ queue has none unless declared with
        ``x-max-priority``, where higher means sooner)."""
        conf = self.app.conf
        if "fanout_first_pass_priority" in conf:
            value = conf.get("fanout_first_pass_priority")
            if value is not None and not (isinstance(value, int) and 0 <= value <= 9):
                raise ConfigError(
                    f"fanout_first_pass_priority must be None or an integer from 0 to 9, "
                    f"not {value!r}"
                )
            return value
        conn = self.app.connection_for_write()
        try:
            driver = conn.transport.driver_type
        finally:
            conn.release()
        return FIRST_PASS_PRIORITY if driver == "redis" else None

    # -- one Celery message -------------------------------------------------------------

    def send(
        self,
        name: str,
        args: tuple[Any, ...],
        *,
        kwargs: dict[str, Any] | None = None,
        argsrepr: str,
        kwargsrepr: str = "",
        producer: Any = None,
        queue: Any = None,
        priority: int | None = None,
        retry_policy: dict[str, Any] | None = None,
    ) -> str:
        """Publish one message for task ``name``; returns its task id."""
        app = self.app
        amqp = app.amqp
        kwargs = kwargs or {}
        options = amqp.router.route({"queue": queue} if queue is not None else {},
                                    name, args, kwargs)
        root_id = parent_id = None
        parent = app.current_worker_task
        if parent is not None:
            parent_id = parent.request.id
            root_id = parent.request.root_id or parent_id
        task_id = uuid()
        message = amqp.create_task_message(
            task_id, name, args, kwargs,
            create_sent_event=app.conf.task_send_sent_event,
            root_id=root_id, parent_id=parent_id, ignore_result=True,
            argsrepr=argsrepr, kwargsrepr=kwargsrepr,
        )
        if priority is not None:
            options["priority"] = priority
        if retry_policy is not None:
            options["retry"], options["retry_policy"] = True, retry_policy
        with app.producer_or_acquire(producer) as prod:
            with prod.connection._reraise_as_library_errors():
                amqp.send_task_message(prod, name, message, serializer="json", **options)
        return task_id

    @contextmanager
    def batch(self) -> Iterator[Any]:
        """A producer whose publishes go out together when the block ends (kombu's
        ``Producer.batch``; immediate on transports without it).  If the block
        raises, what it had not yet sent is discarded: callers re-publish from
        their own record (router batches, timers)."""
        with self.app.producer_or_acquire() as producer:
            batch = getattr(producer, "batch", None)
            if batch is None or not getattr(producer, "supports_batch_publish", False):
                yield producer
                return
            with batch(max_size=BATCH_SIZE):
                yield producer
