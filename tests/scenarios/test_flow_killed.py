"""`kill -9` of a worker holding a concurrency slot: the slot is not leaked. It
expires with the dead pass's lease; until then no other step of that key runs,
afterwards the waiting run and the interrupted one both complete."""

from __future__ import annotations

import time
from pathlib import Path

import fanout
from tests.scenarios.flow_helpers import max_overlap, recorder, spans
from tests.support import Worker, make_app, redis_for, run_of, wait_for, wait_run

# A short recovery timeout (lease 2 s) keeps the test quick; the default is 60 s.
app, client = make_app(__name__, recovery_timeout=4)
span = recorder(__name__)


def slow(run_id: str, k: str) -> dict[str, object]:
    if int(redis_for(__name__).incr("side:slow-started")) == 1:
        time.sleep(120)  # the first attempt never ends: its worker is killed
    return span(k, run_id, 0.3)


@client.create_function(
    fn_id="hog", trigger=fanout.TriggerEvent(event="t/hog"),
    concurrency=[fanout.Concurrency(1, key="event.data.k")],
)
def hog(ctx: fanout.ContextSync) -> str:
    ctx.step.run("slow", slow, ctx.run_id, ctx.event.data["k"])
    return "ok"


def _slots(r: object) -> dict[bytes, float]:
    out: dict[bytes, float] = {}
    for key in r.scan_iter("fanout:fc:cc:*"):  # type: ignore[attr-defined]
        out.update(dict(r.zrange(key, 0, -1, withscores=True)))  # type: ignore[attr-defined]
    return out


def test_slot_of_a_killed_worker_expires_with_its_lease(clean_db: object, log_dir: Path) -> None:
    r = redis_for(__name__)
    victim = Worker(__name__, name="victim", log_dir=log_dir)
    try:
        first = run_of(client, client.emit("t/hog", {"k": "z"}), "hog")
        wait_for(lambda: r.get("side:slow-started"), timeout=30)
        held = _slots(r)
        assert len(held) == 1
        victim.kill()
    finally:
        victim.stop()
    dead_until = max(_slots(r).values()) / 1000  # the dead holder's lease, never renewed again
    second = run_of(client, client.emit("t/hog", {"k": "z"}), "hog")
    other = run_of(client, client.emit("t/hog", {"k": "other"}), "hog")
    rescuer = Worker(__name__, name="rescuer", log_dir=log_dir)
    try:
        runs = [wait_run(client, rid, timeout=60) for rid in (first, second, other)]
    finally:
        rescuer.stop()
    assert [run.status for run in runs] == ["completed"] * 3
    recorded = spans(__name__)
    z = [s for s in recorded if s["tag"] == "z"]
    assert len(z) == 2 and max_overlap(z) == 1
    assert min(s["start"] for s in z) >= dead_until - 0.05  # nobody ran key z on a live slot
    assert int(r.get("side:slow-started")) == 4  # the killed attempt ran again, once
    assert _slots(r) == {}


@client.create_function(
    fn_id="long-step", trigger=fanout.TriggerEvent(event="t/long"),
    concurrency=[fanout.Concurrency(1)],
)
def long_step(ctx: fanout.ContextSync) -> None:
    ctx.step.run("long", span, "long", ctx.run_id, 3.0, "long")  # longer than the 2 s lease


def test_a_long_step_keeps_its_slot(clean_db: object, log_dir: Path) -> None:
    w = Worker(__name__, name="steady", log_dir=log_dir)
    try:
        eids = client.send_sync([fanout.Event(name="t/long"), fanout.Event(name="t/long")])
        runs = [wait_run(client, run_of(client, e, "long-step"), timeout=60) for e in eids]
    finally:
        w.stop()
    assert [run.status for run in runs] == ["completed"] * 2
    assert max_overlap(spans(__name__, "long")) == 1  # the slot was renewed with the lease
