"""Publishing fanout's own task messages.

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

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from celery import Celery
from kombu.utils.uuid import uuid

BATCH_SIZE = 1000


class Publisher:
    """Sends ``fanout.*`` task messages for one Celery app."""

    def __init__(self, app: Celery) -> None:
        self.app = app

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
