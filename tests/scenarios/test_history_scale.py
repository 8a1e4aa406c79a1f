"""Exact lists, counts and search over 20,000 runs, the 200 failed ones the oldest.

What is real here: the 200 failed runs and the 300 runs with search attributes are
sent as events and run by a real `celery worker` subprocess (the router creates them,
the worker fails or completes them through the run scripts). The other 19,500 runs
are created and ended in this process through the store's own run scripts
(``Store.create_runs`` and ``Store.finish_run``: the same ``create_run`` and
``finish_run`` Lua that a worker runs, so the same index writes), because running
19,500 no-op runs through a worker would take minutes on a shared machine. They are
created after the failed ones, so a listing that scanned newest first, as before,
would find no failed run in its first 19,800 entries.

Then every view is read the way a user reads it (the event-name filter in Python): ``list_runs`` in Python, ``fanout
runs`` in a subprocess, the dashboard's runs page, its counts and the overview over
HTTP from ``fanout dashboard`` in a subprocess.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import fanout
from fanout._core.ids import new_token
from fanout._core.run_record import new_run_fields
from tests import browser as _browser
from tests.support import make_app, wait_for

app, client = make_app(__name__, app_id="scale")
MOD = __name__
ROOT = Path(__file__).resolve().parents[2]
FAILED, FOUND, BULK = 200, 300, 19_500
TOTAL = FAILED + FOUND + BULK


@client.create_function(fn_id="charge", trigger=fanout.TriggerEvent(event="scale/charge"),
                        retries=0)
def charge(ctx: fanout.ContextSync) -> None:
    def declined() -> None:
        raise fanout.NonRetriableError("card declined")

    ctx.step.run("charge", declined)


@client.create_function(fn_id="order", trigger=fanout.TriggerEvent(event="scale/order"),
                        search=["data.user_id", "output.order_id"])
def order(ctx: fanout.ContextSync) -> dict[str, str]:
    return {"order_id": f"A-{ctx.event.data['user_id']}"}


@client.create_function(fn_id="bulk", trigger=fanout.TriggerEvent(event="scale/bulk"))
def bulk(ctx: fanout.ContextSync) -> None:
    return None


def _bulk_runs(n: int) -> None:
    """``n`` runs of ``bulk`` created and completed through the store's run scripts."""
    store = client.runtime.store
    fn = client.functions["bulk"]
    for start in range(0, n, 1000):
        runs = []
        for i in range(start, min(n, start + 1000)):
            rid = new_token()
            runs.append((rid, fn.key, new_run_fields(
                fn.fn_id, fn.app_id, fn.key, {"name": "scale/bulk", "data": {"i": i}},
                event_ids=[], created=repr(time.time()), creation=fn.creation_fields())))
        store.create_runs(runs)
        for rid, _k, _f in runs:
            assert store.finish_run(rid, "", "completed", {"out": "null"}) == 1


@pytest.fixture(scope="module")
def history(worker: object) -> dict[str, Any]:
    client.send_sync([fanout.Event(name="scale/charge", data={"n": i}) for i in range(FAILED)])
    wait_for(lambda: client.list_runs(fn_id="charge", status="failed", limit=1).total == FAILED,
             120, 0.5)
    client.send_sync([fanout.Event(name="scale/order", data={"user_id": i})
                      for i in range(FOUND)])
    wait_for(lambda: client.list_runs(fn_id="order", status="completed", limit=1).total == FOUND,
             120, 0.5)
    _bulk_runs(BULK)
    return {}


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("FANOUT_DEBUG", None)
    return subprocess.run([sys.executable, "-m", "fanout._cli", *args, "-A", MOD], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def dashboard(history: dict[str, Any]) -> Iterator[str]:
    yield from _browser.serve_dashboard(MOD)


def get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=60) as res:
        return str(res.read().decode())


def test_list_runs_failed_is_exact(history: dict[str, Any]) -> None:
    assert client.list_runs(limit=1).total == TOTAL
    first = client.list_runs(status="failed")
    assert len(first) == 100 and first.total == FAILED
    assert {r.status for r in first} == {"failed"} and first.next_cursor
    second = client.list_runs(status="failed", cursor=first.next_cursor)
    assert len(second) == 100 and second.next_cursor is None
    assert len({r.run_id for r in [*first, *second]}) == FAILED
    # Back from the second page: the first again.
    assert second.prev_cursor
    back = client.list_runs(status="failed", cursor=second.prev_cursor)
    assert [r.run_id for r in back] == [r.run_id for r in first]
    assert client.list_runs(fn_id="bulk", status="completed", limit=1).total == BULK
    assert client.list_runs(status="completed", limit=1).total == FOUND + BULK


