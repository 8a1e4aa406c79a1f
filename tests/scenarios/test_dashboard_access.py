"""Signing in to the dashboard and what each role may do, in real Chromium against
`fanout dashboard` with named tokens and a real worker: sign-in by POST (never a
token in a URL), a signed session cookie, read-only viewers refused every action,
every action recorded with the token's name, signed flash messages, throttled
wrong tokens and the Secure cookie behind an HTTPS proxy."""

from __future__ import annotations

import base64
import json
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
from fanout._dashboard import DashboardServer
from fanout._ops.locate import locate
from tests import browser as _browser
from tests.support import make_app, run_of, wait_for, wait_run

app, client = make_app(__name__, app_id="acc")
MOD = __name__
ALICE = "alice-operator-token-5f1e"
VIEW = "viewer-read-only-token-77a0"
chromium, browser, shots, page = _browser.chromium, _browser.browser, _browser.shots, _browser.page


@client.create_function(fn_id="nap", trigger=fanout.TriggerEvent(event="acc/nap"))
def nap(ctx: fanout.ContextSync) -> str:
    ctx.step.sleep("long", "1h")
    return "woke"


@client.create_function(fn_id="echo", trigger=fanout.TriggerEvent(event="acc/echo"))
def echo(ctx: fanout.ContextSync) -> Any:
    return ctx.step.run("echo", lambda: ctx.event.data)


@pytest.fixture(scope="module")
def dashboard(worker: object) -> Iterator[str]:
    yield from _browser.serve_dashboard(
        MOD, "--tokens", f"alice:operator:{ALICE},viewer:read-only:{VIEW}",
        env={"FANOUT_DASHBOARD_SECRET": "x" * 48})


def sign_in(page: Any, base: str, token: str, path: str = "/overview") -> Any:
    page.goto(f"{base}{path}")
    page.fill("#login input[name=token]", token)
    page.click("#login button[type=submit]")
    page.wait_for_load_state()
    return page


def request(url: str, data: dict[str, str] | None = None,
            headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    body = urllib.parse.urlencode(data).encode() if data is not None else None
    req = urllib.request.Request(url, data=body, headers=headers or {})

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *a: Any, **k: Any) -> None:
            return None

    try:
        with urllib.request.build_opener(NoRedirect).open(req, timeout=15) as resp:
            return int(resp.status), dict(resp.headers), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def sleeping_run() -> str:
    rid = run_of(client, client.emit("acc/nap"), "nap")
    wait_for(lambda: getattr(client.get_run(rid), "status", None) == "sleeping", timeout=30)
    return rid


def test_sign_in_is_a_post_and_the_cookie_holds_a_signed_session(
        dashboard: str, page: Any, shots: Path) -> None:
    res = page.goto(f"{dashboard}/runs")
    assert res.status == 401 and page.locator("form#login[method=post]").count() == 1
    page.screenshot(path=str(shots / "sign-in.png"), full_page=True)
    # A token in a URL is refused, and says why, even a right one.
    res = page.goto(f"{dashboard}/runs?token={ALICE}")
    assert res.status == 400 and "never goes in a URL" in page.inner_text("#error-text")
    assert page.context.cookies() == []
    res = page.goto(f"{dashboard}/login?token={ALICE}")
    assert res.status == 400
    # The form posts; a wrong token is refused.
    page.goto(f"{dashboard}/runs")
    page.fill("#login input[name=token]", "not-the-token-at-all")
    page.click("#login button[type=submit]")
    page.wait_for_selector("#login-error")
    assert "not valid" in page.inner_text("#login-error")
    time.sleep(1.1)  # the first failure makes this address wait 1 s
    page.goto(f"{dashboard}/runs")
    page.fill("#login input[name=token]", ALICE)
    page.click("#login button[type=submit]")
    page.wait_for_url(f"{dashboard}/runs")  # back where it was asked
    assert page.inner_text("#who").startswith("alice") and "(operator)" in page.inner_text("#who")
    assert ALICE not in page.url
    (cookie,) = page.context.cookies()
    assert cookie["name"] == "fanout_session" and cookie["httpOnly"]
    assert cookie["sameSite"] == "Strict" and not cookie["secure"]  # plain HTTP here
    assert 11 * 3600 < cookie["expires"] - time.time() <= 12 * 3600 + 5
    assert ALICE not in cookie["value"]
    payload = json.loads(base64.urlsafe_b64decode(cookie["value"].split(".")[0] + "=="))
    assert payload["n"] == "alice" and payload["r"] == "operator"
    page.click("#sign-out")
    page.wait_for_url(re.compile(r"/login\?out=1"))
    assert "Signed out" in page.inner_text("main") and page.context.cookies() == []


