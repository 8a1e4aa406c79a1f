"""The dashboard over time and in place, in real Chromium against `fanout dashboard`
and a real worker: charts of the last hour, day and week drawn from the metrics
rollups, pages that refresh without reloading (304 while nothing changed), a
waiting run's "send the matching event" (and the links between the event and the
run it resumed), and a paused function's runs shown as
paused on the runs list, the run page, the overview and in `fanout runs`."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import fanout
from tests import browser as _browser
from tests.support import ROOT, make_app, run_of, url_for, wait_for, wait_run

app, client = make_app(__name__, app_id="live")
MOD = __name__
chromium, browser, shots, page = _browser.chromium, _browser.browser, _browser.shots, _browser.page


@client.create_function(fn_id="orders", trigger=fanout.TriggerEvent(event="live/order"))
def orders(ctx: fanout.ContextSync) -> int:
    return int(ctx.step.run("total", lambda: ctx.event.data.get("total", 0)))


@client.create_function(fn_id="flaky", trigger=fanout.TriggerEvent(event="live/flaky"), retries=0)
def flaky(ctx: fanout.ContextSync) -> None:
    def boom() -> None:
        raise fanout.NonRetriableError("nope")

    ctx.step.run("boom", boom)


@client.create_function(fn_id="approval", trigger=fanout.TriggerEvent(event="live/request"))
def approval(ctx: fanout.ContextSync) -> Any:
    ev = ctx.step.wait_for_event("approve", event="live/approved", match="data.order_id",
                                 timeout="1h")
    return None if ev is None else ev.data


@client.create_function(fn_id="held", trigger=fanout.TriggerEvent(event="live/held"))
def held(ctx: fanout.ContextSync) -> str:
    return ctx.step.run("go", lambda: "went")


@pytest.fixture(scope="module")
def dashboard(worker: object) -> Iterator[str]:
    yield from _browser.serve_dashboard(MOD)


def api(base: str, path: str) -> Any:
    with urllib.request.urlopen(base + path, timeout=15) as res:
        return json.loads(res.read())


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "FANOUT_REDIS_URL": url_for(__name__)}
    exe = shutil.which("fanout", path=os.path.dirname(sys.executable)) or "fanout"
    return subprocess.run([exe, "-A", __name__, *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)


def test_charts_draw_throughput_failures_and_p95_from_the_rollups(
        dashboard: str, page: Any, shots: Path) -> None:
    # A first run starts the workers' sender threads; the first of them records where
    # counting stands (the baseline), and what follows is charted.
    wait_run(client, run_of(client, client.emit("live/order", {"total": 0}), "orders"))
    wait_for(lambda: api(dashboard, "/api/charts?range=hour")["last_roll"] is not None, 30)
    for i in range(5):
        client.emit("live/order", {"total": i})
    client.send_sync([fanout.Event(name="live/flaky") for _ in range(2)])
    # Two approvals that nobody answers: the backlog of their function.
    waiting = [run_of(client, client.emit("live/request", {"order_id": f"B-{i}"}), "approval")
               for i in (1, 2)]
    wait_for(lambda: len(client.list_runs(fn_id="orders", status="completed")) == 6, 60)
    wait_for(lambda: len(client.list_runs(fn_id="flaky", status="failed")) == 2, 60)
    wait_for(lambda: all(getattr(client.get_run(r), "status", None) == "waiting"
                         for r in waiting), 60)
    rolled_after = time.time()

    def charted() -> bool:
        got = api(dashboard, "/api/charts?range=hour")
        fns = got["functions"]
        ended = sum(p["completed"] for p in fns["live:orders"])
        failed = sum(p["failed"] for p in fns["live:flaky"])
        return (ended >= 5 and failed == 2
                and (got["last_roll"] or 0) >= rolled_after // 60 * 60)

    # Rolled once a minute, two seconds into the next one.
    wait_for(charted, timeout=150, interval=1.0)
    page.goto(f"{dashboard}/overview")
    row = page.locator('#fn-charts tr[data-chart-fn="live:orders"]')
    assert int(row.locator("svg.chart.throughput").get_attribute("data-total") or 0) >= 5
    assert row.locator("svg.chart.throughput rect.ok").count() >= 1
    assert float(row.locator("svg.chart.p95").get_attribute("data-peak") or 0) > 0
    assert row.locator("svg.chart.p95 circle.dot").count() >= 1
    bad = page.locator('#fn-charts tr[data-chart-fn="live:flaky"]')
    assert bad.locator("svg.chart.failures").get_attribute("data-total") == "2"
    assert bad.locator("svg.chart.failures rect.bad").count() >= 1
    assert bad.locator("svg.chart.failures").get_attribute("data-attempts") == "2"
    assert page.locator('#fn-charts tr[data-chart-fn="live:held"] svg.chart.throughput'
                        ).get_attribute("data-total") == "0"
    # The backlog: the two waiting approvals are in flight; the orders all ended.
    waits = page.locator('#fn-charts tr[data-chart-fn="live:approval"] svg.chart.backlog')
    assert waits.get_attribute("data-now") == "2"
    assert row.locator("svg.chart.backlog").get_attribute("data-now") == "0"
    points = api(dashboard, "/api/charts?range=hour")["functions"]["live:approval"]
    known = [p["backlog"] for p in points if p["backlog"] is not None]
    assert known[-1] == 2 and min(known) == 0  # it rose from none to two within the hour
    page.locator("#fn-charts").screenshot(path=str(shots / "charts-hour.png"))
    # The day (15-minute buckets) and the week (hours) hold the same runs.
    for rng, points in (("day", 96), ("week", 168)):
        page.click(f".ranges a.range:has-text('{rng}')")
        page.wait_for_selector(f'#fn-charts[data-range="{rng}"]')
        total = row.locator("svg.chart.throughput").get_attribute("data-total")
        assert int(total or 0) >= 5, rng
        assert len(api(dashboard, f"/api/charts?range={rng}")["functions"]["live:orders"]) == points
    page.screenshot(path=str(shots / "overview-week.png"), full_page=True)
    # Nothing is fetched from elsewhere: every request went to the dashboard.
    assert "http" not in (page.locator("svg.chart").first.inner_html() or "").replace(
        "http://www.w3.org", "")


def test_the_runs_list_refreshes_in_place(dashboard: str, page: Any) -> None:
    statuses: list[int] = []
    page.on("response", lambda r: statuses.append(r.status) if "/runs" in r.url else None)
    page.goto(f"{dashboard}/runs?fn=live:orders")
    page.evaluate("window.__still = 'the same page'")
    rid = run_of(client, client.emit("live/order", {"total": 77}), "orders")
    page.wait_for_selector(f"table.runs a[href='/runs/{rid}']", timeout=20_000)
    wait_run(client, rid)
    page.wait_for_selector(f"tr:has(a[href='/runs/{rid}']) .status.completed", timeout=20_000)
    assert page.evaluate("window.__still") == "the same page"  # not reloaded
    # Nothing changes now: the next polls are answered 304 (no body rendered).
    page.wait_for_timeout(7_000)
    assert 304 in statuses, statuses
    assert "updated" in page.inner_text("#live-status") or "up to date" in page.inner_text(
        "#live-status")


def test_a_waiting_run_offers_the_matching_event(dashboard: str, page: Any, shots: Path) -> None:
    rid = run_of(client, client.emit("live/request", {"order_id": "A-7", "n": 1}), "approval")
    wait_for(lambda: getattr(client.get_run(rid), "status", None) == "waiting", 30)
    page.goto(f"{dashboard}/runs/{rid}")
    form = page.locator("#match-approve")
    assert form.locator("input[name=name]").input_value() == "live/approved"
    assert json.loads(form.locator("textarea[name=data]").input_value()) == {"order_id": "A-7"}
    assert form.locator("input[name=for_run]").get_attribute("value") == rid
    page.screenshot(path=str(shots / "waiting-run.png"), full_page=True)
    form.locator("textarea[name=data]").fill('{"order_id": "A-7", "ok": true}')
    form.locator("button[type=submit]").click()
    page.wait_for_url(re.compile(rf"/runs/{rid}\?msg="))
    assert "sent for this run's wait" in page.inner_text(".flash")
    page.evaluate("window.__still = 1")
    # The page follows the run to its end without a reload.
    page.wait_for_selector("#run-status .status.completed", timeout=30_000)
    assert page.evaluate("window.__still") == 1
    assert client.get_run(rid).output == {"order_id": "A-7", "ok": True}  # type: ignore[union-attr]
    row = page.locator("#target-audit tr[data-action=send]")
    assert row.count() == 1 and "local" in row.inner_text() and "live/approved" in row.inner_text()
    # The run page links the event that resumed it, and that event's page links back.
    page.reload()
    resumed_by = page.locator("a.resumed-by")
    assert resumed_by.count() == 1
    eid = client.get_run(rid).steps[0].output["id"]  # type: ignore[union-attr]
    assert resumed_by.inner_text() == eid
    resumed_by.click()
    page.wait_for_url(re.compile(rf"/events/{eid}$"))
    back = page.locator(f'#resumed-runs a[href="/runs/{rid}"]')
    assert back.count() == 1
    page.screenshot(path=str(shots / "event-resumed-a-run.png"), full_page=True)
    back.click()
    page.wait_for_url(re.compile(rf"/runs/{rid}$"))


def test_a_paused_functions_runs_show_as_paused_everywhere(dashboard: str, page: Any,
                                                           shots: Path) -> None:
    page.goto(f"{dashboard}/functions")
    page.click("tr:has-text('live:held') button:has-text('Pause')")
    page.wait_for_selector(".flash")
    page.wait_for_timeout(1500)  # workers re-read the paused set every second
    rid = run_of(client, client.emit("live/held"), "held")
    wait_for(lambda: rid in cli("runs", "--fn", "held", "--status", "paused", "--json").stdout,
             60, interval=0.5)
    page.goto(f"{dashboard}/runs?fn=live:held")
    assert page.locator(f"tr:has(a[href='/runs/{rid}']) .status").inner_text() == "paused"
    page.goto(f"{dashboard}/runs?status=paused")
    assert page.locator(f"a[href='/runs/{rid}']").count() == 1
    page.goto(f"{dashboard}/runs?status=queued")
    assert page.locator(f"a[href='/runs/{rid}']").count() == 0
    page.goto(f"{dashboard}/runs/{rid}")
    assert page.inner_text("#run-status").strip() == "paused"
    assert "paused" in page.inner_text("#run-state") and "resume" in page.inner_text("#run-state")
    page.screenshot(path=str(shots / "paused-run.png"), full_page=True)
    page.goto(f"{dashboard}/overview")
    badge = page.locator('#fn-stats tr[data-fn="live:held"] [data-paused]')
    assert "paused" in badge.inner_text() and "1 waiting" in badge.inner_text()
    listed = cli("runs", "--fn", "held")
    assert re.search(rf"{rid}\s+live:held\s+paused", listed.stdout), listed.stdout
    shown = cli("run", rid)
    assert f"run {rid}  live:held  paused" in shown.stdout
    assert json.loads(cli("runs", "--fn", "held", "--json").stdout)["runs"][0]["status"] == "paused"
    page.goto(f"{dashboard}/functions")
    page.click("tr:has-text('live:held') button:has-text('Resume'):not(:has-text('skip'))")
    page.wait_for_selector(".flash")
    assert wait_run(client, rid).output == "went"
    page.goto(f"{dashboard}/runs/{rid}")
    assert page.inner_text("#run-status").strip() == "completed"
