"""``kill -9`` at every step boundary of a 4-step run, and a poison step.

Each step records its side effect (``HINCRBY side:<run> s<k>``).  A test-only hook
(``tests/reliability/killpoints.py``) SIGKILLs the worker at one point of one run:
before step k does anything, between its side effect and its save, right after its
record is saved, or right after the pass that ran it released the run.  Whatever
the point, the run completes; a step whose record was saved never runs again; the
one step interrupted between its side effect and its save runs again (that is
at-least-once).  The default (a pass goes on to the next step in its task), one
task per step (``pass_budget=0``) and ``checkpoint=True``.

``recovery_timeout=4``: a dead worker's lease (half of it, 2 s) expires and the
timer thread of a live worker resumes the run.
"""

from __future__ import annotations

import faulthandler
import os
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

import fanout
from fanout._celery.runtime import MAX_TAKEOVERS
from tests.reliability import killpoints
from tests.support import Worker, make_app, redis_for, run_of, wait_run

app, client = make_app(__name__, recovery_timeout=4)
STEPS = 4

if os.environ.get("FANOUT_TEST_KILL_HOOKS") == "1":
    killpoints.install_store_hooks(lambda: redis_for(__name__))
    faulthandler.register(signal.SIGUSR1, all_threads=True)  # stacks, for a stuck run


def effect(run_id: str, k: int) -> int:
    r = redis_for(__name__)
    killpoints.maybe_kill(r, run_id, f"before:{k}")
    r.hincrby(f"side:{run_id}", f"s{k}", 1)
    killpoints.maybe_kill(r, run_id, f"mid:{k}")
    return k


@client.create_function(fn_id="four", trigger=fanout.TriggerEvent(event="rel/four"))
def four(ctx: fanout.ContextSync) -> list[int]:
    return [ctx.step.run(f"s{k}", effect, ctx.run_id, k) for k in range(1, STEPS + 1)]


@client.create_function(fn_id="four-0", trigger=fanout.TriggerEvent(event="rel/four-0"),
                        pass_budget=0)
def four_0(ctx: fanout.ContextSync) -> list[int]:
    return [ctx.step.run(f"s{k}", effect, ctx.run_id, k) for k in range(1, STEPS + 1)]


@client.create_function(
    fn_id="four-cp", trigger=fanout.TriggerEvent(event="rel/four-cp"), checkpoint=True
)
def four_cp(ctx: fanout.ContextSync) -> list[int]:
    return [ctx.step.run(f"s{k}", effect, ctx.run_id, k) for k in range(1, STEPS + 1)]


def poison() -> str:
    redis_for(__name__).incr("side:poison")
    os.kill(os.getpid(), 9)
    return "unreachable"


@client.create_function(fn_id="poison", trigger=fanout.TriggerEvent(event="rel/poison"))
def poisoned(ctx: fanout.ContextSync) -> str:
    ctx.step.run("ok", lambda: "fine")
    return str(ctx.step.run("poison", poison))


FN_EVENT = {"four": "rel/four", "four-0": "rel/four-0", "four-cp": "rel/four-cp"}
# Every boundary of the 4 steps.  A checkpointed run does all 4 steps in one pass,
# so it has no pass end between steps (no after-end points).
DEFAULT_POINTS = (
    [f"before:{k}" for k in range(1, STEPS + 1)]
    + [f"after-save:{k}" for k in range(1, STEPS + 1)]
    + [f"after-end:{k}" for k in range(1, STEPS)]
    + ["mid:2", "mid:4"]
)
CHECKPOINT_POINTS = (
    [f"before:{k}" for k in range(1, STEPS + 1)]
    + [f"after-save:{k}" for k in range(1, STEPS + 1)]
    + ["mid:3"]
)


def start_case(r: redis.Redis, fn_id: str, point: str, scope: str) -> str:
    eid = f"{fn_id}-{point}-{uuid.uuid4().hex[:8]}"
    rid = run_of(client, eid, fn_id)
    killpoints.plan(r, rid, point, scope=scope)
    client.send_sync(fanout.Event(name=FN_EVENT[fn_id], id=eid))
    return rid


def check_case(
    r: redis.Redis, rid: str, point: str, label: str = "", worker: Worker | None = None
) -> None:
    label = f"{label} {point}".strip()
    try:
        run = wait_run(client, rid, timeout=90)
    except AssertionError as exc:
        raise AssertionError(f"{label}: run {rid} did not finish; {diagnose(r, rid, worker)}") from exc
    assert run.status == "completed", (label, run.error)
    assert run.output == list(range(1, STEPS + 1)), label
    assert killpoints.fired(r, rid) is not None, f"{label}: the kill never happened"
    effects = {k.decode(): int(v) for k, v in r.hgetall(f"side:{rid}").items()}
    expected = {f"s{k}": 1 for k in range(1, STEPS + 1)}
    if point.startswith("mid:"):
        # Killed between its side effect and its save: the step runs again.
        expected[f"s{point[4:]}"] = 2
    assert effects == expected, f"{label}: side effects {effects}, expected {expected}"
    # Every step is memoized once, with one recorded attempt.
    assert [s.step_id for s in run.steps] == [f"s{k}" for k in range(1, STEPS + 1)]
    assert all(s.status == "completed" and s.attempts == 1 for s in run.steps), label


