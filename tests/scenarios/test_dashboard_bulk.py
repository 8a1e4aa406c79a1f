"""The dashboard's bulk jobs in real Chromium against `fanout dashboard` with named
tokens and a real worker: on a filtered runs page "Cancel all N matching", a
confirmation with the exact count, then the job's page refreshing live until the job
is done; read-only tokens get no button and are refused; the audit log names the
token."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import fanout
from fanout._redis.audit import AuditLog
from fanout._redis.history import History
from tests import browser as _browser
from tests.support import Worker, make_app, wait_for

app, client = make_app(__name__, app_id="dbk")
MOD = __name__
ALICE = "alice-operator-token-bulk-5f1e"
VIEW = "viewer-read-only-token-bulk-77a0"
chromium, browser, shots, page = _browser.chromium, _browser.browser, _browser.shots, _browser.page
N = 60


@client.create_function(fn_id="queued", trigger=fanout.TriggerEvent(event="dbk/q"))
def queued(ctx: fanout.ContextSync) -> str:
    return "ran"


@client.create_function(fn_id="other", trigger=fanout.TriggerEvent(event="dbk/o"))
def other(ctx: fanout.ContextSync) -> str:
    return "ran"


@pytest.fixture(scope="module")
def dashboard(worker: object) -> Iterator[str]:
    yield from _browser.serve_dashboard(
        MOD, "--tokens", f"alice:operator:{ALICE},viewer:read-only:{VIEW}",
        env={"FANOUT_DASHBOARD_SECRET": "y" * 48})


def sign_in(page: Any, base: str, token: str, path: str) -> Any:
    page.goto(f"{base}{path}")
    page.fill("#login input[name=token]", token)
    page.click("#login button[type=submit]")
    page.wait_for_load_state()
    return page


def active(fn_id: str) -> int:
    return History(client._rt.store).count_runs(f"dbk:{fn_id}", status="active")


def test_cancel_all_matching_with_a_confirmation_and_a_live_job_page(
        dashboard: str, worker: Worker, log_dir: Path, page: Any, shots: Path) -> None:
    for fn_id in ("queued", "other"):
        client.pause(fn_id)
    client.send_sync([fanout.Event(name="dbk/q", data={"i": i}) for i in range(N)])
    client.send_sync([fanout.Event(name="dbk/o", data={"i": i}) for i in range(5)])
    wait_for(lambda: active("queued") == N and active("other") == 5, 60)

    # A read-only viewer: no bulk buttons, and the confirmation is refused.
    sign_in(page, dashboard, VIEW, "/runs?fn=dbk:queued&status=active")
    assert page.locator("#cancel-all").count() == 0
    res = page.request.get(f"{dashboard}/bulk/new?kind=cancel&fn=dbk:queued")
    assert res.status == 403 and "can look but not act" in res.text()
    page.context.clear_cookies()

    sign_in(page, dashboard, ALICE, "/runs?fn=dbk:queued&status=active")
    # No filter, no bulk button.
    page.goto(f"{dashboard}/runs")
    assert page.locator("#cancel-all").count() == 0
    page.goto(f"{dashboard}/runs?fn=dbk:queued&status=active")
    assert page.inner_text("#cancel-all").strip() == f"Cancel all {N} matching"
    page.click("#cancel-all")
    page.wait_for_selector("#bulk-confirm")
    assert re.search(rf"\b{N} run\(s\) match fn=dbk:queued status=active",
                     page.inner_text("#bulk-count"))
    page.screenshot(path=str(shots / "bulk-confirm.png"), full_page=True)
    page.fill("#bulk-confirm input[name=reason]", "stale backlog")
    page.click("#bulk-confirm button[type=submit]")
    page.wait_for_url(re.compile(r"/bulk/\w+\?msg="))
    assert f"Bulk cancel of {N} run(s) started." in page.inner_text(".flash")
    job_id = page.url.split("/bulk/")[1].split("?")[0]
    # The page refreshes itself until the job is done (the worker runs it).
    page.wait_for_function(
        "() => document.querySelector('#job-state').textContent.trim() === 'done'",
        timeout=60_000)
    assert page.inner_text("#job-progress").startswith(f"{N} of {N} run(s): {N} done")
    page.screenshot(path=str(shots / "bulk-job.png"), full_page=True)
    assert active("queued") == 0 and active("other") == 5

    # Who and why: the token's name and role, in the audit log.
    asked = next(r for r in AuditLog(client._rt.store).recent(20)
                 if r.action == "bulk cancel" and job_id in r.detail)
    assert (asked.who, asked.role) == ("alice", "operator") and "stale backlog" in asked.detail
    page.goto(f"{dashboard}/bulk")
    assert job_id in page.inner_text("#bulk-jobs")
    # A replay of what was cancelled, "Replay all", with the worker stopped: the job's
    # page shows it queued, then, once a worker runs it, done, without a reload.
    client.resume("queued")
    worker.stop()
    page.goto(f"{dashboard}/runs?fn=dbk:queued&status=cancelled")
    page.click("#replay-all")
    page.wait_for_selector("#bulk-confirm")
    page.click("#bulk-confirm button[type=submit]")
    page.wait_for_url(re.compile(r"/bulk/\w+\?msg="))
    assert page.inner_text("#job-state").strip() == "queued"
    page.evaluate("() => { window.__same_page = true; }")
    restarted = Worker(MOD, log_dir=log_dir, name="w2")
    try:
        page.wait_for_function(
            "() => document.querySelector('#job-state').textContent.trim() === 'done'",
            timeout=60_000)
        assert page.evaluate("() => window.__same_page === true")  # refreshed in place
        assert page.inner_text("#job-progress").startswith(f"{N} of {N} run(s): {N} done")
        wait_for(lambda: History(client._rt.store).count_runs("dbk:queued",
                                                              status="completed") == N, 60)
        client.resume("other")
        wait_for(lambda: active("other") == 0, 60)
    finally:
        restarted.stop()
