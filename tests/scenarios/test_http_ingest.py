"""Events over HTTP: the ingest endpoint served on 127.0.0.1 in a thread, a real HTTP
client (urllib / http.client), a real Redis, and a real `celery worker` running the
runs that posted events start."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import http.client
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
import redis

import fanout
from fanout.http import IngestKeys, Server, Webhook, asgi_app, hash_key, ingest_app, serve, sign
from tests.conftest import start_redis_server
from tests.support import ROOT, Worker, make_app, run_of, url_for, wait_for, wait_run

app, client = make_app(__name__, app_id="http")

SECRET = "whsec_" + "a1" * 16
GH_SECRET = "gh-secret-" + "b2" * 12
CONFIG_KEY = "fok_0123456789AB_" + "c" * 64


@client.create_function(fn_id="paid", trigger=fanout.TriggerEvent(event="billing/invoice.paid"))
def paid(ctx: fanout.ContextSync) -> dict[str, Any]:
    amount = ctx.step.run("charge", lambda: int(ctx.event.data["amount"]) * 100)
    return {"cents": amount, "event": ctx.event.id}


@client.create_function(fn_id="pushed", trigger=fanout.TriggerEvent(event="github/push"))
def pushed(ctx: fanout.ContextSync) -> str:
    return str(ctx.event.data["ref"])


def github_events(payload: Any, headers: dict[str, str]) -> fanout.Event:
    """A GitHub delivery becomes one event named after its X-GitHub-Event header."""
    return fanout.Event(name=f"github/{headers['x-github-event']}", data=payload,
                        id=headers["x-github-delivery"])


KEYS = IngestKeys(client, hashes={"config-src": hash_key(CONFIG_KEY)})
WEBHOOKS = {
    "signed": Webhook(secret=SECRET),
    "gh": Webhook(secret=GH_SECRET, scheme="github", transform=github_events),
}
MAX_BODY = 64 * 1024


@pytest.fixture(scope="module")
def server(clean_db: redis.Redis) -> Iterator[Server]:
    srv = serve(ingest_app(client, keys=KEYS, webhooks=WEBHOOKS, max_body=MAX_BODY),
                port=0, background=True)
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def key(server: Server) -> str:
    return KEYS.create("billing", label="tests").key


def post(url: str, body: Any = None, *, raw: bytes | None = None, key: str | None = None,
         ctype: str | None = "application/json",
         headers: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:
    """POST with http.client (which, unlike urllib, adds no Content-Type of its own)."""
    parts = urllib.parse.urlsplit(url)
    data = raw if raw is not None else json.dumps(body).encode()
    h = dict(headers or {})
    if ctype is not None:
        h["Content-Type"] = ctype
    if key is not None:
        h["Authorization"] = f"Bearer {key}"
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        conn.request("POST", parts.path or "/", body=data, headers=h)
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read())
    finally:
        conn.close()


def stored(r: redis.Redis, event_id: str) -> bool:
    return bool(r.exists(f"fanout:ev:{{{event_id}}}"))


def event_count(r: redis.Redis) -> int:
    return int(r.zcard("fanout:idx:events"))


# -- events in, runs out ---------------------------------------------------------------


def test_a_posted_event_starts_a_run(server: Server, key: str, worker: Worker) -> None:
    status, body = post(server.url + "/events", {"name": "billing/invoice.paid",
                                                 "data": {"amount": 12}}, key=key)
    assert status == 202, body
    (eid,) = body["ids"]
    assert body["source"] == "billing"
    run = wait_run(client, run_of(client, eid, "paid"))
    assert run.status == "completed" and run.output == {"cents": 1200, "event": eid}


def test_an_array_is_one_send_and_ids_deduplicate(server: Server, key: str,
                                                  worker: Worker) -> None:
    events = [{"name": "billing/invoice.paid", "data": {"amount": i}, "id": f"inv-{i}"}
              for i in (1, 2)]
    status, body = post(server.url, events, key=key)
    assert (status, body["ids"]) == (202, ["inv-1", "inv-2"])
    again = [{"name": "billing/invoice.paid", "data": {"amount": 99}, "id": "inv-1"}]
    assert post(server.url, again, key=key) == (202, {"ids": ["inv-1"], "source": "billing"})
    for i in (1, 2):
        run = wait_run(client, run_of(client, f"inv-{i}", "paid"))
        assert run.output["cents"] == i * 100  # the first payload for an id wins
    assert len(client.list_runs(event_id="inv-1")) == 1


def test_an_idempotency_key_gives_a_retried_request_the_same_ids(server: Server,
                                                                 key: str) -> None:
    ev = [{"name": "billing/invoice.paid", "data": {"amount": 3}}] * 2
    h = {"Idempotency-Key": "batch-2026-12-03-1"}
    s1, b1 = post(server.url, ev, key=key, headers=h)
    s2, b2 = post(server.url, ev, key=key, headers=h)
    assert s1 == s2 == 202 and b1["ids"] == b2["ids"] and len(set(b1["ids"])) == 2
    s3, b3 = post(server.url, ev, key=key, headers={"Idempotency-Key": "another"})
    assert s3 == 202 and not set(b3["ids"]) & set(b1["ids"])


# -- bad input: 400, nothing stored --------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"{not json", "not valid JSON"),
        (b"", "the body is empty"),
        (b"   ", "the body is empty"),
        (b"42", "a JSON number"),
        (b'"billing/invoice.paid"', "a JSON string"),
        (b"[]", "the list is empty"),
        (b'[{"name": "billing/x", "id": "ok-1"}, "oops"]', "events[1] is a JSON string"),
        (b'{"data": {}}', "name: Field required"),
        (b'{"name": ""}', "event name is empty"),
        (b'{"name": "billing/a\\nb"}', "event name contains a newline (U+000A) at position 9"),
        (b'[{"name": "billing/x", "id": "ok-1"}, {"name": "billing/\\u001b[2J"}]',
         "event name contains a control character (U+001B)"),
        (b'{"name": "billing/x", "data": [1]}', "must be a JSON object"),
        (b'{"name": "billing/x", "colour": "red"}', "colour: Extra inputs are not permitted"),
        (b'{"name": "fanout/function.invoked"}', "reserved for fanout's own events"),
        (b'{"name": "billing/x", "data": {"v": NaN}}', "NaN is not JSON"),
        (b'{"name": "billing/x", "data": {"v": "\xff"}}', "not UTF-8"),
        (b'[{"name": "billing/x", "id": "ok-2"}, {"name": "billing/y", "ts": -1}]', "ts must"),
    ],
)
def test_malformed_bodies_get_400_with_the_reason(server: Server, key: str,
                                                  clean_db: redis.Redis, raw: bytes,
                                                  reason: str) -> None:
    before = event_count(clean_db)
    status, body = post(server.url, raw=raw, key=key)
    assert status == 400 and reason in body["error"], body
    assert event_count(clean_db) == before
    assert not stored(clean_db, "ok-1") and not stored(clean_db, "ok-2")


@pytest.mark.parametrize(
    ("ctype", "reason"),
    [
        ("text/plain", "'text/plain'"),
        ("application/x-www-form-urlencoded", "send the body as Content-Type: application/json"),
        (None, "send the body as Content-Type: application/json"),  # wsgiref says text/plain
        ("application/json; charset=latin-1", "charset 'latin-1' is not accepted"),
    ],
)
def test_wrong_content_types_get_415(server: Server, key: str, ctype: str | None,
                                     reason: str) -> None:
    status, body = post(server.url, {"name": "billing/x"}, key=key, ctype=ctype)
    assert status == 415 and reason in body["error"], body


def test_a_utf8_charset_is_accepted(server: Server, key: str) -> None:
    status, _ = post(server.url, {"name": "billing/x"}, key=key,
                     ctype="application/json; charset=UTF-8")
    assert status == 202


def test_oversize_bodies_get_413_before_they_are_read(server: Server, key: str,
                                                      clean_db: redis.Redis) -> None:
    before = event_count(clean_db)
    big = {"name": "billing/big", "data": {"blob": "x" * MAX_BODY}}
    status, body = post(server.url, big, key=key)
    assert status == 413 and f"limit of {MAX_BODY} bytes" in body["error"]
    # A client that declares a huge length is refused on the headers alone.
    conn = http.client.HTTPConnection(server.host, server.port, timeout=30)
    conn.putrequest("POST", "/events")
    conn.putheader("Content-Type", "application/json")
    conn.putheader("Authorization", f"Bearer {key}")
    conn.putheader("Content-Length", str(10 * 1024 * 1024 * 1024))
    conn.endheaders()
    resp = conn.getresponse()
    # Refused by the server before the app runs: no body is read, the answer is text.
    assert resp.status == 413 and b"Request Entity Too Large" in resp.read()
    conn.close()
    assert event_count(clean_db) == before


def test_a_chunked_body_is_read(server: Server, key: str, clean_db: redis.Redis) -> None:
    """waitress decodes chunked bodies (the app sees wsgi.input_terminated)."""
    conn = http.client.HTTPConnection(server.host, server.port, timeout=30)
    conn.request("POST", "/events", body=iter([b'{"name": "billing/x", ', b'"id": "chunked-1"}']),
                 headers={"Content-Type": "application/json", "Authorization": f"Bearer {key}"},
                 encode_chunked=True)
    resp = conn.getresponse()
    assert resp.status == 202 and json.loads(resp.read())["ids"] == ["chunked-1"]
    conn.close()
    assert stored(clean_db, "chunked-1")


def test_methods_and_paths(server: Server, key: str) -> None:
    req = urllib.request.Request(server.url + "/events", headers={"Authorization": f"Bearer {key}"})
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(req, timeout=30)
    assert err.value.code == 405 and err.value.headers["Allow"] == "POST"
    assert post(server.url + "/admin/cancel", {"name": "x/y"}, key=key)[0] == 404


# -- keys --------------------------------------------------------------------------------


def test_bad_keys_get_401(server: Server, key: str, clean_db: redis.Redis) -> None:
    before = event_count(clean_db)
    ev = {"name": "billing/invoice.paid", "data": {"amount": 1}}
    assert post(server.url, ev)[1]["error"].startswith("missing ingest key")
    for bad in ("nonsense", key[:-1] + ("0" if key[-1] != "0" else "1"),
                "fok_ZZZZZZZZZZZZ_" + "0" * 64):
        status, body = post(server.url, ev, key=bad)
        assert (status, body["error"]) == (401, "unknown or revoked ingest key")
    status, body = post(server.url, ev, headers={"X-Fanout-Key": "fok_nope"})
    assert status == 401
    assert event_count(clean_db) == before


def test_a_key_of_another_source_gets_401(server: Server, key: str) -> None:
    status, body = post(server.url + "/webhooks/signed", {"name": "billing/x"}, key=key)
    assert status == 401 and "belongs to another source, not 'signed'" in body["error"]
    status, body = post(server.url + "/webhooks/config-src", {"name": "billing/x"}, key=key)
    assert status == 401 and "another source" in body["error"]
    # Its own source's path takes it.
    assert post(server.url + "/webhooks/billing", {"name": "billing/x"}, key=key)[0] == 202


def test_a_key_given_in_configuration_as_a_hash(server: Server) -> None:
    status, body = post(server.url, {"name": "billing/x"}, key=CONFIG_KEY)
    assert (status, body["source"]) == (202, "config-src")


def test_keys_are_stored_hashed_and_revoked_keys_stop_working(server: Server,
                                                              clean_db: redis.Redis) -> None:
    made = KEYS.create("revocable")
    assert post(server.url, {"name": "billing/x"}, key=made.key)[0] == 202
    raw = clean_db.hgetall("fanout:ingest:keys")
    assert made.key.encode() not in b"".join(raw.values())
    assert made.key.split("_")[2].encode() not in b"".join(raw.values())
    assert json.loads(raw[made.key_id.encode()])["hash"] == hash_key(made.key)
    assert KEYS.revoke(made.key_id) is True
    assert post(server.url, {"name": "billing/x"}, key=made.key)[0] == 401
    assert KEYS.revoke(made.key_id) is False


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "FANOUT_REDIS_URL": url_for(__name__)}
    exe = shutil.which("fanout", path=os.path.dirname(sys.executable)) or "fanout"
    return subprocess.run([exe, "-A", __name__, *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)


def test_the_cli_creates_lists_and_revokes_keys(server: Server) -> None:
    made = _cli("keys", "create", "crm", "--label", "the CRM")
    assert made.returncode == 0, made.stderr
    new_key = made.stdout.strip()
    assert new_key.startswith("fok_") and "not shown again" in made.stderr
    status, body = post(server.url, {"name": "crm/contact.added", "id": "crm-2"}, key=new_key)
    assert (status, body) == (202, {"ids": ["crm-2"], "source": "crm"})
    listed = _cli("keys", "list", "--json")
    rows = {r["key_id"]: r for r in json.loads(listed.stdout)}
    key_id = new_key.split("_")[1]
    assert rows[key_id]["source"] == "crm" and rows[key_id]["label"] == "the CRM"
    assert new_key not in listed.stdout
    table = _cli("keys", "list")
    assert key_id in table.stdout and new_key not in table.stdout
    assert _cli("keys", "revoke", key_id).returncode == 0
    assert post(server.url, {"name": "crm/contact.added"}, key=new_key)[0] == 401
    gone = _cli("keys", "revoke", key_id)
    assert gone.returncode == 1 and f"no key {key_id!r}" in gone.stderr
    bad = _cli("keys", "create", "no spaces")
    assert bad.returncode == 2 and "invalid source 'no spaces'" in bad.stderr   # usage
    offline = _cli("keys", "create", "edge", "--no-store")
    key_line, hash_line = offline.stdout.strip().splitlines()
    assert hash_line == f"hash: {hash_key(key_line)}"
    assert all(b"edge" not in v for v in redis.Redis.from_url(url_for(__name__))
               .hgetall("fanout:ingest:keys").values())


def test_fanout_ingest_serves_the_endpoint(key: str, worker: Worker) -> None:
    from tests.conftest import _free_port

    port = _free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "FANOUT_REDIS_URL": url_for(__name__)}
    exe = shutil.which("fanout", path=os.path.dirname(sys.executable)) or "fanout"
    proc = subprocess.Popen([exe, "-A", __name__, "ingest", "--port", str(port)], cwd=ROOT,
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        def up() -> tuple[int, dict[str, Any]] | None:
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            try:
                return post(f"http://127.0.0.1:{port}/events",
                            {"name": "billing/invoice.paid", "data": {"amount": 9},
                             "id": "via-cli"}, key=key)
            except ConnectionRefusedError:
                return None

        assert wait_for(up, timeout=60) == (202, {"ids": ["via-cli"], "source": "billing"})
        assert wait_run(client, run_of(client, "via-cli", "paid")).output["cents"] == 900
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def test_an_ingest_key_cannot_cancel_or_replay(server: Server, key: str) -> None:
    """The endpoint has no route but sending: a key cannot reach cancel or replay."""
    run_ids = [r.run_id for r in client.list_runs(fn_id="paid", limit=1)]
    for path in ("/runs/cancel", "/cancel", "/replay", f"/runs/{run_ids[0] if run_ids else 'x'}"):
        assert post(server.url + path, {"name": "billing/x"}, key=key)[0] == 404


# -- webhook signatures -------------------------------------------------------------------


def test_a_signed_webhook_is_accepted_once(server: Server, clean_db: redis.Redis,
                                           worker: Worker) -> None:
    raw = json.dumps({"name": "billing/invoice.paid", "data": {"amount": 5},
                      "id": "signed-1"}).encode()
    header = sign(SECRET, raw)
    url = server.url + "/webhooks/signed"
    assert post(url, raw=raw, headers={"Fanout-Signature": header}) == (
        202, {"ids": ["signed-1"], "source": "signed"})
    status, body = post(url, raw=raw, headers={"Fanout-Signature": header})
    assert status == 401 and "replayed" in body["error"]
    run = wait_run(client, run_of(client, "signed-1", "paid"))
    assert run.output["cents"] == 500 and len(client.list_runs(event_id="signed-1")) == 1


def test_bad_signatures_get_401_and_publish_nothing(server: Server,
                                                    clean_db: redis.Redis) -> None:
    raw = json.dumps({"name": "billing/invoice.paid", "id": "unsigned-1"}).encode()
    url = server.url + "/webhooks/signed"
    now = int(time.time())
    cases = {
        None: "missing signature",
        "garbage": "malformed fanout-signature header",
        sign("some-other-secret-value", raw): "does not match",
        sign(SECRET, raw + b" "): "does not match",
        sign(SECRET, raw, timestamp=now - 3600): "outside the 300 s tolerance",
        sign(SECRET, raw, timestamp=now + 3600): "outside the 300 s tolerance",
    }
    for header, reason in cases.items():
        status, body = post(url, raw=raw, headers={"Fanout-Signature": header} if header else {})
        assert status == 401 and reason in body["error"], (header, body)
    assert not stored(clean_db, "unsigned-1")


def test_the_signature_is_hmac_sha256_of_timestamp_dot_body(server: Server) -> None:
    """What a sender in any language computes: hex HMAC-SHA256 of '<t>.<body>'."""
    raw = b'{"name": "billing/by-hand"}'
    t = str(int(time.time()))
    mac = hmac.new(SECRET.encode(), t.encode() + b"." + raw, hashlib.sha256).hexdigest()
    header = f"t={t},v1={'0' * 64},v1={mac}"  # any listed v1 may match (secret rotation)
    status, _ = post(server.url + "/webhooks/signed", raw=raw,
                     headers={"Fanout-Signature": header})
    assert status == 202


def test_a_source_with_a_secret_must_sign_even_with_a_key(server: Server) -> None:
    signed_key = KEYS.create("signed").key
    status, body = post(server.url, {"name": "billing/x"}, key=signed_key)
    assert status == 401 and "missing signature" in body["error"]
    raw = b'{"name": "billing/x"}'
    status, _ = post(server.url, raw=raw, key=signed_key,
                     headers={"Fanout-Signature": sign(SECRET, raw)})
    assert status == 202


def test_a_github_style_webhook_with_a_transform(server: Server, worker: Worker) -> None:
    raw = json.dumps({"ref": "refs/heads/main", "commits": []}).encode()
    mac = hmac.new(GH_SECRET.encode(), raw, hashlib.sha256).hexdigest()
    headers = {"X-Hub-Signature-256": f"sha256={mac}", "X-GitHub-Event": "push",
               "X-GitHub-Delivery": "72d3162e-cc78-11e3-81ab-4c9367dc0958"}
    url = server.url + "/webhooks/gh"
    status, body = post(url, raw=raw, headers=headers)
    assert status == 202 and body["ids"] == ["72d3162e-cc78-11e3-81ab-4c9367dc0958"]
    run = wait_run(client, run_of(client, body["ids"][0], "pushed"))
    assert run.output == "refs/heads/main"
    status, body = post(url, raw=raw, headers=headers)  # the same delivery again
    assert status == 401 and "replayed" in body["error"]
    bad = dict(headers, **{"X-Hub-Signature-256": "sha256=" + "0" * 64,
                           "X-GitHub-Delivery": "other"})
    assert post(url, raw=raw, headers=bad)[0] == 401


# -- outages: 503, nothing half-published ----------------------------------------------------


@pytest.fixture()
def stopped_redis() -> Iterator[int]:
    proc, port, tmp = start_redis_server()
    proc.terminate()
    proc.wait(timeout=10)
    yield port
    shutil.rmtree(tmp, ignore_errors=True)


def _dead_client(redis_url: str, broker_url: str, **opts: Any) -> fanout.Fanout:
    from celery import Celery

    other = Celery("http-dead")
    other.config_from_object("celeryconfig")
    other.conf.broker_url = broker_url
    other.conf.broker_connection_retry = False
    other.conf.broker_connection_max_retries = 0
    other.conf.broker_transport_options = {"max_retries": 0}
    return fanout.Fanout("http", celery=other, redis_url=redis_url, **opts)


def test_a_dead_redis_gets_503_and_nothing_is_published(stopped_redis: int,
                                                        clean_db: redis.Redis) -> None:
    dead = f"redis://127.0.0.1:{stopped_redis}/0"
    c = _dead_client(dead, dead)
    srv = serve(ingest_app(c, keys=IngestKeys(c, hashes={"config-src": hash_key(CONFIG_KEY)})),
                port=0, background=True)
    try:
        ev = [{"name": "billing/invoice.paid", "id": "dead-1"},
              {"name": "billing/invoice.paid", "id": "dead-2"}]
        status, body = post(srv.url, ev, key=CONFIG_KEY)
        assert status == 503 and "could not store 2 event(s) in Redis" in body["error"]
        assert body["ids"] == ["dead-1", "dead-2"]
        # A key kept in Redis cannot even be checked: 503, not 401.
        status, body = post(srv.url, ev, key="fok_0123456789AC_" + "d" * 64)
        assert status == 503 and "Redis is unavailable" in body["error"]
    finally:
        srv.stop()
    # The same server again, empty: nothing of the request reached it.
    proc = subprocess.Popen([shutil.which("redis-server") or "redis-server", "--port",
                             str(stopped_redis), "--save", "", "--appendonly", "no"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        r = redis.Redis(port=stopped_redis)
        wait_for(lambda: _pings(r), timeout=30)
        assert r.dbsize() == 0
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    assert not stored(clean_db, "dead-1") and not stored(clean_db, "dead-2")


def _pings(r: redis.Redis) -> bool:
    try:
        return bool(r.ping())
    except redis.ConnectionError:
        return False


def test_a_dead_broker_gets_503_and_a_retry_with_the_ids_runs_once(
        stopped_redis: int, server: Server, key: str, worker: Worker) -> None:
    c = _dead_client(url_for(__name__), f"redis://127.0.0.1:{stopped_redis}/0")
    srv = serve(ingest_app(c, keys=IngestKeys(c)), port=0, background=True)
    try:
        status, body = post(srv.url, {"name": "billing/invoice.paid", "data": {"amount": 7}},
                            key=key)
    finally:
        srv.stop()
    assert status == 503 and "could not publish 1 event id(s) to the broker" in body["error"]
    assert "send the request again with these ids" in body["error"]
    (eid,) = body["ids"]
    again = {"name": "billing/invoice.paid", "data": {"amount": 7}, "id": eid}
    assert post(server.url, again, key=key) == (202, {"ids": [eid], "source": "billing"})
    run = wait_run(client, run_of(client, eid, "paid"))
    assert run.output["cents"] == 700 and len(client.list_runs(event_id=eid)) == 1


# -- the ASGI app, and where the server listens --------------------------------------------------


def _asgi_call(app_: Any, body_chunks: list[bytes], headers: dict[str, str],
               path: str = "/events") -> tuple[int, dict[str, Any]]:
    sent: list[dict[str, Any]] = []
    queue = [{"type": "http.request", "body": c, "more_body": i < len(body_chunks) - 1}
             for i, c in enumerate(body_chunks)]

    async def receive() -> dict[str, Any]:
        return queue.pop(0)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": path, "root_path": "",
             "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()]}
    asyncio.run(app_(scope, receive, send))
    return sent[0]["status"], json.loads(sent[1]["body"])


def test_the_asgi_app(server: Server, key: str, worker: Worker) -> None:
    a = asgi_app(client, keys=KEYS, webhooks=WEBHOOKS, max_body=MAX_BODY)
    h = {"content-type": "application/json", "authorization": f"Bearer {key}"}
    status, body = _asgi_call(a, [b'{"name": "billing/invoice.paid",', b' "data": {"amount": 4}}'], h)
    assert status == 202
    assert wait_run(client, run_of(client, body["ids"][0], "paid")).output["cents"] == 400
    # Streamed with no length: the limit is enforced while reading.
    status, body = _asgi_call(a, [b"x" * 40_000, b"x" * 40_000], h)
    assert status == 413
    assert _asgi_call(a, [b"{}"], {"content-type": "text/plain",
                                   "authorization": f"Bearer {key}"})[0] == 415
    assert _asgi_call(a, [b"{}"], {"content-type": "application/json"})[0] == 401


def test_the_server_listens_on_localhost_by_default() -> None:
    srv = serve(ingest_app(client, keys=KEYS), port=0, background=True)
    try:
        assert srv.host == "127.0.0.1" and srv.url.startswith("http://127.0.0.1:")
    finally:
        srv.stop()


def test_bad_configuration_is_refused() -> None:
    with pytest.raises(fanout.ConfigError, match="never accepts unauthenticated events"):
        ingest_app(client)
    with pytest.raises(fanout.ConfigError, match="at least 16 characters"):
        Webhook(secret="short")
    with pytest.raises(fanout.ConfigError, match="not a key hash"):
        IngestKeys(hashes={"a": "md5:abc"})
    with pytest.raises(fanout.ConfigError, match="unknown signature scheme"):
        Webhook(secret=SECRET, scheme="svix")


def test_one_request_is_one_publish(clean_db: redis.Redis, key: str) -> None:
    """Three events in one request: one router message on the broker, as for
    ``client.send_sync`` with a list (a broker database no worker reads)."""
    from tests.support import base_url, db_for

    broker = f"{base_url()}/{db_for(__name__) % 15 + 1}"
    c = _dead_client(url_for(__name__), broker)  # a live broker here, just unread
    r = redis.Redis.from_url(broker)
    r.delete("fanout.events")
    srv = serve(ingest_app(c, keys=IngestKeys(c)), port=0, background=True)
    try:
        events = [{"name": "billing/invoice.paid", "id": f"one-pub-{i}"} for i in range(3)]
        status, body = post(srv.url, events, key=key)
    finally:
        srv.stop()
    assert status == 202 and body["ids"] == ["one-pub-0", "one-pub-1", "one-pub-2"]
    messages = r.lrange("fanout.events", 0, -1)
    assert len(messages) == 1
    headers = json.loads(messages[0])["headers"]
    assert headers["task"] == "fanout.route"
    assert headers["argsrepr"] == "3 event(s): one-pub-0 .. one-pub-2"
    r.delete("fanout.events")


def test_the_clients_middleware_sees_posted_events(clean_db: redis.Redis, key: str) -> None:
    """Posted events go through ``client.send_sync``: an encrypting client stores
    ``data.encrypted`` of an HTTP event encrypted, like any event it sends."""
    from fanout.encryption import EncryptionMiddleware, generate_key, is_encrypted

    c = _dead_client(url_for(__name__), url_for(__name__),
                     middleware=[EncryptionMiddleware.factory(generate_key())])
    srv = serve(ingest_app(c, keys=IngestKeys(c)), port=0, background=True)
    try:
        status, body = post(srv.url, {"name": "billing/card.added", "id": "enc-1",
                                      "data": {"last4": "4242",
                                               "encrypted": {"pan": "4111-SECRET-1111"}}},
                            key=key)
    finally:
        srv.stop()
    assert (status, body["ids"]) == (202, ["enc-1"])
    raw = clean_db.get("fanout:ev:{enc-1}")
    assert raw is not None and b"4111-SECRET-1111" not in raw
    stored_event = json.loads(raw)
    assert stored_event["data"]["last4"] == "4242"
    assert is_encrypted(stored_event["data"]["encrypted"])
