"""A deploy under runs in flight, one function per row of the versioning table.

Runs start on version 1 of this module and sleep; the worker stops; a worker on
version 2 (same app and function ids, ``FANOUT_TEST_CODE=2``) wakes them. Each test
checks one row: the outcome, the output, the warnings recorded on the run, and that
no completed step ran again (executions are counted in Redis).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

import fanout
from tests.scenarios.versioning_helpers import CODE, counted, executions, wait_status, worker_on
from tests.support import ROOT, make_app, redis_for, run_of, wait_run

app, client = make_app(__name__)
r = redis_for(__name__)
NAP = "4s"
ROWS = ("added", "changed", "renamed", "removed", "reordered", "retooled")


def trig(fn_id: str) -> fanout.TriggerEvent:
    return fanout.TriggerEvent(event=f"t/{fn_id}")


if CODE == "1":

    @client.create_function(fn_id="added", trigger=trig("added"))
    def added(ctx: fanout.ContextSync) -> list[Any]:
        a = counted(r, ctx, "a", "a1")
        ctx.step.sleep("nap", NAP)
        return [a, counted(r, ctx, "b", "b1")]

    @client.create_function(fn_id="changed", trigger=trig("changed"))
    def changed(ctx: fanout.ContextSync) -> list[Any]:
        a = counted(r, ctx, "a", "a1")
        ctx.step.sleep("nap", NAP)
        return [a, counted(r, ctx, "b", "b1")]

    @client.create_function(fn_id="renamed", trigger=trig("renamed"))
    def renamed(ctx: fanout.ContextSync) -> list[Any]:
        a = counted(r, ctx, "a", "a1")
        ctx.step.sleep("nap", NAP)
        return [a, counted(r, ctx, "b", "b1")]

    @client.create_function(fn_id="removed", trigger=trig("removed"))
    def removed(ctx: fanout.ContextSync) -> list[Any]:
        a = counted(r, ctx, "a", "a1")
        x = counted(r, ctx, "x", "x1")
        ctx.step.sleep("nap", NAP)
        return [a, x, counted(r, ctx, "b", "b1")]

    @client.create_function(fn_id="reordered", trigger=trig("reordered"))
    def reordered(ctx: fanout.ContextSync) -> list[Any]:
        a = counted(r, ctx, "a", "a1")
        b = counted(r, ctx, "b", "b1")
        ctx.step.sleep("nap", NAP)
        return [a, b, counted(r, ctx, "c", "c1")]

    @client.create_function(fn_id="retooled", trigger=trig("retooled"))
    def retooled(ctx: fanout.ContextSync) -> list[Any]:
        a = counted(r, ctx, "a", "a1")
        ctx.step.sleep("nap", NAP)
        return [a]

else:

    @client.create_function(fn_id="added", trigger=trig("added"))
    def added(ctx: fanout.ContextSync) -> list[Any]:
        intro = counted(r, ctx, "intro", "intro2")  # a new step at the top
        a = counted(r, ctx, "a", "a2")
        ctx.step.sleep("nap", NAP)
        extra = counted(r, ctx, "extra", "extra2")  # and one after the sleep
        return [intro, a, extra, counted(r, ctx, "b", "b2")]

    @client.create_function(fn_id="changed", trigger=trig("changed"))
    def changed(ctx: fanout.ContextSync) -> list[Any]:
        a = counted(r, ctx, "a", "a2")
        ctx.step.sleep("nap", NAP)
        return [a, counted(r, ctx, "b", "b2")]

    @client.create_function(fn_id="renamed", trigger=trig("renamed"))
    def renamed(ctx: fanout.ContextSync) -> list[Any]:
        a = counted(r, ctx, "a-renamed", "a2")
        ctx.step.sleep("nap", NAP)
        return [a, counted(r, ctx, "b", "b2")]

    @client.create_function(fn_id="removed", trigger=trig("removed"))
    def removed(ctx: fanout.ContextSync) -> list[Any]:
        a = counted(r, ctx, "a", "a2")
        ctx.step.sleep("nap", NAP)
        return [a, counted(r, ctx, "b", "b2")]

    @client.create_function(fn_id="reordered", trigger=trig("reordered"))
    def reordered(ctx: fanout.ContextSync) -> list[Any]:
        b = counted(r, ctx, "b", "b2")
        a = counted(r, ctx, "a", "a2")
        ctx.step.sleep("nap", NAP)
        return [b, a, counted(r, ctx, "c", "c2")]

    @client.create_function(fn_id="retooled", trigger=trig("retooled"))
    def retooled(ctx: fanout.ContextSync) -> list[Any]:
        ctx.step.sleep("a", "1s")  # the id of a completed ctx.step.run
        ctx.step.sleep("nap", NAP)
        return []


@pytest.fixture(scope="module")
def deployed(clean_db: redis.Redis, log_dir: Path) -> Iterator[dict[str, fanout.RunInfo]]:
    """One run per row: started and put to sleep on version 1, woken on version 2."""
    old = worker_on(__name__, "1", log_dir)
    try:
        runs = {row: run_of(client, client.emit(f"t/{row}"), row) for row in ROWS}
        wait_status(client, list(runs.values()), "sleeping")
    finally:
        old.stop()
    new = worker_on(__name__, "2", log_dir)
    try:
        yield {row: wait_run(client, rid) for row, rid in runs.items()}
    finally:
        new.stop()


def kinds(run: fanout.RunInfo) -> list[str]:
    return [w["kind"] for w in run.warnings]


def test_added_step_runs_when_reached(deployed: dict[str, fanout.RunInfo]) -> None:
    run = deployed["added"]
    assert run.status == "completed", run.error
    assert run.output == ["intro2", "a1", "extra2", "b2"]
    assert executions(r, run.run_id) == {"a": 1, "intro": 1, "extra": 1, "b": 1}
    assert kinds(run) == ["order"] and "'intro'" in run.warnings[0]["message"]


def test_changed_code_keeps_saved_results(deployed: dict[str, fanout.RunInfo]) -> None:
    run = deployed["changed"]
    assert run.status == "completed", run.error
    assert run.output == ["a1", "b2"]  # a: saved by version 1; b: new code
    assert executions(r, run.run_id) == {"a": 1, "b": 1}
    assert run.warnings == []


def test_renamed_step_is_a_new_step(deployed: dict[str, fanout.RunInfo]) -> None:
    run = deployed["renamed"]
    assert run.status == "completed", run.error
    assert run.output == ["a2", "b2"]
    assert executions(r, run.run_id) == {"a": 1, "a-renamed": 1, "b": 1}
    assert kinds(run) == ["order", "unreached"]
    assert run.warnings[1]["steps"] == ["a"]


def test_removed_step_result_stays_unused(deployed: dict[str, fanout.RunInfo]) -> None:
    run = deployed["removed"]
    assert run.status == "completed", run.error
    assert run.output == ["a1", "b2"]
    assert executions(r, run.run_id) == {"a": 1, "x": 1, "b": 1}
    assert kinds(run) == ["order", "unreached"] and run.warnings[1]["steps"] == ["x"]
    assert next(s for s in run.steps if s.step_id == "x").output == "x1"


def test_reordered_steps_return_saved_results(deployed: dict[str, fanout.RunInfo]) -> None:
    run = deployed["reordered"]
    assert run.status == "completed", run.error
    assert run.output == ["b1", "a1", "c2"]
    assert executions(r, run.run_id) == {"a": 1, "b": 1, "c": 1}
    assert kinds(run) == ["order"] and "reordered" in run.warnings[0]["message"]


def test_id_reused_by_another_tool_fails_naming_both(deployed: dict[str, fanout.RunInfo]) -> None:
    run = deployed["retooled"]
    assert run.status == "failed" and run.error is not None
    assert run.error["type"] == "NonDeterminismError"
    assert "ctx.step.run" in run.error["message"] and "ctx.step.sleep" in run.error["message"]
    assert executions(r, run.run_id) == {"a": 1}


def test_runs_record_the_versions_they_ran_on(deployed: dict[str, fanout.RunInfo]) -> None:
    for row, run in deployed.items():
        mine = client.functions[row].version  # this process runs version 1
        assert run.version == mine and len(run.versions) == 2 and run.versions[0] == mine
        assert run.versions[1] != mine and run.crossed_deploy
    v1 = client.functions["added"].version
    v2 = deployed["added"].versions[1]
    assert [i.run_id for i in client.list_runs(fn_id="added", version=v2)] == [
        deployed["added"].run_id]
    assert client.list_runs(fn_id="added", version="no-such-version") == []
    res = subprocess.run(
        [sys.executable, "-m", "fanout._cli", "-A", __name__, "runs", "--fn", "added",
         "--version", v2, "--json"], cwd=ROOT, capture_output=True, text=True, timeout=60,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert res.returncode == 0, res.stderr
    listed = json.loads(res.stdout)["runs"]
    assert [x["run_id"] for x in listed] == [deployed["added"].run_id]
    assert listed[0]["crossed_deploy"] and listed[0]["versions"] == [v1, v2]
    shown = subprocess.run(
        [sys.executable, "-m", "fanout._cli", "-A", __name__, "run", deployed["added"].run_id],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert f"version  {v1} -> {v2}  (crossed a deploy)" in shown.stdout, shown.stdout
    assert "warning  [order" in shown.stdout


def test_dashboard_filters_by_version_and_shows_warnings(
    deployed: dict[str, fanout.RunInfo],
) -> None:
    import urllib.parse
    import urllib.request

    from fanout._dashboard import DashboardServer
    from fanout._ops.locate import locate

    run = deployed["removed"]
    v1, v2 = run.versions
    server = DashboardServer(locate(__name__), port=0).start()
    try:
        def get(path: str, **q: str) -> str:
            url = f"{server.url}{path}?{urllib.parse.urlencode(q)}"
            with urllib.request.urlopen(url, timeout=10) as resp:
                return str(resp.read().decode())

        listed = json.loads(get("/api/runs", fn="tests:removed", version=v2))["runs"]
        assert [x["run_id"] for x in listed] == [run.run_id]
        assert json.loads(get("/api/runs", fn="tests:removed", version="nope"))["runs"] == []
        html = get("/runs", fn="tests:removed", version=v1)
        assert run.run_id in html and 'name="version"' in html and "crossed a deploy" in html
        page = get(f"/runs/{run.run_id}")
        assert "crossed a deploy" in page and f"{v1} → {v2}" in page
        assert "unreached" in page and "run-warning" in page
    finally:
        server.shutdown()
