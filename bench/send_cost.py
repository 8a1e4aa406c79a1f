"""``python -m bench.send_cost``: what one ``client.send_sync(event)`` costs the
sending process, with routing in the sender and without (the router path), paired.

The sender declares one 1-step function and registers it as a worker would
(``install.register_declared``), so its sends of one event are routed in-process when
``route_in_sender`` is on. No worker runs: the first passes stay in the broker's
queue, which changes nothing for the sender. For each mode and repetition: the p50
and p99 of the call's wall time, and its round trips to Redis (store and broker
share one server here; each ``send_packed_command`` of redis-py, which sends one
command or one whole pipeline, counts once). Modes alternate within a repetition.
"""

from __future__ import annotations

import argparse
import statistics
import time
import uuid
from typing import Any

import redis.connection
from celery import Celery

import fanout
from bench.harness import RedisServer
from fanout._celery.install import register_declared


def _client(url: str) -> fanout.Fanout:
    app = Celery("bench_send_cost")
    app.config_from_object("celeryconfig")
    app.conf.broker_url = url
    client = fanout.Fanout("bench", celery=app, redis_url=url)

    @client.create_function(fn_id="lat1", trigger=fanout.TriggerEvent(event="bench/lat1"))
    def lat1(ctx: fanout.ContextSync) -> int:
        return int(ctx.step.run("s", lambda: 1))

    return client


class _Trips:
    """Counts redis-py's ``send_packed_command`` calls (one per round trip)."""

    def __init__(self) -> None:
        self.n = 0
        self._orig: Any = redis.connection.AbstractConnection.send_packed_command
        outer = self

        def counted(conn: Any, command: Any, check_health: bool = True) -> None:
            outer.n += 1
            outer._orig(conn, command, check_health)

        redis.connection.AbstractConnection.send_packed_command = counted  # type: ignore[method-assign]


def _measure(client: fanout.Fanout, trips: _Trips, here: bool, count: int) -> dict[str, float]:
    sender = client.runtime.publisher.sender
    assert sender is not None
    sender.enabled = here
    times: list[float] = []
    rts: list[int] = []
    for _ in range(count):
        ev = fanout.Event(name="bench/lat1", id=uuid.uuid4().hex)
        before = trips.n
        t0 = time.perf_counter()
        client.send_sync(ev)
        times.append((time.perf_counter() - t0) * 1000)
        rts.append(trips.n - before)
    times.sort()
    return {"p50": times[len(times) // 2], "p99": times[int(len(times) * 0.99)],
            "trips": statistics.median(rts)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--count", type=int, default=500, help="sends per mode and repetition")
    args = parser.parse_args()
    server = RedisServer()
    try:
        client = _client(server.url)
        register_declared(client.runtime)
        trips = _Trips()
        for here in (True, False):  # warm up connections and scripts
            _measure(client, trips, here, 20)
        rows: dict[str, list[dict[str, float]]] = {"sender": [], "router": []}
        for _ in range(args.reps):
            register_declared(client.runtime)  # as a worker's refresh would
            rows["sender"].append(_measure(client, trips, True, args.count))
            rows["router"].append(_measure(client, trips, False, args.count))

        def cell(mode: str, key: str) -> str:
            vals = [r[key] for r in rows[mode]]
            return f"{statistics.median(vals):.2f} [{min(vals):.2f}–{max(vals):.2f}]"

        print(f"send_sync of one event, {args.count} sends x {args.reps} repetitions")
        print("| path | p50 (ms) | p99 (ms) | round trips |")
        print("|---|---|---|---|")
        for mode in ("router", "sender"):
            print(f"| {mode} | {cell(mode, 'p50')} | {cell(mode, 'p99')} | "
                  f"{cell(mode, 'trips')} |")
    finally:
        server.stop()


if __name__ == "__main__":
    main()