def test_a_read_only_token_looks_but_cannot_act(dashboard: str, page: Any, shots: Path) -> None:
    rid = sleeping_run()
    sign_in(page, dashboard, VIEW, f"/runs/{rid}")
    assert "(read-only)" in page.inner_text("#who")
    assert page.inner_text("#run-status").strip() == "sleeping"
    assert page.locator("button:has-text('Cancel run')").count() == 0
    assert page.locator("form[action='/actions/replay']").count() == 0
    page.goto(f"{dashboard}/functions")
    assert page.locator("form[action='/actions/pause']").count() == 0
    page.goto(f"{dashboard}/events")
    assert page.locator("form.send-form").count() == 0
    page.screenshot(path=str(shots / "read-only.png"), full_page=True)
    # Posting anyway, with the viewer's own session: 403 with a page that says why.
    res = page.request.post(f"{dashboard}/actions/cancel", form={"run_id": rid, "csrf": "x"})
    assert res.status == 403 and "read-only token" in res.text()
    assert "can look but not act" in res.text()
    # A script with the viewer's token in a header: 403 too.
    status, _h, body = request(f"{dashboard}/actions/cancel", {"run_id": rid},
                               {"Authorization": f"Bearer {VIEW}", "Accept": "application/json"})
    assert status == 403 and "read-only" in json.loads(body)["error"]
    assert client.get_run(rid).status == "sleeping"  # type: ignore[union-attr]
    # It may read the API.
    status, _h, body = request(f"{dashboard}/api/runs/{rid}", headers={"Authorization": f"Bearer {VIEW}"})
    assert status == 200 and json.loads(body)["status"] == "sleeping"


def test_every_action_records_the_tokens_name(dashboard: str, page: Any, shots: Path) -> None:
    rid = sleeping_run()
    sign_in(page, dashboard, ALICE, f"/runs/{rid}")
    page.click("button:has-text('Cancel run')")
    page.wait_for_selector(".flash")
    assert "Run cancelled." in page.inner_text(".flash")
    run = client.get_run(rid)
    assert run is not None and run.status == "cancelled"
    assert "by alice" in json.dumps(run.error)
    row = page.locator("#target-audit tr[data-action=cancel]")
    assert row.count() == 1 and "alice" in row.inner_text() and "operator" in row.inner_text()
    # Replay, pause and resume, send: each on /audit under alice.
    done = wait_run(client, run_of(client, client.emit("acc/echo", {"n": 1}), "echo"))
    page.goto(f"{dashboard}/runs/{done.run_id}")
    page.click("button:has-text('Replay')")
    page.wait_for_url(re.compile(r"/runs/\w+\?msg=Replay"))
    page.goto(f"{dashboard}/functions")
    page.click("tr:has-text('acc:echo') button:has-text('Pause')")
    page.wait_for_selector(".flash")
    page.click("tr:has-text('acc:echo') button:has-text('Resume'):not(:has-text('skip'))")
    page.wait_for_selector(".flash")
    form = page.locator("tr:has-text('acc:echo') form.send-form")
    form.locator("textarea[name=data]").fill('{"n": 2}')
    form.locator("button[type=submit]").click()
    page.wait_for_url(re.compile(r"/events/\w+\?msg="))
    page.goto(f"{dashboard}/audit")
    actions = page.locator("#audit tbody tr").evaluate_all(
        "rows => rows.map(r => [r.dataset.action, r.dataset.who])")
    assert [a for a, _w in actions[:5]] == ["send", "resume", "pause", "replay", "cancel"]
    assert {w for _a, w in actions[:5]} == {"alice"}
    page.screenshot(path=str(shots / "audit.png"), full_page=True)
    status, _h, body = request(f"{dashboard}/api/audit?limit=5",
                               headers={"Authorization": f"Bearer {VIEW}"})
    assert [r["action"] for r in json.loads(body)] == ["send", "resume", "pause", "replay",
                                                       "cancel"]