def test_event_name_filter_is_exact(history: dict[str, Any]) -> None:
    failed = client.list_runs(event_name="scale/charge")
    assert failed.total == FAILED and len(failed) == 100 and {r.status for r in failed} == {
        "failed"}
    assert client.list_runs(event_name="scale/bulk", status="completed", limit=1).total == BULK
    assert client.list_runs(event_name="scale/bulk", fn_id="charge", limit=1).total == 0
    assert client.list_runs(event_name="scale/order", fn_id="order", limit=1).total == FOUND


def test_search_attributes_find_their_run(history: dict[str, Any]) -> None:
    found = client.list_runs(fn_id="order", search={"data.user_id": 123})
    assert len(found) == 1 and found.total == 1 and found[0].output == {"order_id": "A-123"}
    by_output = client.list_runs(search={"output.order_id": "A-7"})
    assert [r.output for r in by_output] == [{"order_id": "A-7"}]
    assert client.list_runs(search={"data.user_id": 4242}).total == 0
    with pytest.raises(fanout.ConfigError, match="search attribute 'user_id' must be a path"):
        client.create_function(fn_id="bad", trigger=fanout.TriggerEvent(event="x"),
                               search=["user_id"])


def test_cli_lists_failed_runs_exactly(history: dict[str, Any]) -> None:
    res = cli("runs", "--status", "failed", "--limit", "50", "--json")
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert len(out["runs"]) == 50 and out["total"] == FAILED
    assert {r["status"] for r in out["runs"]} == {"failed"}
    text = cli("runs", "--status", "failed")
    assert text.returncode == 0
    assert sum(" failed " in f" {line} " for line in text.stdout.splitlines()) == 20, text.stdout
    assert "200 run(s) match" in text.stderr
    none = cli("runs", "--status", "cancelled")
    assert none.returncode == 0 and none.stdout.strip() == "no runs match --status cancelled"
    bad = cli("runs", "--status", "nope")
    assert bad.returncode == 2 and "unknown run status 'nope'" in bad.stderr
    exact = cli("runs", "--search", "data.user_id=123", "--json")
    assert exact.returncode == 0, exact.stderr
    hit = json.loads(exact.stdout)
    assert hit["exact"] and hit["total"] == 1 and len(hit["runs"]) == 1
    # A path no function declares: a look through the runs that says how far it got.
    look = cli("runs", "--search", "data.plan=pro", "--look", "500")
    assert look.returncode == 0
    m = re.search(r"looked at (\d+) of (\d+) runs, continue with --cursor (\S+)", look.stderr)
    assert m and m.group(1) == "500" and m.group(2) == str(TOTAL), look.stderr
    more = cli("runs", "--search", "data.plan=pro", "--look", "500", "--cursor", m.group(3))
    assert f"looked at 500 of {TOTAL} runs" in more.stderr


def test_dashboard_filter_counts_and_overview(dashboard: str) -> None:
    api = json.loads(get(dashboard + "/api/runs?status=failed"))
    assert len(api["runs"]) == 50 and api["total"] == FAILED
    assert {r["status"] for r in api["runs"]} == {"failed"}
    page = get(dashboard + "/runs?status=failed")
    assert page.count('<span class="status failed">failed</span>') == 50 + 1  # rows + chip
    assert f"{FAILED} run(s) match" in page
    counts = re.search(r'id="status-counts">(.*?)</div>', page, re.S)
    assert counts, page[:2000]
    chips = dict(re.findall(r'data-status="(\w+)">.*?</span> (\d+)</a>', counts.group(1)))
    assert chips == {"completed": str(FOUND + BULK), "failed": str(FAILED)}, counts.group(1)
    ov = json.loads(get(dashboard + "/api/overview"))
    hour = ov["last_hour"]
    assert hour["failed"] == FAILED and hour["completed"] == FOUND + BULK
    assert hour["runs"] == TOTAL
    charge_fn = next(f for f in ov["functions"] if f["fn"] == "scale:charge")
    assert charge_fn["last_hour"]["failed"] == FAILED
    assert charge_fn["last_hour"]["failure_rate"] == 1.0
    hit = json.loads(get(dashboard + "/api/runs?" + urllib.parse.urlencode(
        {"q": "data.user_id=123"})))
    assert hit["exact"] and len(hit["runs"]) == 1 and hit["total"] == 1
    look = get(dashboard + "/runs?" + urllib.parse.urlencode({"q": "data.plan=pro"}))
    assert f"looked at 2000 of {TOTAL} runs" in look and 'id="keep-looking"' in look
