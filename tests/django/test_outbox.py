"""The outbox in one process: what is written, when it is published, what a sweep does.

No worker runs here; "published" means the event is in Redis (the broker
message goes to a queue nobody consumes until the module is over).
"""

from __future__ import annotations

import datetime as _dt
import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("django", reason="Django is not installed (pip install django)")

import redis
from django.core.management import call_command
from django.db import connection, transaction
from django.utils import timezone

import fanout
from fanout.django import client, emit, send, sweep
from fanout.django._project import discovered
from fanout.django.conf import get_settings
from fanout.django.models import OutboxEvent
from fanout.django.sweeper import sweep as sweep_pass
from tests.django.shop.models import Order
from tests.support import ROOT

pytestmark = pytest.mark.django_db(transaction=True)


class Boom(Exception):
    pass


@pytest.fixture(autouse=True)
def _redis(fanout_redis: redis.Redis) -> redis.Redis:
    return fanout_redis


def stored(event_id: str) -> dict[str, Any] | None:
    """The event as Redis holds it (None: never published)."""
    (event,) = client().runtime.store.load_events([event_id])
    return event


@pytest.fixture
def failing_publish(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """Make every publish fail as if Redis were down; yields the call count."""
    calls: list[int] = []

    def publish(*args: Any, **kwargs: Any) -> list[str]:
        calls.append(1)
        raise fanout.PublishError("could not store 1 event(s) in Redis: connection refused")

    monkeypatch.setattr(client().runtime.publisher, "publish", publish)
    yield calls


def add_row(event_id: str, *, payload: str | None = None, due_in: float = -1.0) -> OutboxEvent:
    wire = {"name": "shop/manual", "data": {"n": 1}, "id": event_id, "ts": 1}
    return OutboxEvent.objects.create(
        event_id=event_id,
        name="shop/manual",
        payload=payload if payload is not None else json.dumps(wire),
        next_attempt_at=timezone.now() + _dt.timedelta(seconds=due_in),
    )


def test_functions_modules_are_discovered() -> None:
    assert discovered == ["tests.django.shop.fanout_functions"]
    assert "confirm-order" in client().functions


def test_in_a_transaction_the_event_goes_out_after_commit() -> None:
    with transaction.atomic():
        order = Order.objects.create(total="5.00")
        eid = emit("shop/order.created", {"order_id": order.pk})
        row = OutboxEvent.objects.get(event_id=eid)
        assert stored(eid) is None, "published before the commit"
        wire = json.loads(row.payload)
        assert (wire["id"], wire["name"], wire["data"]) == (eid, "shop/order.created", {"order_id": order.pk})
        assert row.next_attempt_at - row.created_at == _dt.timedelta(seconds=get_settings().sweep_grace)
    assert stored(eid) == wire, "the published event is the row's payload, id and ts included"
    assert not OutboxEvent.objects.exists(), "the row outlived a successful publish"


def test_outside_a_transaction_the_event_goes_out_at_once() -> None:
    assert not connection.in_atomic_block
    eid = emit("shop/order.created", {"order_id": 7}, user={"id": "u1"})
    event = stored(eid)
    assert event is not None and event["user"] == {"id": "u1"}
    assert not OutboxEvent.objects.exists()


def test_rollback_writes_and_publishes_nothing() -> None:
    with pytest.raises(Boom), transaction.atomic():
        eid = emit("shop/order.created", {"order_id": 1})
        assert OutboxEvent.objects.count() == 1
        raise Boom
    assert not OutboxEvent.objects.exists()
    assert stored(eid) is None


def test_a_rolled_back_savepoint_drops_only_its_own_events() -> None:
    with transaction.atomic():
        kept = emit("shop/kept")
        try:
            with transaction.atomic():
                dropped = emit("shop/dropped")
                raise Boom
        except Boom:
            pass
    assert stored(kept) is not None
    assert stored(dropped) is None
    assert not OutboxEvent.objects.exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("",), "event name is empty"),
        (("fanout/internal",), "reserved"),
        (("shop/x", {"when": object()}), "not JSON-serializable"),
        (("shop/x", {"n": float("inf")}), "JSON cannot carry"),
        (("shop/x", ["not", "a", "dict"]), "data"),
    ],
)
def test_invalid_events_raise_before_anything_is_written(args: tuple[Any, ...], message: str) -> None:
    with transaction.atomic():
        with pytest.raises(fanout.EventError, match=message):
            emit(*args)
        Order.objects.create(total="1.00")  # the transaction is still usable
    assert not OutboxEvent.objects.exists()
    assert Order.objects.count() == 1


def test_send_writes_one_row_per_event_and_keeps_the_order() -> None:
    with transaction.atomic():
        ids = send([fanout.Event(name="shop/a", data={"i": 0}), {"name": "shop/b", "data": {"i": 1}}])
        assert sorted(OutboxEvent.objects.values_list("event_id", flat=True)) == sorted(ids)
    assert [stored(i)["data"] for i in ids] == [{"i": 0}, {"i": 1}]  # type: ignore[index]
    with pytest.raises(fanout.EventError, match="empty"):
        send([])


def test_a_repeated_explicit_id_is_one_row_and_one_event() -> None:
    with transaction.atomic():
        assert emit("shop/x", {"v": 1}, id="order-42") == "order-42"
        assert emit("shop/x", {"v": 2}, id="order-42") == "order-42"
        assert OutboxEvent.objects.count() == 1
    assert stored("order-42")["data"] == {"v": 1}  # type: ignore[index]
    assert not OutboxEvent.objects.exists()


