"""The dashboard's "Stop job" on a bulk job's page, over HTTP against `fanout dashboard`
with named tokens (no browser needed): an operator's session sees the form and stops
the job with a reason, audited under the token's name; a read-only token sees no form
and is refused; an ended job has no form. Real Redis, a real worker to create the runs."""

from __future__ import annotations

import http.cookiejar
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import fanout
from fanout._redis.audit import AuditLog
from fanout._redis.history import History
from tests.browser import serve_dashboard
from tests.support import Worker, make_app, wait_for

app, client = make_app(__name__, app_id="dbs")
MOD = __name__
OPERATOR = "olga-operator-token-stop-3c9d"
VIEW = "viewer-read-only-token-stop-81b2"


@client.create_function(fn_id="tick", trigger=fanout.TriggerEvent(event="dbs/tick"))
def tick(ctx: fanout.ContextSync) -> str:
    return "ran"


@pytest.fixture(scope="module")
def dashboard(clean_db: Any) -> Iterator[str]:
    yield from serve_dashboard(
        MOD, "--tokens", f"olga:operator:{OPERATOR},viewer:read-only:{VIEW}",
        env={"FANOUT_DASHBOARD_SECRET": "s" * 48})


class Session:
    """A signed-in browser session: cookies kept, redirects not followed."""

    def __init__(self, base: str, token: str) -> None:
        self.base = base
        jar = http.cookiejar.CookieJar()

        class NoRedirect(urllib.request.HTTPRedirectHandler):
            def redirect_request(self, *a: Any, **k: Any) -> None:
                return None

        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar),
                                                  NoRedirect)
        status, headers, _body = self.send("/login", {"token": token})
        assert status in (302, 303), status

    def send(self, path: str, form: dict[str, str] | None = None,
             headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], str]:
        body = urllib.parse.urlencode(form).encode() if form is not None else None
        req = urllib.request.Request(f"{self.base}{path}", data=body, headers=headers or {})
        try:
            with self.opener.open(req, timeout=15) as resp:
                return int(resp.status), dict(resp.headers), resp.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, dict(exc.headers), exc.read().decode()


def state(html: str) -> str:
    m = re.search(r'<span id="job-state">([^<]*)</span>', html)
    assert m, html[:2000]
    return m.group(1)


def test_an_operator_stops_a_job_from_its_page(dashboard: str, log_dir: Path) -> None:
    w = Worker(MOD, log_dir=log_dir)
    try:
        client.send_sync([fanout.Event(name="dbs/tick", data={"i": i}) for i in range(4)])
        wait_for(lambda: History(client._rt.store).count_runs(
            "dbs:tick", status="completed") == 4, 60)
    finally:
        w.stop()
    # No worker now: the job waits, queued.
    job = client.bulk_replay("tick", status="completed", by="setup")
    assert (job.state, job.total) == ("queued", 4)

    viewer = Session(dashboard, VIEW)
    status, _h, html = viewer.send(f"/bulk/{job.id}")
    assert status == 200 and state(html) == "queued"
    assert 'id="bulk-stop"' not in html  # a read-only token cannot stop it
    status, _h, _b = viewer.send("/actions/bulk-job-cancel", {"job": job.id, "csrf": "x"})
    assert status == 403

    olga = Session(dashboard, OPERATOR)
    status, _h, html = olga.send(f"/bulk/{job.id}")
    assert status == 200 and 'id="bulk-stop"' in html
    csrf = re.search(r'id="bulk-stop"><input type="hidden" name="csrf" value="([^"]+)"', html)
    assert csrf, html[:2000]
    # Without the session's CSRF value: refused, nothing changes.
    status, _h, _b = olga.send("/actions/bulk-job-cancel", {"job": job.id, "csrf": "nope"})
    assert status == 403 and client.bulk_job(job.id).state == "queued"  # type: ignore[union-attr]

    status, headers, _b = olga.send("/actions/bulk-job-cancel", {
        "job": job.id, "csrf": csrf.group(1), "reason": "replaying the wrong window"})
    assert status in (302, 303)
    where = headers["Location"]
    assert where.startswith(f"/bulk/{job.id}?msg=")
    status, _h, html = olga.send(where)
    assert "Bulk job stopped after 0 of 4 run(s)" in html
    assert state(html) == "cancelled" and 'id="bulk-stop"' not in html  # ended: no form
    stopped = client.bulk_job(job.id)
    assert stopped is not None and (stopped.state, stopped.processed) == ("cancelled", 0)
    recs = [r for r in AuditLog(client._rt.store).recent(20)
            if r.action == "bulk replay cancelled" and f"bulk:{job.id}" in r.targets]
    assert len(recs) == 1
    assert (recs[0].who, recs[0].role, recs[0].client) == ("olga", "operator", "dashboard")
    assert "replaying the wrong window" in recs[0].detail

    # Stopping it again: said, not recorded twice.
    status, headers, _b = olga.send("/actions/bulk-job-cancel", {
        "job": job.id, "csrf": csrf.group(1)})
    assert status in (302, 303)
    assert "The job had ended already (cancelled)." in olga.send(headers["Location"])[2]
    assert len([r for r in AuditLog(client._rt.store).recent(20)
                if r.action == "bulk replay cancelled" and f"bulk:{job.id}" in r.targets]) == 1
    status, _h, _b = olga.send("/actions/bulk-job-cancel", {"job": "nope",
                                                            "csrf": csrf.group(1)})
    assert status == 404
