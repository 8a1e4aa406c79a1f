"""Runs filtered by the name of the event that started them, with Redis alone.

Two event names, ``order/created`` and ``order/paid``: ``ship`` runs on both, ``audit``
on ``order/created`` only, ``tally`` batches both (a batch run is listed under each
name of its events) and one ``audit`` run is invoked (its event is
``fanout/function.invoked``). A real `celery worker` runs them all; the filter is read
the way a user reads it: ``list_runs``, ``fanout runs --event-name`` in a subprocess
and the dashboard's runs page from ``fanout dashboard``. Then the index is dropped as
a store from before it would lack it, and ``fanout reindex`` writes it back.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import subprocess
import sys
import urllib.parse
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

import fanout
from fanout._core.event import INVOKE_EVENT
from tests import browser as _browser
from tests.support import ROOT, make_app, redis_for, wait_for, wait_run

app, client = make_app(__name__, app_id="evn")
MOD = __name__
r = redis_for(__name__)
CREATED, PAID = "order/created", "order/paid"
N_CREATED, N_PAID = 7, 3


@client.create_function(fn_id="ship", trigger=[fanout.TriggerEvent(event=CREATED),
                                               fanout.TriggerEvent(event=PAID)])
def ship(ctx: fanout.ContextSync) -> str:
    return str(ctx.event.name)


@client.create_function(fn_id="audit", trigger=fanout.TriggerEvent(event=CREATED))
def audit(ctx: fanout.ContextSync) -> str:
    return str(ctx.event.name)


@client.create_function(fn_id="tally", trigger=[fanout.TriggerEvent(event="tally/a"),
                                                fanout.TriggerEvent(event="tally/b")],
                        batch_events=fanout.Batch(max_size=2, timeout="2s"))
def tally(ctx: fanout.ContextSync) -> list[str]:
    return sorted({str(e.name) for e in ctx.events})


def names_of(run_id: str) -> set[str]:
    """The names of a run's events, read from its record."""
    f = client.runtime.store.run_fields(run_id)
    events = json.loads(f.get("events") or "[]") or [json.loads(f["event"])]
    return {e["name"] for e in events}


def tallied() -> bool:
    """Every tally event is in a tally run that has ended."""
    found = client.list_runs(fn_id="tally")
    return (sum(len(json.loads(client.runtime.store.run_fields(x.run_id).get("events") or "[]"))
                for x in found) == 3 and all(x.status == "completed" for x in found))


@pytest.fixture(scope="module")
def runs(worker: object) -> dict[str, Any]:
    client.send_sync([fanout.Event(name=CREATED, data={"i": i}) for i in range(N_CREATED)])
    client.send_sync([fanout.Event(name=PAID, data={"i": i}) for i in range(N_PAID)])
    client.send_sync([fanout.Event(name="tally/a", data={}), fanout.Event(name="tally/b", data={}),
                      fanout.Event(name="tally/a", data={})])
    invoked = client.invoke("audit", {"by": "hand"})
    want = 2 * N_CREATED + N_PAID + 1
    wait_for(lambda: client.list_runs(fn_id="ship", limit=1).total
             + client.list_runs(fn_id="audit", limit=1).total == want, 120, 0.3)
    wait_for(tallied, 120, 0.3)
    wait_for(lambda: client.list_runs(status="active", limit=1).total == 0, 120, 0.3)
    tallies = [x.run_id for x in client.list_runs(fn_id="tally")]
    assert tallies
    return {"invoked": wait_run(client, invoked).run_id, "tallies": tallies}


def ids(page: Any) -> list[str]:
    return [x.run_id for x in page]


def test_list_runs_by_event_name_is_exact(runs: dict[str, Any]) -> None:
    tally_a = {t for t in runs["tallies"] if "tally/a" in names_of(t)}
    tally_b = {t for t in runs["tallies"] if "tally/b" in names_of(t)}
    assert tally_a and tally_b  # the b event joined a batch with an a event or its own
    created = client.list_runs(event_name=CREATED)
    assert created.total == len(created) == 2 * N_CREATED
    assert {x.fn_id for x in created} == {"ship", "audit"}
    assert all(x.output == CREATED for x in created)
    paid = client.list_runs(event_name=PAID)
    assert paid.total == N_PAID and {x.fn_id for x in paid} == {"ship"}
    assert client.list_runs(event_name=CREATED, fn_id="audit").total == N_CREATED
    assert client.list_runs(event_name=PAID, fn_id="audit").total == 0
    assert client.list_runs(event_name=CREATED, status="completed").total == 2 * N_CREATED
    assert client.list_runs(event_name=CREATED, status="failed").total == 0
    assert ids(client.list_runs(event_name=INVOKE_EVENT)) == [runs["invoked"]]
    # A batch run is listed under each name of its events.
    assert set(ids(client.list_runs(event_name="tally/a"))) == tally_a
    assert set(ids(client.list_runs(event_name="tally/b", fn_id="tally"))) == tally_b
    assert client.list_runs(event_name="no/such").total == 0