def diagnose(r: redis.Redis, rid: str, worker: Worker | None = None) -> str:
    """The raw state of a stuck run: its hash, its timer, and what the kill did.
    Every process of ``worker`` writes its threads' stacks to the worker log."""
    if worker is not None and worker.proc.poll() is None:
        os.killpg(worker.proc.pid, signal.SIGUSR1)
        time.sleep(1)
    store = client._rt.store
    fields = {k.decode(): v.decode()[:120] for k, v in r.hgetall(store.run_key(rid)).items()}
    score = r.zscore(store.timer_key(rid), rid)
    timer = "none" if score is None else f"due in {score / 1000 - time.time():.1f}s"
    queues = {k.decode(): r.llen(k) for k in r.scan_iter("celery*") if r.type(k) == b"list"}
    return (f"fields={fields} timer={timer} kill={killpoints.fired(r, rid)} "
            f"queues={queues} unacked={r.hlen('unacked')}")


@pytest.fixture(scope="module")
def hooked_env() -> dict[str, str]:
    return {"FANOUT_TEST_KILL_HOOKS": "1"}


@pytest.fixture()
def pool_worker(
    request: pytest.FixtureRequest, clean_db: redis.Redis, log_dir: Path,
    hooked_env: dict[str, str],
) -> Iterator[Worker]:
    w = Worker(__name__, name="pool", concurrency=4, env=hooked_env, log_dir=log_dir)
    failed = request.session.testsfailed
    yield w
    w.stop()
    if request.session.testsfailed > failed:
        print(f"\n--- worker log {w.log_path} (tail) ---\n{w.log()[-20000:]}")


def test_pool_process_killed_at_every_boundary(pool_worker: Worker) -> None:
    """All boundaries at once: each run's own pool process kills itself at its point;
    Celery replaces the process, and the run resumes after its lease expires."""
    r = redis_for(__name__)
    cases = [(fn, p, start_case(r, fn, p, "self")) for fn in ("four", "four-0")
             for p in DEFAULT_POINTS]
    cases += [("four-cp", p, start_case(r, "four-cp", p, "self")) for p in CHECKPOINT_POINTS]
    for fn_id, point, rid in cases:
        check_case(r, rid, point, fn_id, pool_worker)
    assert pool_worker.proc.poll() is None  # the worker itself survived its pool's deaths
    assert pool_worker.log().count("signal 9") >= len(cases)


# Whole-worker kills, one run in flight at a time: each kill takes the main process
# and its pool down together; the next worker starts and rescues the run.
# The pool-process test above covers every boundary; these take the whole worker
# down at one boundary of each kind.  A kill right after a pass has ended (its step
# record is written with the end of the pass) is recovered by the queued run's
# watchdog (5 x recovery_timeout = 20 s here: ``four-0``), a kill inside a pass by the
# lease (2 s), as is a kill after a pass went on to the next step (``four``: the same
# task holds the lease).
GROUP_CASES = [
    ("four", "before:1"),
    ("four-0", "after-save:2"),
    ("four", "after-save:2"),
    ("four", "after-save:4"),
    ("four-cp", "after-save:2"),
    ("four-cp", "mid:3"),
]


def test_whole_worker_killed_at_boundaries(
    clean_db: redis.Redis, log_dir: Path, hooked_env: dict[str, str]
) -> None:
    r = redis_for(__name__)
    current = Worker(__name__, name="g0", concurrency=2, env=hooked_env, log_dir=log_dir)
    try:
        for i, (fn_id, point) in enumerate(GROUP_CASES, start=1):
            rid = start_case(r, fn_id, point, "group")
            try:
                current.proc.wait(timeout=30)  # the whole worker dies at the point
            finally:
                current.kill()
                current.stop()
            current = Worker(__name__, name=f"g{i}", concurrency=2, env=hooked_env,
                             log_dir=log_dir)
            check_case(r, rid, point, f"{fn_id} (whole worker)")
    finally:
        current.stop()


def test_poison_step_stops_after_bounded_takeovers(pool_worker: Worker) -> None:
    """A step that kills its process every time: the run is not retried forever; it
    fails with WorkerLost after MAX_TAKEOVERS lease takeovers."""
    r = redis_for(__name__)
    t0 = time.monotonic()
    eid = client.emit("rel/poison")
    run = wait_run(client, run_of(client, eid, "poison"), timeout=120)
    assert run.status == "failed"
    assert run.error is not None and run.error["type"] == "WorkerLost", run.error
    assert "died" in run.error["message"]
    executions = int(r.get("side:poison") or 0)
    assert 1 <= executions <= MAX_TAKEOVERS + 1, executions
    steps = {s.step_id: s for s in run.steps}
    assert steps["ok"].status == "completed"
    assert "poison" not in steps or steps["poison"].status != "completed"
    # The worker is still serving other runs.
    assert pool_worker.proc.poll() is None
    other = start_case(r, "four", "none", "self")
    assert wait_run(client, other, timeout=30).status == "completed"
    print(f"poison run failed after {executions} executions, {time.monotonic() - t0:.1f}s")


def test_kill_hooks_are_inactive_in_the_test_process() -> None:
    from fanout._redis import store as _store

    assert not getattr(_store.Store, "_kill_hooks", False)
