"""The dashboard end to end in a real headless Chromium (Debian's, driven by
Playwright), served by `fanout dashboard` against a real worker and Redis:
functions, the live event stream, run filters, a run's waterfall, cancel,
replay, rerun from a step, sending a test event, escaping, CSRF and the token.

Browser set-up: tests/browser_setup.sh (pip playwright, apt chromium); the
tests skip, saying why, only when that cannot be done."""

from __future__ import annotations

import re
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import fanout
from tests import browser as _browser
from tests.support import make_app, run_of, wait_for, wait_run

app, client = make_app(__name__, app_id="dash")
MOD = __name__


@client.create_function(fn_id="checkout", trigger=fanout.TriggerEvent(event="dash/order"))
def checkout(ctx: fanout.ContextSync) -> dict[str, Any]:
    ctx.step.run("reserve", lambda: time.sleep(0.05) or "reserved")
    charge = ctx.step.run("charge", lambda: {"amount": ctx.event.data.get("total", 0)})
    ctx.step.run("notify", lambda: "sent")
    return {"charged": charge["amount"]}


@client.create_function(fn_id="sleepy", trigger=fanout.TriggerEvent(event="dash/wait"))
def sleepy(ctx: fanout.ContextSync) -> str:
    ctx.step.run("first", lambda: 1)
    ctx.step.sleep("nap", "10m")
    return "woke"


@client.create_function(fn_id="fragile", trigger=fanout.TriggerEvent(event="dash/fragile"),
                        retries=0)
def fragile(ctx: fanout.ContextSync) -> None:
    def charge() -> None:
        raise fanout.NonRetriableError("card declined")

    ctx.step.run("charge", charge)


# -- set-up --------------------------------------------------------------------------------


chromium, browser, shots, page = _browser.chromium, _browser.browser, _browser.shots, _browser.page


@pytest.fixture(scope="module")
def dashboard(worker: object) -> Iterator[str]:
    """`fanout dashboard` in a subprocess, on a free port."""
    yield from _browser.serve_dashboard(MOD)


# -- tests -----------------------------------------------------------------------------------


def test_functions_page(dashboard: str, page: Any, shots: Path) -> None:
    page.goto(f"{dashboard}/functions")
    rows = page.locator("#functions tbody tr")
    assert rows.count() == 3
    text = page.inner_text("#functions")
    assert "dash:checkout" in text and "dash/order" in text and "retries" in text
    page.screenshot(path=str(shots / "functions.png"), full_page=True)


def test_live_event_stream_and_send_form(dashboard: str, page: Any, shots: Path) -> None:
    page.goto(f"{dashboard}/events")
    eid = client.emit("dash/order", {"total": 7})
    page.wait_for_selector(f"#event-stream a[href='/events/{eid}']", timeout=10_000)
    assert "live" in page.inner_text("#stream-status")
    # Send a test event from the form: lands on the event's page with its run.
    form = page.locator("form.send-form").first
    form.locator("input[name=name]").fill("dash/order")
    form.locator("textarea[name=data]").fill('{"total": 42}')
    form.locator("button[type=submit]").click()
    page.wait_for_url(re.compile(r"/events/\w+\?msg="))
    assert "sent" in page.inner_text(".flash")
    sent_id = page.url.split("/events/")[1].split("?")[0]
    run = wait_run(client, run_of(client, sent_id, "checkout"))
    assert run.output == {"charged": 42}
    page.reload()
    assert "dash:checkout" in page.inner_text("table.runs")
    page.screenshot(path=str(shots / "event.png"), full_page=True)


def test_runs_filters_and_the_waterfall(dashboard: str, page: Any, shots: Path) -> None:
    eid = client.emit("dash/order", {"total": 99})
    rid = run_of(client, eid, "checkout")
    wait_run(client, rid)
    failed = wait_run(client, run_of(client, client.emit("dash/fragile"), "fragile"))
    page.goto(f"{dashboard}/runs")
    page.select_option("select[name=fn]", "dash:checkout")
    page.select_option("select[name=status]", "completed")
    page.fill("input[name=since]", "10m")
    page.click("form.filters button[type=submit]")
    page.wait_for_url(re.compile(r"fn=dash%3Acheckout"))
    listed = page.inner_text("table.runs")
    assert rid in listed and failed.run_id not in listed
    page.click(f"a[href='/runs/{rid}']")
    page.wait_for_selector("table.waterfall")
    steps = page.locator("tr.step")
    assert [steps.nth(i).get_attribute("data-step") for i in range(steps.count())] == [
        "reserve", "charge", "notify"]
    assert page.locator("tr.step .seg.exec.completed").count() == 3  # execution bars
    assert page.locator("tr.step .seg.queued").count() == 3  # queue-delay bars
    widths = [float(re.search(r"width:([\d.]+)%", steps.nth(i).locator(".seg.exec").get_attribute("style")
                              or "").group(1)) for i in range(3)]
    assert widths[0] > widths[2]  # the 50 ms step is drawn wider than the instant one
    assert '"charged": 99' in page.inner_text("#run-output")
    assert page.inner_text("#run-status").strip() == "completed"
    page.screenshot(path=str(shots / "run.png"), full_page=True)
    print(f"run page screenshot: {shots / 'run.png'}")
    # The failed run shows its error.
    page.goto(f"{dashboard}/runs/{failed.run_id}")
    assert "card declined" in page.inner_text("#run-error")


