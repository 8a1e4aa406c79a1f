"""A deploy that changes steps in a helper module while the handlers' source stays
the same (so the function version, a fingerprint of the handler, does not change).

Runs start on version 1 of ``versioning_steps`` and sleep; the worker stops;
``fanout check-deploy`` (CLI, in a subprocess with version 2) and
``fanout.check_deploy`` (the Python API, in a subprocess with version 2, and in this
process with version 1) say what version 2 would do to them; then a worker on
version 2 wakes them. Each row of the versioning table goes on with a warning (the
retooled id fails). The same worker runs inngest-py's "inconsistent step order" case
and the guard against step ids that change on every pass.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

import fanout
from tests.scenarios import versioning_steps as steps
from tests.scenarios.versioning_helpers import CODE, counted, executions, wait_status, worker_on
from tests.support import ROOT, make_app, redis_for, run_of, wait_run

app, client = make_app(__name__)
r = redis_for(__name__)
ROWS = ("added", "changed", "renamed", "removed", "reordered", "retooled")


def _declare(row: str) -> None:
    @client.create_function(fn_id=row, trigger=fanout.TriggerEvent(event=f"t/{row}"),
                            retries=0)
    def handler(ctx: fanout.ContextSync) -> Any:
        return getattr(steps, ctx.fn_id)(r, ctx)


for _row in ROWS:
    _declare(_row)


@client.create_function(fn_id="inconsistent", trigger=fanout.TriggerEvent(event="t/inconsistent"),
                        retries=0)
def inconsistent(ctx: fanout.ContextSync) -> list[Any]:
    # inngest-py's "inconsistent step order": the order of the steps depends on the
    # pass (a counter outside any step), so it differs between passes.
    passes = r.incr(f"test:passes:{ctx.run_id}")
    if passes == 1:
        return [counted(r, ctx, "a", "a"), counted(r, ctx, "b", "b")]
    b = counted(r, ctx, "b", "b")
    return [counted(r, ctx, "a", "a"), b]


@client.create_function(fn_id="stamped", trigger=fanout.TriggerEvent(event="t/stamped"),
                        retries=0)
def stamped(ctx: fanout.ContextSync) -> Any:
    # A step id built from the time: a new step on every pass.
    counted(r, ctx, f"stamp-{time.time_ns()}", 1)
    return counted(r, ctx, "after", 2)


def _cli_check(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fanout._cli", "-A", __name__, "check-deploy", *args],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT), "FANOUT_TEST_CODE": code},
    )


_API = """
import json, fanout
from tests.scenarios import test_versioning_helpers as m
report = fanout.check_deploy(m.client, functions={fns!r})
print(json.dumps({{"ok": report.ok, "exit": report.exit_code, **report.to_json()}}))
"""


def _api_check(code: str, fns: list[str]) -> dict[str, Any]:
    res = subprocess.run(
        [sys.executable, "-c", _API.format(fns=fns)], cwd=ROOT, capture_output=True,
        text=True, timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT), "FANOUT_TEST_CODE": code},
    )
    assert res.returncode == 0, res.stderr
    data: dict[str, Any] = json.loads(res.stdout)
    return data


@pytest.fixture(scope="module")
def deployed(clean_db: redis.Redis, log_dir: Path) -> Iterator[dict[str, Any]]:
    """One run per row, put to sleep on version 1 of the helper module, checked with
    check-deploy, then woken by a worker on version 2."""
    assert CODE == "1"
    old = worker_on(__name__, "1", log_dir)
    try:
        runs = {row: run_of(client, client.emit(f"t/{row}"), row) for row in ROWS}
        wait_status(client, list(runs.values()), "sleeping")
    finally:
        old.stop()
    before = {row: client.get_run(rid) for row, rid in runs.items()}
    found: dict[str, Any] = {
        "cli": _cli_check("2", "--json"), "cli_same": _cli_check("1", "--json"),
        "cli_text": _cli_check("2", "--fn", "renamed", "--fn", "retooled"),
        "api": _api_check("2", list(ROWS)),
        "api_here": fanout.check_deploy(client),  # this process runs version 1
        "before": before,
        "after_check": {row: client.get_run(rid) for row, rid in runs.items()},
    }
    new = worker_on(__name__, "2", log_dir)
    found["worker"] = new
    try:
        found["runs"] = {row: wait_run(client, rid) for row, rid in runs.items()}
        for fn_id in ("inconsistent", "stamped"):
            found["runs"][fn_id] = wait_run(client, run_of(client, client.emit(f"t/{fn_id}"),
                                                           fn_id))
        yield found
    finally:
        new.stop()


def kinds(run: fanout.RunInfo) -> list[str]:
    return [w["kind"] for w in run.warnings]


def test_the_version_did_not_change(deployed: dict[str, Any]) -> None:
    for row in ROWS:
        run = deployed["runs"][row]
        assert run.versions == [client.functions[row].version] and not run.crossed_deploy


def test_rows_of_the_table_with_the_change_in_a_helper(deployed: dict[str, Any]) -> None:
    runs = deployed["runs"]
    want = {
        "added": (["intro2", "a1", "extra2", "b2"], {"a": 1, "intro": 1, "extra": 1, "b": 1},
                  ["order"]),
        "changed": (["a1", "b2"], {"a": 1, "b": 1}, []),
        "renamed": (["a2", "b2"], {"a": 1, "a-renamed": 1, "b": 1}, ["order", "unreached"]),
        "removed": (["a1", "b2"], {"a": 1, "x": 1, "b": 1}, ["order", "unreached"]),
        "reordered": (["b1", "a1", "c2"], {"a": 1, "b": 1, "c": 1}, ["order"]),
    }
    for row, (output, execs, warned) in want.items():
        run = runs[row]
        assert run.status == "completed", (row, run.error)
        assert run.output == output, row
        assert executions(r, run.run_id) == execs, row  # no completed step ran again
        assert kinds(run) == warned, row
    retooled = runs["retooled"]
    assert retooled.status == "failed" and retooled.error is not None
    assert retooled.error["type"] == "NonDeterminismError"
    assert "ctx.step.run" in retooled.error["message"]


def test_warnings_show_in_the_worker_log_and_fanout_run(deployed: dict[str, Any]) -> None:
    run = deployed["runs"]["renamed"]
    log = deployed["worker"].log()
    assert f"[renamed {run.run_id}] the handler reached the new step 'a-renamed'" in log
    assert "WARNING" in log.split(f"[renamed {run.run_id}]")[0].rsplit("\n", 1)[-1]
    shown = subprocess.run(
        [sys.executable, "-m", "fanout._cli", "-A", __name__, "run", run.run_id],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert shown.returncode == 0, shown.stderr
    assert "warning  [order" in shown.stdout and "warning  [unreached" in shown.stdout


def test_inconsistent_step_order_goes_on(deployed: dict[str, Any]) -> None:
    run = deployed["runs"]["inconsistent"]
    assert run.status == "completed", run.error
    assert run.output == ["a", "b"]
    assert executions(r, run.run_id) == {"a": 1, "b": 1}
    assert kinds(run) == ["order"]


def test_step_ids_from_the_time_fail_after_three_passes(deployed: dict[str, Any]) -> None:
    run = deployed["runs"]["stamped"]
    assert run.status == "failed" and run.error is not None
    assert run.error["type"] == "NonDeterminismError"
    assert "3 passes in a row" in run.error["message"] and "time" in run.error["message"]
    done = executions(r, run.run_id)
    assert "after" not in done
    assert len(done) == 3 and all(k.startswith("stamp-") for k in done)


def _by_fn(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {f["fn_id"]: f for f in report["functions"]}


def test_check_deploy_cli_predicts_what_version_2_does(deployed: dict[str, Any]) -> None:
    res = deployed["cli"]
    assert res.returncode == 1, res.stderr  # the retooled run would fail
    found = _by_fn(json.loads(res.stdout))
    runs = deployed["runs"]
    assert found["changed"]["ok"] == 1 and not found["changed"]["warn"]
    for row in ("added", "renamed", "removed", "reordered"):
        fn = found[row]
        assert fn["checked"] == 1 and not fn["fail"], row
        assert [w["run_id"] for w in fn["warn"]] == [runs[row].run_id], row
    assert found["renamed"]["warn"][0]["would_run"] == ["a-renamed"]
    assert found["renamed"]["warn"][0]["unused"] == ["a"]
    assert found["added"]["warn"][0]["would_run"] == ["intro"]
    assert [w["kind"] for w in found["removed"]["warn"][0]["warnings"]] == ["unreached"]
    assert found["removed"]["warn"][0]["unused"] == ["x"]
    assert [w["kind"] for w in found["reordered"]["warn"][0]["warnings"]] == ["order"]
    failed = found["retooled"]["fail"]
    assert [f["run_id"] for f in failed] == [runs["retooled"].run_id]
    assert failed[0]["error"]["type"] == "NonDeterminismError"
    # The same code as the runs: nothing to say, exit 0.
    same = deployed["cli_same"]
    assert same.returncode == 0, same.stderr
    assert all(not f["warn"] and not f["fail"] for f in json.loads(same.stdout)["functions"])


def test_check_deploy_text_report(deployed: dict[str, Any]) -> None:
    res = deployed["cli_text"]
    assert res.returncode == 1, res.stderr
    text = res.stdout
    runs = deployed["runs"]
    assert "tests:renamed (version src-" in text and "1 would warn, 0 would fail" in text
    assert f"warn  {runs['renamed'].run_id}  (sleeping)" in text
    assert "would run ['a-renamed'] before the saved step(s) ['a']" in text
    assert f"FAIL  {runs['retooled'].run_id}  (sleeping)" in text
    assert "NonDeterminismError: step 'a' was memoized as ctx.step.run" in text
    assert text.rstrip().endswith("FAIL: 1 run(s) would fail, 1 would go on with a warning")
    assert "tests:added" not in text  # --fn keeps the others out


def test_check_deploy_api(deployed: dict[str, Any]) -> None:
    api = deployed["api"]
    assert api["ok"] is False and api["exit"] == 1
    found = _by_fn(api)
    assert set(found) == set(ROWS)
    assert [f["error"]["type"] for f in found["retooled"]["fail"]] == ["NonDeterminismError"]
    assert found["renamed"]["warn"][0]["would_run"] == ["a-renamed"]
    here = deployed["api_here"]
    assert here.ok and here.exit_code == 0 and not here.warned
    assert len(here.function("added").runs) == 1


def test_check_deploy_touches_nothing(deployed: dict[str, Any]) -> None:
    for row in ROWS:
        before, after = deployed["before"][row], deployed["after_check"][row]
        assert after.status == before.status == "sleeping"
        assert after.warnings == before.warnings == []
        assert [s.step_id for s in after.steps] == [s.step_id for s in before.steps]
        assert after.versions == before.versions


@pytest.mark.parametrize(("args", "says"), [
    (["--fn", "nope"], "no function 'nope'"),
    (["--limit", "0"], "argument --limit: must be from 1 to"),
])
def test_check_deploy_usage_errors_exit_2(args: list[str], says: str) -> None:
    res = subprocess.run(
        [sys.executable, "-m", "fanout._cli", "-A", __name__, "check-deploy", *args],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert res.returncode == 2, (res.stdout, res.stderr)
    assert says in res.stderr
