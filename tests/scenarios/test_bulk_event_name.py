"""Bulk jobs filtered by the name of the event that started the runs.

Two paused functions hold their runs queued: ``hold`` on three event names, ``also``
on the first only, so ``bev/a`` starts runs of both. A real `celery worker` runs the
jobs. The filter is read the way a user reads it: ``bulk_cancel`` / ``bulk_replay``
(the dry-run count against ``list_runs(event_name=...)``, then a job that cancels
exactly the runs of one name), ``fanout cancel --event-name --dry-run`` in a
subprocess, and the runs page of ``fanout dashboard`` filtered by event, whose
"Cancel all N matching" starts a job over exactly the runs that page lists.
"""

from __future__ import annotations

import html
import json
import os
import re
import subprocess
import sys
import urllib.parse
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

import fanout
from fanout._redis.bulk_store import BulkJob, BulkQuery
from tests import browser as _browser
from tests.support import ROOT, make_app, wait_for

app, client = make_app(__name__, app_id="bev")
MOD = __name__
A, B, C = "bev/a", "bev/b", "bev/c"
N_A, N_B, N_C = 5, 3, 4


@client.create_function(fn_id="hold", trigger=[fanout.TriggerEvent(event=A),
                                               fanout.TriggerEvent(event=B),
                                               fanout.TriggerEvent(event=C)])
def hold(ctx: fanout.ContextSync) -> str:
    return "ran"


@client.create_function(fn_id="also", trigger=fanout.TriggerEvent(event=A))
def also(ctx: fanout.ContextSync) -> str:
    return "ran"


def ids(page: Any) -> set[str]:
    return {x.run_id for x in page}


@pytest.fixture(scope="module")
def parked(worker: object) -> None:
    for fn_id in ("hold", "also"):
        client.pause(fn_id)
    for name, n in ((A, N_A), (B, N_B), (C, N_C)):
        client.send_sync([fanout.Event(name=name, data={"i": i}) for i in range(n)])
    wait_for(lambda: client.list_runs(status="active", limit=1).total == 2 * N_A + N_B + N_C,
             120, 0.2)


def finished(job_id: str) -> BulkJob:
    job: BulkJob = wait_for(
        lambda: (j if (j := client.bulk_job(job_id)) is not None and j.finished else None),
        120, interval=0.2)
    return job


def test_dry_run_counts_what_list_runs_lists(parked: None) -> None:
    listed = client.list_runs(event_name=A, status="active")
    assert listed.total == 2 * N_A
    preview = client.bulk_cancel(event_name=A, dry_run=True)
    assert (preview.state, preview.total) == ("dry-run", listed.total)
    assert preview.query.event_name == A and "event=bev/a" in preview.query.describe()
    assert len(preview.sample) == 10 and set(preview.sample) <= ids(listed)
    one = client.bulk_cancel("hold", event_name=A, dry_run=True)
    assert one.total == client.list_runs(fn_id="hold", event_name=A).total == N_A
    assert set(one.sample) == ids(client.list_runs(fn_id="hold", event_name=A))
    again = client.bulk_replay(event_name=B, dry_run=True)
    assert again.total == client.list_runs(event_name=B).total == N_B
    assert set(again.sample) == ids(client.list_runs(event_name=B))
    assert client.bulk_cancel(event_name="bev/none", dry_run=True).total == 0


@pytest.mark.parametrize("bad", [7, ""])
def test_bad_event_name_is_named(bad: Any) -> None:
    for call in (client.bulk_cancel, client.bulk_replay):
        with pytest.raises(fanout.ConfigError, match="event_name must be an event's name"):
            call(event_name=bad, dry_run=True)
    from fanout._celery.bulk_jobs import submit

    with pytest.raises(fanout.ConfigError, match="event_name must be an event's name"):
        submit(client._rt, "cancel", BulkQuery(fn_key="bev:hold", event_name=bad),
               who="t", reason="", client="python", dry_run=True)