def test_a_failed_publish_keeps_the_row_for_the_sweeper(failing_publish: list[int]) -> None:
    with transaction.atomic():
        eid = emit("shop/order.created", {"order_id": 3})
    # The caller is not bothered: the event is safe in the outbox.
    assert failing_publish == [1]
    row = OutboxEvent.objects.get(event_id=eid)
    assert row.attempts == 1
    assert row.last_error.startswith("PublishError: could not store")
    assert row.next_attempt_at > timezone.now(), "the row must wait out the grace period"
    assert sweep_pass().seen == 0, "a row inside its grace period was swept"


def test_a_sweep_publishes_due_rows_and_deletes_them() -> None:
    add_row("due-1")
    add_row("due-2")
    add_row("later", due_in=60)
    assert sweep() == 2
    assert stored("due-1") is not None and stored("due-2") is not None
    assert list(OutboxEvent.objects.values_list("event_id", flat=True)) == ["later"]
    assert stored("later") is None
    assert sweep(due_only=False) == 1
    assert stored("later") is not None and not OutboxEvent.objects.exists()


def test_a_failed_sweep_backs_off(failing_publish: list[int]) -> None:
    add_row("flaky")
    conf = get_settings()
    before = timezone.now()
    assert sweep_pass().failed == 1
    row = OutboxEvent.objects.get(event_id="flaky")
    assert row.attempts == 1 and "PublishError" in row.last_error
    assert row.next_attempt_at >= before + _dt.timedelta(seconds=conf.backoff(1))
    assert sweep_pass().seen == 0, "retried before its backoff"
    OutboxEvent.objects.filter(pk=row.pk).update(next_attempt_at=timezone.now())
    sweep_pass()
    row.refresh_from_db()
    assert row.attempts == 2
    assert row.next_attempt_at >= timezone.now() + _dt.timedelta(seconds=conf.backoff(2) - 1)


def test_an_unreadable_row_does_not_block_the_others() -> None:
    add_row("broken", payload="{not json")
    add_row("fine")
    result = sweep_pass()
    assert (result.published, result.failed) == (1, 1)
    assert stored("fine") is not None
    row = OutboxEvent.objects.get()
    assert row.event_id == "broken" and row.attempts == 1
    assert row.last_error.startswith("unreadable payload")


def test_concurrent_sweeps_skip_locked_rows(
    db_backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if db_backend != "postgresql":
        pytest.skip("SELECT ... FOR UPDATE SKIP LOCKED needs PostgreSQL")
    add_row("contended")
    rt = client().runtime
    original = rt.publisher.publish
    entered, release = threading.Event(), threading.Event()
    calls: list[str] = []

    def slow_publish(prepared: Any, **kwargs: Any) -> list[str]:
        calls.append(prepared[0][0].id)
        entered.set()
        assert release.wait(10)
        return original(prepared, **kwargs)

    monkeypatch.setattr(rt.publisher, "publish", slow_publish)
    results: dict[str, Any] = {}

    def run(name: str) -> None:
        try:
            results[name] = sweep_pass()
        finally:
            connection.close()

    first = threading.Thread(target=run, args=("first",))
    first.start()
    assert entered.wait(10)
    second = threading.Thread(target=run, args=("second",))
    second.start()
    second.join(5)
    assert not second.is_alive(), "the second sweep waited for the first one's lock"
    release.set()
    first.join(10)
    assert results["second"].seen == 0
    assert results["first"].published == 1
    assert calls == ["contended"]
    assert not OutboxEvent.objects.exists()


def test_the_management_command_shows_and_sweeps(capsys: pytest.CaptureFixture[str]) -> None:
    add_row("cmd-1")
    add_row("cmd-2", due_in=60)
    call_command("fanout_outbox")
    assert "2 waiting, 1 due, 0 with failed attempts" in capsys.readouterr().out
    call_command("fanout_outbox", "--sweep")
    out = capsys.readouterr().out
    assert "published 1 event(s)" in out and "1 waiting, 0 due" in out
    call_command("fanout_outbox", "--sweep", "--all")
    assert "0 waiting" in capsys.readouterr().out
    assert stored("cmd-2") is not None


def test_the_shipped_migration_matches_the_model() -> None:
    call_command("makemigrations", "fanout", "--check", "--dry-run", verbosity=0)


def test_importable_without_psycopg(tmp_path: Any) -> None:
    """fanout.django needs Django only: block psycopg and set up on SQLite."""
    code = f"""
import sys
sys.modules["psycopg"] = None
sys.modules["psycopg2"] = None
from django.conf import settings
settings.configure(
    INSTALLED_APPS=["fanout.django"],
    DATABASES={{"default": {{"ENGINE": "django.db.backends.sqlite3", "NAME": {str(tmp_path / "x.db")!r}}}}},
    FANOUT={{"APP_ID": "nopg", "REDIS_URL": "redis://127.0.0.1:1/0",
            "CELERY_APP": "tests.django.testproj.celery:app"}},
    USE_TZ=True,
)
import django
django.setup()
import fanout.django.outbox, fanout.django.sweeper, fanout.django.testing
from django.core.management import call_command
call_command("migrate", "fanout", verbosity=0)
from fanout.django.models import OutboxEvent
print("ok", OutboxEvent.objects.count())
"""
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == "ok 0"