def test_pages_both_ways(runs: dict[str, Any]) -> None:
    everything = ids(client.list_runs(event_name=CREATED))
    first = client.list_runs(event_name=CREATED, limit=4)
    assert ids(first) == everything[:4] and first.total == 2 * N_CREATED and first.next_cursor
    second = client.list_runs(event_name=CREATED, limit=4, cursor=first.next_cursor)
    assert ids(second) == everything[4:8] and second.prev_cursor
    back = client.list_runs(event_name=CREATED, limit=4, cursor=second.prev_cursor)
    assert ids(back) == ids(first)
    oldest = client.runtime.store.run_info(everything[-1])
    assert oldest is not None and oldest.created_at is not None
    assert client.list_runs(event_name=CREATED, since=oldest.created_at - _dt.timedelta(seconds=0.5)).total \
        == 2 * N_CREATED
    assert client.list_runs(event_name=CREATED, until=oldest.created_at - _dt.timedelta(seconds=0.5)).total == 0


def test_bad_event_name_is_named() -> None:
    with pytest.raises(fanout.ConfigError, match="event_name must be"):
        client.list_runs(event_name=7)  # type: ignore[arg-type]


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("FANOUT_DEBUG", None)
    return subprocess.run([sys.executable, "-m", "fanout._cli", *args, "-A", MOD], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=120)


def test_cli_filters_by_event_name(runs: dict[str, Any]) -> None:
    res = cli("runs", "--event-name", CREATED, "--json", "--limit", "5")
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["total"] == 2 * N_CREATED and len(out["runs"]) == 5
    assert [x["run_id"] for x in out["runs"]] == ids(client.list_runs(event_name=CREATED))[:5]
    paid = json.loads(cli("runs", "--event-name", PAID, "--fn", "ship", "--json").stdout)
    assert paid["total"] == N_PAID and {x["fn_id"] for x in paid["runs"]} == {"ship"}
    text = cli("runs", "--event-name", PAID)
    assert text.returncode == 0 and f"{N_PAID} run(s) match" in text.stderr
    none = cli("runs", "--event-name", "no/such")
    assert none.returncode == 0 and none.stdout.strip() == "no runs match --event-name no/such"


@pytest.fixture(scope="module")
def dashboard(runs: dict[str, Any]) -> Iterator[str]:
    yield from _browser.serve_dashboard(MOD)


def get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=60) as res:
        return str(res.read().decode())


def test_dashboard_runs_page_filters_by_event_name(dashboard: str) -> None:
    q = urllib.parse.urlencode({"event_name": CREATED, "fn": "ship"})
    api = json.loads(get(f"{dashboard}/api/runs?{q}"))
    assert api["total"] == N_CREATED and len(api["runs"]) == N_CREATED
    assert {x["fn_id"] for x in api["runs"]} == {"ship"}
    page = get(f"{dashboard}/runs?{urllib.parse.urlencode({'event_name': PAID})}")
    assert f"{N_PAID} run(s) match" in page
    assert f'name="event_name" value="{PAID}"' in page
    # A bulk job takes the event name: "all matching" beside this filter too, for the
    # runs the page counts (tests/scenarios/test_bulk_event_name.py starts one).
    assert 'id="cancel-all"' in get(f"{dashboard}/runs?fn=evn:ship")
    assert f"Replay all {N_PAID} matching" in get(f"{dashboard}/runs?fn=evn:ship&event_name={PAID}")


def test_reindex_backfills_the_index(runs: dict[str, Any]) -> None:
    keys = client.runtime.store.keys
    before = {name: ids(client.list_runs(event_name=name)) for name in (CREATED, PAID)}
    # A store from before this index: no event-name sets, the backfill not done.
    dropped = [k for pat in (f"{keys.prefix}:idx:en:*", f"{keys.prefix}:idx:fn:*|en:*")
               for k in r.scan_iter(match=pat)]
    assert dropped
    r.delete(*dropped, keys.reindexed)
    assert client.list_runs(event_name=CREATED).total == 0
    res = cli("reindex")
    assert res.returncode == 0, res.stderr
    for name, found in before.items():
        assert ids(client.list_runs(event_name=name)) == found
    assert set(ids(client.list_runs(event_name="tally/b"))) == {
        t for t in runs["tallies"] if "tally/b" in names_of(t)}
