"""The same event id published by 20 threads at once starts one run per function.

``test_events.py`` covers sequential duplicates; here the sends race: the event is
stored set-if-absent and every router message names the same id, so the run ids
(derived from event id and function) collide and ``create_run.lua`` creates each
run once.  Each function's step records a side effect, which must happen once.
"""

from __future__ import annotations

import threading
import uuid

import fanout
from tests.support import make_app, redis_for, run_of, wait_for, wait_run

app, client = make_app(__name__)
THREADS = 20


def effect(fn: str, eid: str) -> int:
    return int(redis_for(__name__).hincrby(f"side:{eid}", fn, 1))


@client.create_function(fn_id="dup-a", trigger=fanout.TriggerEvent(event="dup/order"))
def dup_a(ctx: fanout.ContextSync) -> object:
    ctx.step.run("effect", effect, "a", ctx.event.id)
    return ctx.event.data


@client.create_function(fn_id="dup-b", trigger=fanout.TriggerEvent(event="dup/*"))
def dup_b(ctx: fanout.ContextSync) -> object:
    ctx.step.run("effect", effect, "b", ctx.event.id)
    return ctx.event.data


def _race(send: object) -> list[object]:
    barrier = threading.Barrier(THREADS)
    results: list[object] = [None] * THREADS

    def worker(i: int) -> None:
        barrier.wait()
        try:
            results[i] = send(i)  # type: ignore[operator]
        except Exception as exc:  # noqa: BLE001 - reported below
            results[i] = exc

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    return results


def _check_one_run_each(eid: str) -> list[fanout.RunInfo]:
    r = redis_for(__name__)
    runs = [wait_run(client, run_of(client, eid, fn)) for fn in ("dup-a", "dup-b")]
    assert [x.status for x in runs] == ["completed", "completed"]
    # A marker sent afterwards is routed after every duplicate router message.
    marker = client.emit("dup/order", {"marker": True})
    wait_run(client, run_of(client, marker, "dup-a"))
    wait_run(client, run_of(client, marker, "dup-b"))
    assert sorted(x.fn_id for x in client.list_runs(event_id=eid)) == ["dup-a", "dup-b"]
    assert {k.decode(): int(v) for k, v in r.hgetall(f"side:{eid}").items()} == {"a": 1, "b": 1}
    return runs


def test_same_id_from_20_threads_same_payload(worker: object) -> None:
    eid = f"order-{uuid.uuid4().hex}"
    ev = fanout.Event(name="dup/order", data={"total": 10}, id=eid)
    results = _race(lambda i: client.send_sync(ev))
    assert results == [[eid]] * THREADS
    runs = _check_one_run_each(eid)
    assert [x.output for x in runs] == [{"total": 10}] * 2


def test_same_id_from_20_threads_different_payloads(worker: object) -> None:
    """The first stored payload wins, and both runs see that same payload."""
    eid = f"order-{uuid.uuid4().hex}"
    results = _race(lambda i: client.emit("dup/order", {"sender": i}, id=eid))
    assert results == [eid] * THREADS
    runs = _check_one_run_each(eid)
    first = runs[0].output
    assert first in [{"sender": i} for i in range(THREADS)]
    assert runs[1].output == first
    stored = client.runtime.store.load_events([eid])[0]
    assert stored is not None and stored["data"] == first


def test_same_id_in_concurrent_batches(worker: object) -> None:
    """Batches that overlap on one id: the shared id starts one run per function,
    every other event its own."""
    shared = f"shared-{uuid.uuid4().hex}"

    def send(i: int) -> list[str]:
        return client.send_sync([
            fanout.Event(name="dup/order", data={"i": i}, id=f"{shared}-own-{i}"),
            fanout.Event(name="dup/order", data={"shared": True}, id=shared),
        ])

    results = _race(send)
    assert all(isinstance(x, list) for x in results), results
    _check_one_run_each(shared)
    for i in range(THREADS):
        wait_run(client, run_of(client, f"{shared}-own-{i}", "dup-a"))
    wait_for(lambda: len(client.list_runs(fn_id="dup-a", limit=1000)) >= THREADS + 1)
