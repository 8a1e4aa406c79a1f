"""Ingest keys limited to event-name patterns and to a rate, against the real endpoint
(waitress in a thread, and `fanout ingest` in another process sharing the limit), a
real Redis and a real worker running the runs the accepted events start."""

from __future__ import annotations

import http.client
import json
import os
import shutil
import subprocess
import sys
import urllib.parse
from collections.abc import Iterator
from typing import Any

import pytest
import redis

import fanout
from fanout.http import IngestKeys, KeyLimits, Server, hash_key, ingest_app, serve
from tests.support import ROOT, Worker, make_app, run_of, url_for, wait_for, wait_run

app, client = make_app(__name__, app_id="lim")
CONFIG_KEY = "fok_ABCDEFGHJKMN_" + "d" * 64
KEYS = IngestKeys(client, hashes={"edge": hash_key(CONFIG_KEY)},
                  limits={"edge": KeyLimits(events=("edge/*",), rate="2/s")})


@client.create_function(fn_id="placed", trigger=fanout.TriggerEvent(event="shop/order.*"))
def placed(ctx: fanout.ContextSync) -> str:
    return ctx.step.run("ack", lambda: f"ack {ctx.event.name}")


@pytest.fixture(scope="module")
def server(clean_db: redis.Redis) -> Iterator[Server]:
    srv = serve(ingest_app(client, keys=KEYS), port=0, background=True)
    yield srv
    srv.stop()


def post(url: str, body: Any, key: str) -> tuple[int, dict[str, Any], dict[str, str]]:
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        conn.request("POST", parts.path or "/", body=json.dumps(body).encode(),
                     headers={"Content-Type": "application/json",
                              "Authorization": f"Bearer {key}"})
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read()), {k.lower(): v for k, v in resp.getheaders()}
    finally:
        conn.close()


def stored(r: redis.Redis, event_id: str) -> bool:
    return bool(r.exists(f"fanout:ev:{{{event_id}}}"))


def test_a_key_sends_only_the_names_it_may(server: Server, clean_db: redis.Redis,
                                           worker: Worker) -> None:
    key = KEYS.create("shop", events=["shop/order.*", "shop/ping"]).key
    status, body, _ = post(server.url, {"name": "shop/order.placed", "id": "o-1"}, key)
    assert status == 202, body
    assert wait_run(client, run_of(client, "o-1", "placed")).output == "ack shop/order.placed"
    assert post(server.url, {"name": "shop/ping", "id": "p-1"}, key)[0] == 202
    status, body, _ = post(server.url, {"name": "billing/refund", "id": "r-1"}, key)
    assert status == 403
    assert "only events matching shop/order.*, shop/ping" in body["error"]
    assert "'billing/refund' is outside them" in body["error"]
    assert body["allowed"] == ["shop/order.*", "shop/ping"]
    # A batch with one name outside publishes nothing, not even the allowed events.
    status, body, _ = post(server.url, [{"name": "shop/order.placed", "id": "o-2"},
                                        {"name": "shop/order", "id": "o-3"}], key)
    assert status == 403 and "'shop/order' is outside" in body["error"]
    assert not stored(clean_db, "o-2") and not stored(clean_db, "o-3")
    assert not stored(clean_db, "r-1")


def test_a_configured_key_has_its_limits_too(server: Server, clean_db: redis.Redis) -> None:
    status, body, _ = post(server.url, {"name": "shop/order.placed"}, CONFIG_KEY)
    assert status == 403 and "edge/*" in body["error"]
    assert post(server.url, {"name": "edge/hit", "id": "e-1"}, CONFIG_KEY)[0] == 202


def _ingest_process(port: int) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "FANOUT_REDIS_URL": url_for(__name__)}
    exe = shutil.which("fanout", path=os.path.dirname(sys.executable)) or "fanout"
    return subprocess.Popen([exe, "-A", __name__, "ingest", "--port", str(port)], cwd=ROOT,
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)


def test_a_rate_is_shared_by_every_endpoint_process(server: Server,
                                                    clean_db: redis.Redis) -> None:
    from tests.conftest import _free_port

    made = KEYS.create("batch", events=["shop/*"], rate="5/m")
    port = _free_port()
    proc = _ingest_process(port)
    other = f"http://127.0.0.1:{port}/events"
    try:
        def up() -> bool:
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            try:
                return post(other, {"name": "shop/warmup", "id": "w-0"}, made.key)[0] == 202
            except ConnectionRefusedError:
                return False

        assert wait_for(up, timeout=60)  # 1 of 5, through the other process
        # 3 more here: 4 of 5.
        assert post(server.url, [{"name": "shop/a", "id": f"a-{i}"} for i in range(3)],
                    made.key)[0] == 202
        # Two would make 6: refused whole, with the reason and when to come back.
        status, body, headers = post(other, [{"name": "shop/b", "id": f"b-{i}"}
                                             for i in range(2)], made.key)
        assert status == 429, body
        assert "5/m" in body["error"] and "nothing was published" in body["error"]
        assert 1 <= int(headers["retry-after"]) <= 60 and body["rate"] == "5/m"
        assert not stored(clean_db, "b-0") and not stored(clean_db, "b-1")
        # The refusal used none of the allowance: one more still fits, then none.
        assert post(server.url, {"name": "shop/c", "id": "c-1"}, made.key)[0] == 202
        assert post(other, {"name": "shop/c", "id": "c-2"}, made.key)[0] == 429
        # Another key has its own allowance.
        fresh = KEYS.create("batch", rate="5/m").key
        assert post(other, {"name": "shop/c", "id": "c-3"}, fresh)[0] == 202
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def test_limits_are_listed_and_checked(server: Server) -> None:
    made = KEYS.create("ops", label="limited", events="ops/*", rate="10/s")
    info = next(k for k in KEYS.list() if k.key_id == made.key_id)
    assert info.limits == KeyLimits(("ops/*",), "10/s")
    assert info.to_json()["events"] == ["ops/*"] and info.to_json()["rate"] == "10/s"
    with pytest.raises(fanout.ConfigError, match="'100/s' or '600/m'"):
        KEYS.create("ops", rate="100 per hour")
    with pytest.raises(fanout.ConfigError, match="may only come last"):
        KEYS.create("ops", events=["ops*x"])


def test_a_limited_key_still_cannot_do_anything_else(server: Server) -> None:
    key = KEYS.create("shop", events=["shop/*"]).key
    for path in ("/runs/cancel", "/replay", "/actions/cancel", "/metrics"):
        assert post(server.url + path, {"name": "shop/x"}, key)[0] == 404
