"""The back-off and the outage lines every background loop shares (fanout._core.outage),
driven by a fake clock: no Redis, no sleeping. The loops themselves are tested against
real Redis and broker outages in tests/reliability/test_outages.py."""

from __future__ import annotations

import logging
import time
from typing import Any

import pytest

from fanout._celery.timers import TimerThread
from fanout._core.outage import Backoff, Outage
from fanout._core.records import StepRecord
from fanout._core.sealed import sealed_message, still_sealed


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_backoff_doubles_up_to_the_cap_with_jitter() -> None:
    top = Backoff(0.1, 5.0, rand=lambda: 1.0)
    assert [round(top.next_delay(), 3) for _ in range(8)] == [0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 5.0,
                                                              5.0]
    low = Backoff(0.1, 5.0, rand=lambda: 0.0)
    assert [round(low.next_delay(), 3) for _ in range(3)] == [0.05, 0.1, 0.2]
    low.reset()
    assert round(low.next_delay(), 3) == 0.05


def test_backoff_refuses_a_cap_below_its_base() -> None:
    with pytest.raises(ValueError, match="base <= cap"):
        Backoff(2.0, 1.0)


def test_an_outage_is_three_lines_a_minute_at_most(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    outage = Outage("the timer scan", clock=clock, rand=lambda: 1.0)
    caplog.set_level(logging.INFO, logger="fanout")
    try:
        raise ConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")
    except ConnectionError as exc:
        err = exc
    waits = []
    for _ in range(600):  # ten minutes of failed rounds, one every second
        waits.append(outage.failed(err))
        clock.now += 1.0
    outage.ok()
    records = [r for r in caplog.records if r.name == "fanout"]
    first, *repeats, last = records
    assert first.levelno == logging.WARNING and first.exc_info is not None
    assert "the timer scan failed (ConnectionError: Error 111" in first.getMessage()
    assert len(repeats) == 9  # one a minute after the first, for ten minutes
    assert all(r.levelno == logging.WARNING and r.exc_info is None for r in repeats)
    assert "still failing after 60s" in repeats[0].getMessage()
    assert last.levelno == logging.INFO
    assert "the timer scan recovered after an outage of 600.0s (600 failed attempts)" in (
        last.getMessage())
    assert max(waits) == 5.0 and waits[0] == 0.1
    # After recovery the next outage is logged afresh, and the back-off starts over.
    assert outage.failed(err) == 0.1 and len(caplog.records) == len(records) + 1


def test_a_good_round_without_an_outage_logs_nothing(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="fanout")
    outage = Outage("x")
    outage.ok()
    assert caplog.records == []


class DownStore:
    def claim_due(self, *, rearm_s: float) -> Any:
        raise ConnectionError("down")


class OverdueStore:
    def claim_due(self, *, rearm_s: float) -> Any:
        return [], 0, time.time() - 60.0  # a timer past due that this scan did not claim


def test_a_failed_scan_forgets_the_last_due_time_and_backs_off() -> None:
    """The known bug: after the last good scan's due time passed, every failed scan
    retried after MIN_WAIT (2 ms). Now a failed scan waits the back-off, growing."""
    t = TimerThread(lambda: OverdueStore(), None, 30.0)  # type: ignore[arg-type, return-value]
    t.scan_round()
    assert t._next_due is not None and t.next_wait() < 0.01
    t._store = lambda: DownStore()  # type: ignore[assignment, return-value]
    t.outage.backoff._rand = lambda: 1.0
    waits = [t.scan_round() for _ in range(8)]
    assert t._next_due is None
    assert waits[0] >= 0.05 and waits == sorted(waits) and waits[-1] == 5.0


def test_still_sealed_finds_an_unopened_value() -> None:
    sealed = {"__fanout_encrypted__": "fernet", "data": "gAAAA"}
    event = {"name": "shop/paid", "data": {"encrypted": sealed, "order": 1}}
    assert still_sealed([event], {}) == "data['encrypted'] of the triggering event"
    step = StepRecord(id="charge", kind="run", status="completed", output=sealed)
    assert still_sealed([{"data": {}}], {"charge": step}) == "the output of step 'charge'"
    assert still_sealed([{"data": {"encrypted": {"card": "x"}}}], {}) is None
    assert "EncryptionMiddleware.factory(key)" in sealed_message("it")


class DueStore:
    """A store with one run due on every scan, or none."""

    def __init__(self) -> None:
        self.due: list[str] = ["run-1"]

    def claim_due(self, *, rearm_s: float) -> Any:
        return list(self.due), 1, None

    def runs_fields(self, ids: list[str], fields: list[str]) -> list[list[str | None]]:
        return [["app:fn", *(None for _ in fields[1:])] for _ in ids]


class DownBroker:
    router_queue = None

    def batch(self) -> Any:
        raise ConnectionRefusedError("broker down")


def test_a_scan_with_nothing_due_does_not_end_a_broker_outage() -> None:
    """Only a scan that published again ends a broker outage (a scan with nothing due
    proves the store is back, not the broker)."""
    store = DueStore()
    t = TimerThread(lambda: store, DownBroker(), 30.0)  # type: ignore[arg-type, return-value]
    assert t.scan_round() > 0
    assert t.publish_outage.active and not t.outage.active
    store.due = []
    t.scan_round()
    assert t.publish_outage.active


def test_with_calm_failures_between_good_rounds_are_one_outage(
        caplog: pytest.LogCaptureFixture) -> None:
    """A process's messages while one master of a cluster fails over: runs on the other
    masters go through between the failures. With ``calm``, that is one outage (one
    WARNING with its traceback, one INFO), not a WARNING and a traceback per turn."""
    clock = Clock()
    outage = Outage("passes", clock=clock, rand=lambda: 1.0, calm=10.0)
    caplog.set_level(logging.INFO, logger="fanout")
    err = ConnectionError("Error 111 connecting to 127.0.0.1:7001. Connection refused.")
    start = clock.now
    for _ in range(10):  # 20 s: a failure, then a good round 1 s later, and so on
        outage.failed(err)
        clock.now += 1.0
        outage.ok()
        clock.now += 1.0
    last_ok = clock.now - 1.0
    assert outage.active
    clock.now += 10.0
    outage.ok()  # 11 s after the last failure: calm, the outage ends
    records = [r for r in caplog.records if r.name == "fanout"]
    assert [r.levelno for r in records] == [logging.WARNING, logging.INFO]
    assert records[0].exc_info is not None
    # Its length runs to the first good round after the last failure.
    assert (f"passes recovered after an outage of {last_ok - start:.1f}s (10 failed attempts)"
            in records[1].getMessage())
    assert not outage.active


def test_with_calm_a_failure_after_a_quiet_spell_is_a_new_outage(
        caplog: pytest.LogCaptureFixture) -> None:
    """No good round came after the calm spell to close the first outage (an idle
    worker): the next failure closes it, then starts a new one, each logged."""
    clock = Clock()
    outage = Outage("passes", clock=clock, rand=lambda: 1.0, calm=10.0)
    caplog.set_level(logging.INFO, logger="fanout")
    err = ConnectionError("down")
    outage.failed(err)
    clock.now += 2.0
    outage.ok()  # within calm: still the same outage
    clock.now += 3600.0
    outage.failed(err)
    records = [r for r in caplog.records if r.name == "fanout"]
    assert [r.levelno for r in records] == [logging.WARNING, logging.INFO, logging.WARNING]
    assert "recovered after an outage of 2.0s (1 failed attempts)" in records[1].getMessage()
    assert records[2].exc_info is not None and "still failing" not in records[2].getMessage()
    with pytest.raises(ValueError, match="calm"):
        Outage("x", calm=-1)