def test_a_stored_job_keeps_the_event_name_and_one_from_before_loads() -> None:
    q = BulkQuery(fn_key="bev:hold", status="active", event_name=A)
    assert BulkQuery.from_json(json.loads(json.dumps(q.to_json()))) == q
    old = {"fn_key": "bev:hold", "status": "active", "since": None, "until": None,
           "version": None, "search": {}, "include_replays": False}  # no event_name
    job = BulkJob.from_fields("j1", {"kind": "cancel", "query": json.dumps(old)})
    assert job.query == BulkQuery(fn_key="bev:hold", status="active")
    assert job.query.event_name is None and "event" not in job.query.describe()


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("FANOUT_DEBUG", None)
    return subprocess.run([sys.executable, "-m", "fanout._cli", *args, "-A", MOD], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=120)


def test_cli_dry_run_by_event_name(parked: None) -> None:
    res = cli("cancel", "--event-name", A, "--dry-run", "--json")
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["matched"] == 2 * N_A and out["complete"]
    assert set(out["run_ids"]) == ids(client.list_runs(event_name=A, status="active"))
    res = cli("cancel", "--event-name", A, "--fn", "also", "--dry-run")
    assert res.returncode == 0, res.stderr
    assert f"{N_A} run(s) match fn=bev:also status=active event={A}" in res.stdout
    res = cli("replay", "--event-name", C, "--dry-run", "--json")
    assert json.loads(res.stdout)["matched"] == N_C
    empty = cli("cancel", "--event-name", "", "--dry-run")
    assert empty.returncode == 2 and "event_name must be an event's name" in empty.stderr
    # Nothing changed.
    assert client.list_runs(status="active", limit=1).total == 2 * N_A + N_B + N_C


def test_bulk_cancel_by_event_name_cancels_exactly_those(parked: None) -> None:
    others = {name: ids(client.list_runs(event_name=name, status="active")) for name in (A, C)}
    wanted = ids(client.list_runs(event_name=B))
    job = client.bulk_cancel(event_name=B, reason="bad batch", by="tester")
    assert job.total == N_B
    job = finished(job.id)
    assert (job.state, job.done, job.failed, job.skipped) == ("done", N_B, 0, 0)
    assert job.query.event_name == B  # read back from the stored job
    assert ids(client.list_runs(event_name=B, status="cancelled")) == wanted
    for name, found in others.items():
        assert ids(client.list_runs(event_name=name, status="active")) == found


@pytest.fixture(scope="module")
def dashboard(parked: None) -> Iterator[str]:
    yield from _browser.serve_dashboard(MOD)


def get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=60) as res:
        return str(res.read().decode())


def test_dashboard_cancel_all_matching_on_an_event_filtered_page(dashboard: str) -> None:
    listed = ids(client.list_runs(event_name=C, fn_id="hold"))
    assert len(listed) == N_C
    page = get(f"{dashboard}/runs?{urllib.parse.urlencode({'fn': 'bev:hold', 'event_name': C})}")
    assert f"{N_C} run(s) match" in page
    m = re.search(r'id="cancel-all" href="([^"]+)">Cancel all (\d+) matching', page)
    assert m and int(m.group(2)) == N_C
    assert 'id="replay-all"' in page
    confirm = get(dashboard + html.unescape(m.group(1)))
    assert re.search(rf"<strong>{N_C}</strong> run\(s\) match <code>fn=bev:hold "
                     rf"status=active event={C}</code>", confirm)
    form = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">', confirm))
    assert form["event_name"] == C and form["expect"] == str(N_C)
    form = {k: html.unescape(v) for k, v in form.items()} | {"reason": "from the page"}
    req = urllib.request.Request(f"{dashboard}/actions/bulk-job", method="POST",
                                 data=urllib.parse.urlencode(form).encode(),
                                 headers={"Origin": dashboard})
    with urllib.request.urlopen(req, timeout=60) as res:
        assert "/bulk/" in res.url, res.url
        job_id = res.url.split("/bulk/")[1].split("?")[0]
    job = finished(job_id)
    assert (job.done, job.total, job.query.event_name) == (N_C, N_C, C)
    assert ids(client.list_runs(event_name=C, status="cancelled")) == listed
    assert client.list_runs(event_name=A, status="active").total == 2 * N_A