def test_a_flash_message_needs_the_servers_signature(dashboard: str, page: Any) -> None:
    sign_in(page, dashboard, VIEW)
    page.goto(f"{dashboard}/runs?msg=%3Cb%3EYour+account+is+locked%3C/b%3E&err=Call+us")
    assert page.locator(".flash").count() == 0 and "locked" not in page.inner_text("main")
    page.goto(f"{dashboard}/runs?msg=Hello&sig=forged")
    assert page.locator(".flash").count() == 0


def test_posts_need_the_session_csrf_value_and_the_same_origin(dashboard: str, page: Any) -> None:
    rid = sleeping_run()
    sign_in(page, dashboard, ALICE, f"/runs/{rid}")
    csrf = page.locator("input[name=csrf]").first.get_attribute("value") or ""
    res = page.request.post(f"{dashboard}/actions/cancel", form={"run_id": rid})
    assert res.status == 403 and "CSRF" in res.text()
    res = page.request.post(f"{dashboard}/actions/cancel", form={"run_id": rid, "csrf": csrf},
                            headers={"Origin": "http://evil.example"})
    assert res.status == 403
    # Without the session cookie, the page's value is worth nothing.
    status, _h, _b = request(f"{dashboard}/actions/cancel", {"run_id": rid, "csrf": csrf})
    assert status == 401
    assert client.get_run(rid).status == "sleeping"  # type: ignore[union-attr]
    res = page.request.post(f"{dashboard}/actions/cancel", form={"run_id": rid, "csrf": csrf})
    assert res.status == 200 and client.get_run(rid).status == "cancelled"  # type: ignore[union-attr]


def test_wrong_tokens_are_throttled_and_the_cookie_is_secure_behind_https(worker: object) -> None:
    server = DashboardServer(locate(MOD), port=0, tokens=f"alice:operator:{ALICE}",
                             trusted_proxies="127.0.0.1").start()
    base = server.url.rstrip("/")
    try:
        status, _h, _b = request(f"{base}/login", {"token": "wrong-wrong-wrong"})
        assert status == 401
        status, headers, body = request(f"{base}/login", {"token": ALICE})
        assert status == 429 and b"try again in 1 s" in body  # even the right one, for now
        time.sleep(1.1)
        assert request(f"{base}/login", {"token": "wrong-again-wrong"})[0] == 401
        status, _h, body = request(f"{base}/api/runs", headers={"Authorization": f"Bearer {ALICE}"})
        assert status == 429 and b"2 s" in body  # the header path is throttled too
        time.sleep(2.1)
        # Behind a trusted proxy that says HTTPS, the session cookie is Secure.
        status, headers, _b = request(f"{base}/login", {"token": ALICE},
                                      {"X-Forwarded-Proto": "https"})
        assert status == 303
        cookie = headers["Set-Cookie"]
        assert "; Secure" in cookie and "HttpOnly" in cookie and "SameSite=Strict" in cookie
        assert "Max-Age=43200" in cookie and ALICE not in cookie
    finally:
        server.shutdown()
    # Not behind a trusted proxy: the header is ignored.
    plain = DashboardServer(locate(MOD), port=0, tokens=f"alice:operator:{ALICE}").start()
    try:
        status, headers, _b = request(plain.url + "login", {"token": ALICE},
                                      {"X-Forwarded-Proto": "https"})
        assert status == 303 and "Secure" not in headers["Set-Cookie"]
    finally:
        plain.shutdown()
    with pytest.raises(fanout.ConfigError, match="needs an access token"):
        DashboardServer(locate(MOD), host="0.0.0.0", port=0)
    # The single-token form still works, as an operator named "token".
    legacy = DashboardServer(locate(MOD), port=0, token="legacy-token-1234").start()
    try:
        status, _h, body = request(legacy.url + "api/functions",
                                   headers={"Authorization": "Bearer legacy-token-1234"})
        assert status == 200 and "acc" in body.decode()
        assert [t.name for t in legacy.tokens] == ["token"]
    finally:
        legacy.shutdown()
