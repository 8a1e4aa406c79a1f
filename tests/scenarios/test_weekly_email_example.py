"""examples/weekly_email on a real Redis: the broker and fanout's state store are
separate databases, as docs/howto/deployment.md advises."""

from __future__ import annotations

import os
import subprocess
import sys

import redis

from tests import support


def _run(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if k not in ("CELERY_BROKER_URL", "FANOUT_APP")}
    full.update(env, PYTHONPATH=str(support.ROOT))
    return subprocess.run([sys.executable, "-m", "examples.weekly_email"], cwd=support.ROOT,
                          env=full, capture_output=True, text=True, timeout=180)


def _kombu_keys(r: redis.Redis) -> list[bytes]:
    return [k for k in r.scan_iter(count=500) if k.startswith((b"_kombu", b"unacked"))
            or k in (b"celery", b"fanout.events")]


def test_broker_and_store_are_separate_databases() -> None:
    store_db = support.db_for(__name__)
    store_url = f"{support.base_url()}/{store_db}"
    broker_db = store_db + 1 if store_db < 15 else store_db - 1
    store = redis.Redis.from_url(store_url)
    broker = redis.Redis.from_url(f"{support.base_url()}/{broker_db}")
    store.flushdb()
    broker.flushdb()
    proc = _run({"FANOUT_REDIS_URL": store_url})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "all runs completed" in proc.stdout, proc.stdout[-3000:]
    assert any(k.startswith(b"fanout:") for k in store.scan_iter(count=500))
    assert _kombu_keys(store) == [], "the broker's keys are in fanout's store database"
    assert _kombu_keys(broker), "no broker keys in the database next to the store"
    assert not any(k.startswith(b"fanout:") for k in broker.scan_iter(count=500))


def test_celery_broker_url_names_the_broker() -> None:
    store_url = f"{support.base_url()}/{support.db_for(__name__)}"
    broker_url = f"{support.base_url()}/{support.db_for(__name__) % 15 + 1}"
    out = subprocess.run(
        [sys.executable, "-c", "from examples.weekly_email.app import app, client; "
         "print(app.conf.broker_url); print(client.redis_url)"],
        cwd=support.ROOT, capture_output=True, text=True, timeout=60,
        env={**os.environ, "PYTHONPATH": str(support.ROOT), "FANOUT_REDIS_URL": store_url,
             "CELERY_BROKER_URL": broker_url})
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [broker_url, store_url]
