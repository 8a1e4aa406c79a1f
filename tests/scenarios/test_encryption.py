"""Encryption at rest with real workers: a secret that passes through an event, a
step, a sent event and the outputs is nowhere in Redis as plain text (store and
broker); the rest of the event stays readable; a worker with the wrong key fails the
run without touching the ciphertext; a rotated key with the old one as fallback
reads the old run when it is replayed."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

import fanout
from fanout.encryption import EncryptionMiddleware, Keyring, is_encrypted
from tests.support import Worker, make_app, run_of, wait_for, wait_run

KEY_A = "VqUhssT-prBn2Et91sMGN72TY2aEAimTPYDH3IGOiUc="  # test keys, random, used nowhere else
KEY_B = "ETzugrirB8GBNP5urWUp0qRBQ_JMPTY5POh8NrC_z4g="
KEY_C = "NDzgKTvFGU94oMjYjlhgel40zWskwHop74OsHHExr3M="
KEYS = {"a": (KEY_A, []), "b": (KEY_B, []), "rotated": (KEY_C, [KEY_A])}
# "none": a worker deployed without the encryption middleware.
WHICH = os.environ.get("FANOUT_TEST_ENC", "a")
key, fallbacks = KEYS.get(WHICH, (KEY_A, []))
SECRET = "4111-1111-1111-1111"

app, client = make_app(__name__, app_id="enc", middleware=[] if WHICH == "none" else [
    EncryptionMiddleware.factory(key, fallback_decryption_keys=fallbacks)])


@client.create_function(fn_id="pay", trigger=fanout.TriggerEvent(event="enc/pay"), retries=0)
def pay(ctx: fanout.ContextSync) -> dict[str, Any]:
    card = ctx.event.data["encrypted"]["card"]
    charged = ctx.step.run("charge", lambda: {"card": card, "ok": True})
    ctx.step.send_event("receipt", fanout.Event(
        name="enc/receipt", data={"encrypted": {"card": card}, "order": ctx.event.data["order"]}))
    return {"card": charged["card"]}


@client.create_function(fn_id="receipt", trigger=fanout.TriggerEvent(event="enc/receipt"))
def receipt(ctx: fanout.ContextSync) -> str:
    return str(ctx.event.data["encrypted"]["card"])[-4:]


def _everything(r: redis.Redis) -> bytes:
    """Every value in a Redis database, concatenated (strings, hashes, lists, sets, zsets)."""
    out = []
    for k in r.scan_iter(count=1000):
        t = r.type(k)
        if t == b"string":
            out.append(r.get(k) or b"")
        elif t == b"hash":
            out.extend(b for kv in r.hgetall(k).items() for b in kv)
        elif t == b"list":
            out.extend(r.lrange(k, 0, -1))
        elif t == b"set":
            out.extend(r.smembers(k))
        elif t == b"zset":
            out.extend(m for m, _s in r.zrange(k, 0, -1, withscores=True))
        out.append(k)
    return b"\n".join(out)


def _pay(order: int) -> str:
    (eid,) = client.send_sync(fanout.Event(
        name="enc/pay", data={"encrypted": {"card": SECRET}, "order": order}))
    return run_of(client, eid, "pay")


@pytest.fixture(scope="module")
def store() -> redis.Redis:
    return redis.Redis.from_url(client.redis_url)


@pytest.fixture
def worker_with(clean_db: Any, log_dir: Path) -> Iterator[Any]:
    started: list[Worker] = []

    def start(which: str) -> Worker:
        w = Worker(__name__, name=f"w-{which}", env={"FANOUT_TEST_ENC": which}, log_dir=log_dir)
        started.append(w)
        return w

    yield start
    for w in started:
        w.stop()


def test_no_plaintext_reaches_redis(worker_with: Any, store: redis.Redis) -> None:
    w = worker_with("a")
    rid = _pay(1)
    info = wait_run(client, rid)
    assert info.status == "completed", info.error
    ring = Keyring(KEY_A)
    assert is_encrypted(info.output) and ring.open(info.output, "output") == {"card": SECRET}
    (step,) = [s for s in info.steps if s.step_id == "charge"]
    assert is_encrypted(step.output)
    assert ring.open(step.output, "step") == {"card": SECRET, "ok": True}
    sent = wait_for(lambda: client.list_runs(fn_id="receipt", status="completed"), 30)
    assert is_encrypted(sent[0].output) and ring.open(sent[0].output, "receipt") == "1111"
    w.stop()
    store_text = _everything(store)
    broker_text = _everything(redis.Redis.from_url(app.conf.broker_url))
    assert SECRET.encode() not in store_text and SECRET.encode() not in broker_text
    # The rest of the event stays readable (triggers, if-expressions, flow keys).
    assert b'"order":1' in store_text


def test_wrong_key_fails_the_run_and_rotation_reads_it_back(
    worker_with: Any, store: redis.Redis
) -> None:
    w = worker_with("b")
    rid = _pay(2)
    info = wait_run(client, rid)
    assert info.status == "failed"
    assert info.error is not None and info.error["type"] == "DecryptionError"
    assert "cannot decrypt the triggering event's data" in info.error["message"]
    event_text = store.hget(f"fanout:run:{{{rid}}}", "event") or b""
    assert SECRET.encode() not in event_text and b"__fanout_encrypted__" in event_text
    w.stop()

    worker_with("rotated")  # new key C, old key A as a fallback
    again = client.replay(rid)
    info = wait_run(client, again)
    assert info.status == "completed", info.error
    assert Keyring(KEY_C).open(info.output, "output") == {"card": SECRET}
    with pytest.raises(fanout.DecryptionError):
        Keyring(KEY_A).open(info.output, "output")  # written with the new key


def test_a_worker_without_the_middleware_fails_naming_it(
    worker_with: Any, store: redis.Redis
) -> None:
    """Not ``KeyError: 'card'`` in the user's code: the pass fails before the handler
    runs, with an error that names the middleware, and the ciphertext stays."""
    worker_with("none")
    rid = _pay(4)
    info = wait_run(client, rid)
    assert info.status == "failed"
    assert info.error is not None and info.error["type"] == "DecryptionError", info.error
    message = info.error["message"]
    assert "data['encrypted'] of the triggering event is encrypted" in message
    assert "no EncryptionMiddleware" in message
    assert "EncryptionMiddleware.factory(key)" in message
    assert "KeyError" not in str(info.error)
    event_text = store.hget(f"fanout:run:{{{rid}}}", "event") or b""
    assert SECRET.encode() not in event_text and b"__fanout_encrypted__" in event_text


def test_bad_keys_are_refused_at_declaration() -> None:
    with pytest.raises(fanout.ConfigError, match="not a Fernet key.*generate_key"):
        EncryptionMiddleware.factory("not a key")
    with pytest.raises(fanout.ConfigError, match="fallback_decryption_keys\\[0\\]"):
        EncryptionMiddleware.factory(KEY_A, fallback_decryption_keys=["nope"])


def test_cli_shows_encrypted_values_and_decrypts_with_the_key(worker_with: Any) -> None:
    import subprocess
    import sys

    from tests.support import ROOT

    worker_with("a")
    rid = _pay(3)
    assert wait_run(client, rid).status == "completed"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("FANOUT_ENCRYPTION_KEY", None)
    cmd = [sys.executable, "-m", "fanout._cli", "-A", __name__, "run", rid]
    plain = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=60)
    assert plain.returncode == 0, plain.stderr
    assert "<encrypted (fernet): pass --key to show it>" in plain.stdout
    assert SECRET not in plain.stdout
    opened = subprocess.run([*cmd, "--key", KEY_A], capture_output=True, text=True, env=env,
                            cwd=ROOT, timeout=60)
    assert opened.returncode == 0, opened.stderr
    assert SECRET in opened.stdout
