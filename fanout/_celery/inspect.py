"""What the broker and the workers say right now: queue depths and live workers,
asked through Celery and kombu (so it works on Redis and on RabbitMQ)."""

from __future__ import annotations

from typing import Any

from celery import Celery

from .runtime import ROUTER_QUEUE


def fanout_queues(app: Celery) -> list[str]:
    """The queues fanout's messages travel on: the router's, and wherever the app
    routes ``fanout.step`` (the default queue unless the user routes it)."""
    names = [ROUTER_QUEUE]
    try:
        route = app.amqp.router.route({}, "fanout.step")
        queue = route.get("queue")
        name = getattr(queue, "name", queue)
    except Exception:  # noqa: BLE001 - a routing setup we cannot read: use the default
        name = None
    names.append(str(name or app.conf.task_default_queue))
    return list(dict.fromkeys(names))


def queue_depths(app: Celery, names: list[str]) -> dict[str, int | None]:
    """Messages ready in each queue (``None`` where the broker does not know it)."""
    out: dict[str, int | None] = {}
    with app.connection_for_read() as conn:
        # Redis keeps a queue as a list, which vanishes when it is empty: a queue the
        # broker does not know is then an empty one, not an unknown one.
        empty_is_missing = getattr(conn.transport, "driver_type", "") == "redis"
        for name in names:
            channel: Any = conn.channel()
            try:
                ok = channel.queue_declare(queue=name, passive=True)
                out[name] = int(ok.message_count)
            except Exception:  # noqa: BLE001 - unknown queue, or a broker that refuses
                out[name] = 0 if empty_is_missing else None
            finally:
                try:
                    channel.close()
                except Exception:  # noqa: BLE001 - RabbitMQ closes it on a 404 already
                    pass
    return out


def live_workers(app: Celery, timeout: float = 1.0) -> list[str] | None:
    """Hostnames of the workers that answer a ping within ``timeout`` seconds
    (``None`` when the broker cannot broadcast, for example the in-memory one)."""
    try:
        replies = app.control.inspect(timeout=timeout).ping() or {}
    except Exception:  # noqa: BLE001 - no broadcast support, or the broker is down
        return None
    return sorted(replies)
