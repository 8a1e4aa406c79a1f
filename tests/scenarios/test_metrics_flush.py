"""Where the histograms come from: each worker process buffers its observations and
sends them every ``fanout_metrics_interval`` seconds and when it exits. Set to an
hour here, so only the exit can send them: a warm shutdown of a prefork or a thread
pool delivers every observation, and a pool child killed with SIGKILL loses its own
(its counters, written by the scripts, stay exact)."""

from __future__ import annotations

import os
import signal
import subprocess
from typing import Any

import pytest

import fanout
import fanout.metrics
from tests.support import Worker, make_app, run_of, wait_for, wait_run

MOD = __name__
app, client = make_app(__name__, app_id="mfl")
app.conf.fanout_metrics_interval = 3600.0


@client.create_function(fn_id="two", trigger=fanout.TriggerEvent(event="mfl/go"))
def two(ctx: fanout.ContextSync) -> int:
    a = ctx.step.run("a", lambda: 1)
    b = ctx.step.run("b", lambda: 2)
    return int(a) + int(b)


def run_many(n: int, tag: str) -> None:
    ids = client.send_sync([fanout.Event(name="mfl/go", data={"tag": tag, "i": i})
                            for i in range(n)])
    for eid in ids:
        assert wait_run(client, run_of(client, eid, "two")).status == "completed"


def counts() -> tuple[int, int, int, int]:
    """(runs ended completed, run_duration count, step_duration count, queue_delay count)."""
    snap = fanout.metrics.snapshot(client)
    hist = {name: snap.histograms[name].get(("mfl", "two")) for name in snap.histograms}
    return (snap.counter("runs_ended", "mfl", "two", "completed"),
            *(h.count if h else 0 for h in (hist["run_duration"], hist["step_duration"],
                                            hist["queue_delay"])))


def pool_children(worker: Worker) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(worker.proc.pid)], capture_output=True, text=True)
    return [int(p) for p in out.stdout.split()]


@pytest.mark.parametrize("pool", ["prefork", "threads"])
def test_a_warm_shutdown_sends_every_observation(pool: str, clean_db: Any, log_dir: Any) -> None:
    clean_db.delete("fanout:metrics")
    w = Worker(MOD, pool=pool, name=f"flush-{pool}", log_dir=log_dir)
    try:
        run_many(6, pool)
        # Counted by the scripts as the runs end; the histograms wait in the workers.
        assert counts() == (6, 0, 0, 0)
    finally:
        w.stop()
    ended, runs, attempts, delays = counts()
    assert (ended, runs, attempts) == (6, 6, 12)
    assert delays >= 6  # one per pass: at least one pass per run


def test_a_killed_child_loses_only_its_unsent_observations(clean_db: Any, log_dir: Any) -> None:
    clean_db.delete("fanout:metrics")
    w = Worker(MOD, name="flush-kill", log_dir=log_dir)
    try:
        run_many(4, "before")
        first = pool_children(w)
        assert len(first) == 2
        for pid in first:
            os.kill(pid, signal.SIGKILL)
        # The pool replaces them; the new children run the next runs.
        wait_for(lambda: len(set(pool_children(w)) - set(first)) == 2, timeout=30)
        run_many(3, "after")
        assert counts()[:2] == (7, 0)
    finally:
        w.stop()
    ended, runs, attempts, _delays = counts()
    assert ended == 7  # every end counted, the killed children's included
    assert (runs, attempts) == (3, 6)  # the killed children's four runs were not sent
    assert "could not add" not in w.log()