def test_cancel_replay_and_rerun_buttons(dashboard: str, page: Any, shots: Path) -> None:
    rid = run_of(client, client.emit("dash/wait"), "sleepy")
    wait_for(lambda: getattr(client.get_run(rid), "status", None) == "sleeping", timeout=30)
    page.goto(f"{dashboard}/runs/{rid}")
    page.click("button:has-text('Cancel run')")
    page.wait_for_selector(".flash")
    assert "Run cancelled." in page.inner_text(".flash")
    assert page.inner_text("#run-status").strip() == "cancelled"
    assert client.get_run(rid).status == "cancelled"  # type: ignore[union-attr]
    assert page.locator("button:has-text('Cancel run')").count() == 0
    page.screenshot(path=str(shots / "cancelled.png"), full_page=True)

    done = run_of(client, client.emit("dash/order", {"total": 5}), "checkout")
    wait_run(client, done)
    page.goto(f"{dashboard}/runs/{done}")
    page.click("button:has-text('Replay')")
    page.wait_for_url(re.compile(r"/runs/\w+\?msg=Replay"))
    replay_id = page.url.split("/runs/")[1].split("?")[0]
    assert replay_id != done and wait_run(client, replay_id).output == {"charged": 5}
    page.goto(f"{dashboard}/runs/{done}")
    page.click("tr.step[data-step=notify] button:has-text('Rerun from here')")
    page.wait_for_url(re.compile(r"/runs/\w+\?msg=Rerun"))
    rerun_id = page.url.split("/runs/")[1].split("?")[0]
    rerun = wait_run(client, rerun_id)
    assert rerun.status == "completed"
    original = client.get_run(done)
    assert original is not None
    # The steps before `notify` were reused, not executed again.
    assert rerun.steps[0].ended_at == original.steps[0].ended_at
    page.goto(f"{dashboard}/runs/{rerun_id}")
    assert "Replay of" in page.inner_text(".meta") and "notify" in page.inner_text(".meta")


def test_everything_is_escaped(dashboard: str, page: Any) -> None:
    evil = "<img src=x onerror=window.__pwned=1><script>window.__pwned=2</script>"
    eid = client.emit("dash/order", {"total": 1, "note": evil})
    wait_run(client, run_of(client, eid, "checkout"))
    for path in (f"/events/{eid}", "/events", f"/runs/{run_of(client, eid, 'checkout')}"):
        page.goto(f"{dashboard}{path}")
        page.wait_for_timeout(200)
        assert page.evaluate("window.__pwned") is None, path
        assert page.locator("img[src=x]").count() == 0, path
    assert evil in page.inner_text("main")  # shown as text
    page.goto(f"{dashboard}/runs?status=%3Cb%3Ebold%3C/b%3E")
    assert page.locator("b").count() == 0 and "unknown run status" in page.inner_text("main")


def _post(url: str, data: dict[str, str], headers: dict[str, str] | None = None) -> int:
    req = urllib.request.Request(url, data=urllib.parse.urlencode(data).encode(),
                                 headers=headers or {})

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *a: Any, **k: Any) -> None:
            return None

    try:
        with urllib.request.build_opener(NoRedirect).open(req, timeout=10) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def test_posts_need_the_csrf_value_and_the_same_origin(dashboard: str, page: Any) -> None:
    rid = run_of(client, client.emit("dash/wait"), "sleepy")
    wait_for(lambda: getattr(client.get_run(rid), "status", None) == "sleeping", timeout=30)
    assert _post(f"{dashboard}/actions/cancel", {"run_id": rid}) == 403
    page.goto(f"{dashboard}/runs/{rid}")
    csrf = page.locator("input[name=csrf]").first.get_attribute("value")
    assert _post(f"{dashboard}/actions/cancel", {"run_id": rid, "csrf": csrf},
                 {"Origin": "http://evil.example"}) == 403
    assert _post(f"{dashboard}/actions/cancel", {"run_id": rid, "csrf": "forged"}) == 403
    assert client.get_run(rid).status == "sleeping"  # type: ignore[union-attr]
    assert _post(f"{dashboard}/actions/cancel", {"run_id": rid, "csrf": csrf or ""}) == 303
    assert client.get_run(rid).status == "cancelled"  # type: ignore[union-attr]
    # DNS rebinding: a foreign Host is refused when there is no token.
    req = urllib.request.Request(f"{dashboard}/runs", headers={"Host": "rebind.example"})
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(req, timeout=10)
    assert err.value.code == 403
