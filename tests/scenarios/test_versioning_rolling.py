"""A rolling deploy: workers on two versions of one function at once, so the passes
of one run alternate between the versions. Each pass runs the code of the worker
that takes it; memoized steps answer by id on either version, so no completed step
runs again; the steps only one version has are recorded as warnings."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import redis

import fanout
from tests.scenarios.versioning_helpers import (
    CODE,
    counted,
    executions,
    step_log,
    worker_on,
)
from tests.support import make_app, redis_for, run_of, wait_for, wait_run

app, client = make_app(__name__)
r = redis_for(__name__)


@client.create_function(fn_id="roll", trigger=fanout.TriggerEvent(event="t/roll"),
                        version=f"v{CODE}")
def roll(ctx: fanout.ContextSync) -> list[Any]:
    naps = ctx.event.data.get("naps", [4, 5])
    a = counted(r, ctx, "a", f"a{CODE}")
    ctx.step.sleep("nap1", naps[0])
    if CODE == "2":
        counted(r, ctx, "audit", "audit2")  # only version 2 has this step
    b = counted(r, ctx, "b", f"b{CODE}")
    ctx.step.sleep("nap2", naps[1])
    return [a, b, counted(r, ctx, "c", f"c{CODE}")]


def sleeping_in(run_id: str, step: str) -> bool:
    info = client.get_run(run_id)
    return info is not None and info.status == "sleeping" and any(
        s.step_id == step and s.status == "sleeping" for s in info.steps)


def test_passes_alternate_old_new_old(clean_db: redis.Redis, log_dir: Path) -> None:
    """v1 runs the first pass, v2 the middle ones, v1 (rolled back, or an old worker
    still draining) the last."""
    w = worker_on(__name__, "1", log_dir)
    try:
        rid = run_of(client, client.emit("t/roll"), "roll")
        wait_for(lambda: sleeping_in(rid, "nap1"))
    finally:
        w.stop()
    w = worker_on(__name__, "2", log_dir)
    try:
        wait_for(lambda: sleeping_in(rid, "nap2"), timeout=30)
    finally:
        w.stop()
    w = worker_on(__name__, "1", log_dir, name="code1-again")
    try:
        run = wait_run(client, rid)
    finally:
        w.stop()
    assert run.status == "completed", run.error
    assert run.output == ["a1", "b2", "c1"]
    assert step_log(r, rid) == ["a@1", "audit@2", "b@2", "c@1"]
    assert executions(r, rid) == {"a": 1, "audit": 1, "b": 1, "c": 1}
    assert run.versions == ["v1", "v2", "v1"] and run.crossed_deploy
    # Version 1 reaches its new step c while audit (memoized by version 2) is unreached,
    # and returns without reaching it.
    assert [(w["kind"], w["version"], w.get("steps")) for w in run.warnings] == [
        ("order", "v1", None), ("unreached", "v1", ["audit"])]


def test_two_versions_at_once(clean_db: redis.Redis, log_dir: Path) -> None:
    """Both workers consume the same queue while runs sleep and wake: every run
    completes and every step ran exactly once, whichever worker took each pass."""
    old = worker_on(__name__, "1", log_dir, name="both-1")
    new = worker_on(__name__, "2", log_dir, name="both-2")
    try:
        rids = [run_of(client, client.emit("t/roll", {"naps": [1, 1]}), "roll")
                for _ in range(8)]
        runs = [wait_run(client, rid, timeout=90) for rid in rids]
    finally:
        old.stop()
        new.stop()
    seen: Counter[str] = Counter()
    for run in runs:
        assert run.status == "completed", run.error
        counts = executions(r, run.run_id)
        assert {k: v for k, v in counts.items() if k != "audit"} == {"a": 1, "b": 1, "c": 1}
        assert counts.get("audit", 0) <= 1
        saved = {s.step_id: s.output for s in run.steps}
        assert run.output == [saved["a"], saved["b"], saved["c"]]
        assert set(run.versions) <= {"v1", "v2"}
        seen.update(run.versions)
    print(f"passes by version (collapsed per run): {dict(seen)}")
