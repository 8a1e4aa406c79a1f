"""The dashboard's overview and runs list in real Chromium, against a real worker:
queue depth, timer backlog and live workers; per function the day as bars, runs,
failure rate and p50/p95 over the hour and the day, the last run and the next cron
ticks; on the runs list, counts per status, relative times, the event name, and
search by run id, event id or a field of the event's data."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import fanout
from tests import browser as _browser
from tests.support import make_app, wait_for

app, client = make_app(__name__, app_id="ov")
MOD = __name__
chromium, browser, shots, page = _browser.chromium, _browser.browser, _browser.shots, _browser.page


@client.create_function(fn_id="greet", trigger=fanout.TriggerEvent(event="ov/signup"))
def greet(ctx: fanout.ContextSync) -> str:
    return ctx.step.run("hello", lambda: f"hello {ctx.event.data['user']['id']}")


@client.create_function(fn_id="charge", trigger=fanout.TriggerEvent(event="ov/charge"), retries=0)
def charge(ctx: fanout.ContextSync) -> None:
    def declined() -> None:
        raise fanout.NonRetriableError("card declined")

    ctx.step.run("charge", declined)


@client.create_function(fn_id="nap", trigger=fanout.TriggerEvent(event="ov/nap"))
def nap(ctx: fanout.ContextSync) -> str:
    ctx.step.sleep("long", "1h")
    return "woke"


@client.create_function(fn_id="nightly", trigger=fanout.TriggerCron(cron="0 3 * * *"))
def nightly(ctx: fanout.ContextSync) -> None:
    return None


@client.create_function(fn_id="journey", trigger=fanout.TriggerEvent(event="ov/journey"),
                        retries=2, backoff=[1.0])
def journey(ctx: fanout.ContextSync) -> str:
    def flaky() -> str:
        if ctx.attempt == 0:
            raise ConnectionError("try again")
        return "ok"

    ctx.step.run("flaky", flaky)
    ctx.step.sleep("nap", "1s")
    ctx.step.wait_for_event("answer", event="ov/answer", timeout="1s")
    return str(ctx.step.invoke("child", function=greet, data={"user": {"id": 99}}))


@pytest.fixture(scope="module")
def dashboard(worker: object) -> Iterator[str]:
    yield from _browser.serve_dashboard(MOD)


@pytest.fixture(scope="module")
def runs(worker: object) -> dict[str, Any]:
    """Five signups, two declined charges and one sleeping run, all settled."""
    signups = [fanout.Event(name="ov/signup", data={"user": {"id": i}}) for i in range(5)]
    ids = client.send_sync(signups)
    client.send_sync([fanout.Event(name="ov/charge", data={"n": i}) for i in range(2)])
    client.send_sync(fanout.Event(name="ov/nap"))
    wait_for(lambda: len(client.list_runs(fn_id="greet", status="completed")) == 5, 60)
    wait_for(lambda: len(client.list_runs(fn_id="charge", status="failed")) == 2, 60)
    wait_for(lambda: len(client.list_runs(fn_id="nap", status="sleeping")) == 1, 60)
    return {"signup_ids": ids}


def _row(page: Any, fn: str) -> Any:
    return page.locator(f'#fn-stats tr[data-fn="{fn}"]')


def test_overview_shows_the_fleet_and_each_function(
    dashboard: str, runs: dict[str, Any], page: Any, shots: Path
) -> None:
    page.goto(dashboard + "/")
    # The fleet: the router queue's depth, the sleeping run's timer, the live worker.
    assert page.locator("#queue-fanout\\.events .tile-value").inner_text().isdigit()
    assert int(page.locator("#timers .tile-value").inner_text()) >= 1
    wait_for(lambda: page.reload() or page.locator("#workers .tile-value").inner_text() == "1", 20)
    assert "@" in page.locator("#workers .tile-note").inner_text()  # the worker's hostname
    hour = page.locator("#hour").inner_text()
    assert "8" in page.locator("#hour .tile-value").inner_text(), hour  # 5 + 2 + 1 runs
    assert "5 completed" in hour and "2 failed" in hour and "1 active" in hour

    greet_cells = _row(page, "ov:greet").locator("td").all_inner_texts()
    # function, bars, then hour: runs, /min, failure, p50, p95; day: the same five
    assert greet_cells[2] == "5" and greet_cells[4] == "0.0%" and greet_cells[7] == "5"
    assert greet_cells[5] != "–" and greet_cells[6] != "–"  # p50/p95 of ended runs
    charge_cells = _row(page, "ov:charge").locator("td").all_inner_texts()
    assert charge_cells[2] == "2" and charge_cells[4] == "100.0%" and charge_cells[12] == "2"
    # The bars: green for the signups, red for the declined charges, drawn as SVG.
    assert _row(page, "ov:greet").locator("svg.bars rect.ok").count() >= 1
    assert _row(page, "ov:greet").locator("svg.bars rect.bad").count() == 0
    assert _row(page, "ov:charge").locator("svg.bars rect.bad").count() >= 1
    # Last run in relative words; the cron function's next ticks in the future.
    assert "ago" in _row(page, "ov:greet").locator("time").first.inner_text()
    nightly_ticks = _row(page, "ov:nightly").locator("td").last.locator("time")
    assert nightly_ticks.count() == 2 and nightly_ticks.first.inner_text().startswith("in ")
    assert "never" in _row(page, "ov:nightly").inner_text()
    page.screenshot(path=str(shots / "overview.png"), full_page=True)
    _row(page, "ov:charge").screenshot(path=str(shots / "overview-charge-row.png"))
    assert (shots / "overview.png").stat().st_size > 10_000


def test_overview_api_matches(dashboard: str, runs: dict[str, Any]) -> None:
    with urllib.request.urlopen(dashboard + "/api/overview", timeout=10) as res:
        data = json.loads(res.read())
    by_fn = {f["fn"]: f for f in data["functions"]}
    assert by_fn["ov:greet"]["last_day"]["completed"] == 5
    assert by_fn["ov:charge"]["last_day"]["failure_rate"] == 1.0
    assert by_fn["ov:nap"]["last_day"]["active"] == 1
    assert sum(b[1] for b in by_fn["ov:greet"]["hourly"]) == 5
    assert data["timers"]["total"] >= 1 and data["last_hour"]["runs"] == 8
    assert len(by_fn["ov:nightly"]["next_ticks"]) == 3


def test_runs_list_counts_relative_times_and_event_names(
    dashboard: str, runs: dict[str, Any], page: Any, shots: Path
) -> None:
    page.goto(dashboard + "/runs?fn=ov:greet")
    counts = page.locator("#status-counts")
    assert counts.locator('[data-status="completed"]').inner_text().strip().endswith("5")
    rows = page.locator("table.runs tbody tr")
    assert rows.count() == 5
    first = rows.first.locator("td").all_inner_texts()
    assert first[0] == ""  # the bulk-action checkbox
    assert first[3] == "ov/signup" and first[4] == "completed"
    assert "ago" in first[5]
    page.locator('#status-counts [data-status="completed"]').click()
    page.wait_for_url("**status=completed**")
    page.screenshot(path=str(shots / "runs-counts.png"), full_page=True)


def test_search_by_data_field_run_id_and_event_id(
    dashboard: str, runs: dict[str, Any], page: Any, shots: Path
) -> None:
    page.goto(dashboard + "/runs")
    page.fill('input[name="q"]', "user.id=3")
    page.locator("form.filters button[type=submit]").first.click()
    page.wait_for_url("**q=user.id**")
    rows = page.locator("table.runs tbody tr")
    assert rows.count() == 1
    run_id = rows.first.locator("td").nth(1).inner_text()
    assert client.get_run(run_id).output == "hello 3"  # type: ignore[union-attr]
    assert "1 run(s) match" in page.locator("#search-note").inner_text()
    page.screenshot(path=str(shots / "runs-search.png"), full_page=True)

    page.goto(dashboard + f"/runs?q={run_id}")
    assert page.url.endswith(f"/runs/{run_id}")
    event_id = runs["signup_ids"][0]
    page.goto(dashboard + f"/runs?q={event_id}")
    assert page.url.endswith(f"/events/{event_id}")
    res = page.goto(dashboard + "/runs?q=NOPE")
    assert res.status == 404 and "field=value" in page.inner_text("main")
    res = page.goto(dashboard + "/runs?q=user.id%3D")
    assert res.status == 200 and "0 run(s) match" in page.inner_text("#search-note")
    res = page.goto(dashboard + "/runs?q=%3D3")
    assert res.status == 400 and "field=value" in page.inner_text("main")


def test_times_are_shown_relative_with_local_time_on_hover(
    dashboard: str, runs: dict[str, Any], page: Any
) -> None:
    page.goto(dashboard + "/runs")
    t = page.locator("table.runs time[data-rel]").first
    assert t.inner_text().endswith("ago")
    title = t.get_attribute("title") or ""
    assert title and "Z" not in title  # the browser's local rendering, not the UTC text


def test_bulk_cancel_and_replay_from_the_runs_list(
    dashboard: str, runs: dict[str, Any], page: Any, shots: Path
) -> None:
    client.send_sync([fanout.Event(name="ov/nap", data={"i": i}) for i in range(2)])
    wait_for(lambda: len(client.list_runs(fn_id="nap", status="sleeping")) == 3, 60)
    page.goto(dashboard + "/runs?fn=ov:nap&status=sleeping")
    assert page.locator('input[name="run_ids"]').count() == 3
    page.check("#select-all")
    page.screenshot(path=str(shots / "bulk-selected.png"), full_page=True)
    page.click("button:has-text('Cancel selected')")
    page.wait_for_selector(".flash")
    assert "Cancelled 3 run(s)." in page.inner_text(".flash")
    assert wait_for(lambda: len(client.list_runs(fn_id="nap", status="cancelled")) == 3, 30)

    page.goto(dashboard + "/runs?fn=ov:charge&status=failed")
    boxes = page.locator('input[name="run_ids"]')
    assert boxes.count() == 2
    boxes.first.check()
    page.click("button:has-text('Replay selected')")
    page.wait_for_selector(".flash")
    assert "Replayed 1 run(s)." in page.inner_text(".flash")
    wait_for(lambda: len(client.list_runs(fn_id="charge", status="failed")) == 3, 30)
    page.goto(dashboard + "/runs?fn=ov:charge")
    page.click("button:has-text('Cancel selected')")  # nothing selected
    page.wait_for_selector(".flash.err")
    assert "select at least one run first" in page.inner_text(".flash.err")


def test_the_waterfall_draws_each_kind_of_time_apart(
    dashboard: str, runs: dict[str, Any], page: Any, shots: Path
) -> None:
    (eid,) = client.send_sync(fanout.Event(name="ov/journey"))
    from tests.support import run_of, wait_run

    info = wait_run(client, run_of(client, eid, "journey"), timeout=90)
    assert info.status == "completed" and info.output == "hello 99"
    page.goto(f"{dashboard}/runs/{info.run_id}")
    flaky = page.locator('tr.step[data-step="flaky"]')
    assert flaky.locator(".seg.exec").count() == 2  # two attempts, one tick each
    assert flaky.locator(".tick").count() == 2
    assert flaky.locator(".seg.exec.failed").count() == 1
    assert flaky.locator(".seg.backoff").count() == 1  # the 1 s between them
    assert page.locator('tr.step[data-step="nap"] .seg.sleep').count() == 1
    assert page.locator('tr.step[data-step="nap"] .seg.exec').count() == 0  # not "executing"
    assert page.locator('tr.step[data-step="answer"] .seg.wait').count() == 1
    assert page.locator('tr.step[data-step="child"] .seg.invoke').count() == 1
    child = info.steps[-1].child_run_id
    assert child and page.locator(f'a[href="/runs/{child}"]').count() >= 1
    backoff = flaky.locator(".seg.backoff").get_attribute("title") or ""
    assert backoff.startswith("retry backoff")
    page.screenshot(path=str(shots / "waterfall.png"), full_page=True)
