"""Unit tests for fanout._celery.cron: beat's due math, catch-up decisions, and the worker side
on the in-memory store (no broker, no beat process)."""

from __future__ import annotations

import pickle
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from celery import Celery, signals
from celery.beat import PersistentScheduler, Service

import fanout
from fanout._celery import passes
from fanout._celery.cron import (
    CLOCK_ENV,
    ENTRY_NAME,
    TIMER_EVENT,
    BeatSchedule,
    Clock,
    CronService,
    decide,
    due_state,
    horizon_for,
    read_options,
    tick_event,
)
from fanout._core.schedule import MAX_SKIPPED, CronSchedule, jitter_for, tick_id, tick_key
from fanout._redis.replies import text as _s

UTC = timezone.utc
MINUTELY = CronSchedule.parse("* * * * *")
HOURLY = CronSchedule.parse("0 * * * *")
DEADLINE = timedelta(minutes=5)


def utc(h: int, mi: int = 0, s: float = 0, *, day: int = 1, month: int = 1) -> datetime:
    whole = int(s)
    return datetime(2030, month, day, h, mi, whole, int((s - whole) * 1e6), tzinfo=UTC)


# -- the test clock -------------------------------------------------------------------


def test_clock_is_identity_by_default() -> None:
    clock = Clock.from_env({})
    assert clock.is_real
    assert clock.at(1_900_000_000.5) == datetime.fromtimestamp(1_900_000_000.5, UTC)
    assert clock.real(utc(12)) == utc(12).timestamp()


def test_clock_from_env_runs_faster_and_maps_back() -> None:
    clock = Clock.from_env({CLOCK_ENV: f"1000:{utc(12).timestamp()}:30"})
    assert not clock.is_real
    assert clock.at(1000) == utc(12)
    assert clock.at(1002) == utc(12, 1)  # one fake minute every 2 real seconds
    assert clock.real(utc(12, 1, 30)) == pytest.approx(1003.0)


@pytest.mark.parametrize("raw", ["1:2", "a:b:c", "1:2:0", "1:2:-3"])
def test_clock_from_env_rejects_bad_values(raw: str) -> None:
    with pytest.raises(fanout.ConfigError, match=CLOCK_ENV):
        Clock.from_env({CLOCK_ENV: raw})


# -- settings ---------------------------------------------------------------------------


def test_read_options_defaults_and_values() -> None:
    opts = read_options({})
    assert opts.deadline == timedelta(seconds=300) and opts.max_interval == 60
    opts = read_options({"fanout_cron_deadline": timedelta(hours=1), "fanout_cron_max_interval": 5})
    assert opts.deadline == timedelta(hours=1) and opts.max_interval == 5.0
    assert read_options({"fanout_cron_deadline": 0}).deadline == timedelta(0)


@pytest.mark.parametrize(
    "conf",
    [
        {"fanout_cron_deadline": -1},
        {"fanout_cron_deadline": "300"},
        {"fanout_cron_deadline": True},
        {"fanout_cron_deadline": float("nan")},
        {"fanout_cron_max_interval": 0.5},
    ],
)
def test_read_options_rejects_bad_values(conf: dict[str, Any]) -> None:
    with pytest.raises(fanout.ConfigError, match="fanout_cron_"):
        read_options(conf)


# -- beat: is the entry due? -------------------------------------------------------------


def test_due_at_start_then_at_each_tick() -> None:
    assert due_state([MINUTELY], None, utc(12, 0, 20), max_interval=60) == (True, 40.0)
    # sent at 12:00:20: nothing new until 12:01
    assert due_state([MINUTELY], utc(12, 0, 20), utc(12, 0, 50), max_interval=60) == (False, 10.0)
    assert due_state([MINUTELY], utc(12, 0, 20), utc(12, 1), max_interval=60) == (True, 60.0)
    assert due_state([MINUTELY], utc(12, 0, 20), utc(12, 1, 0.5), max_interval=60) == (True, 59.5)
    # a tick exactly at the last send was covered by that send
    assert due_state([MINUTELY], utc(12, 1), utc(12, 1, 30), max_interval=60) == (False, 30.0)


def test_due_wait_is_capped_and_scaled_by_the_clock_speed() -> None:
    assert due_state([HOURLY], utc(12, 0, 1), utc(12, 10), max_interval=60) == (False, 60.0)
    assert due_state([HOURLY], utc(12, 0, 1), utc(12, 59, 30), max_interval=60) == (False, 30.0)
    assert due_state([MINUTELY], utc(12, 0, 1), utc(12, 0, 30), max_interval=60, speed=30) == (
        False,
        1.0,
    )


def test_due_uses_the_earliest_of_several_schedules() -> None:
    quarter = CronSchedule.parse("*/15 * * * *")
    assert due_state([HOURLY, quarter], utc(12, 0, 1), utc(12, 14), max_interval=600) == (
        False,
        60.0,
    )
    assert due_state([HOURLY, quarter], utc(12, 0, 1), utc(12, 15), max_interval=600)[0]


def test_due_with_no_schedules_is_never() -> None:
    assert due_state([], utc(12), utc(13), max_interval=60) == (False, 60)
    assert due_state([], None, utc(13), max_interval=60) == (True, 60)


def test_beat_schedule_is_due_with_a_controlled_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    real = {"t": 5000.0}
    monkeypatch.setattr("fanout._celery.cron.time.time", lambda: real["t"])
    clock = Clock(real0=5000.0, fake0=utc(12, 0, 50).timestamp(), speed=30)
    sched = BeatSchedule([MINUTELY], max_interval=60, clock=clock)
    never = datetime(1970, 1, 1, tzinfo=UTC)
    due, wait = sched.is_due(never)  # never sent: catch up at start-up
    assert due and wait == pytest.approx(10 / 30)
    sent = datetime.fromtimestamp(5000.0, UTC)  # beat's last_run_at is real time
    due, wait = sched.is_due(sent)
    assert not due and wait == pytest.approx(10 / 30)
    real["t"] = 5000.0 + 10 / 30 + 0.001  # 12:01:00.03 on the test clock
    assert sched.is_due(sent)[0]
    assert sched.is_due(sent.replace(tzinfo=None))[0]  # naive = UTC
    assert sched.remaining_estimate(sent).total_seconds() == pytest.approx(2.0, abs=0.01)


def test_beat_schedule_pickles_by_value() -> None:
    # beat's shelve file re-reads (unpickles) its entries after every sync
    paris = CronSchedule.parse("TZ=Europe/Paris 0 12 * * 5")
    sched = BeatSchedule([MINUTELY, paris], max_interval=5, clock=Clock(1.0, 2.0, 3.0))
    back = pickle.loads(pickle.dumps(sched))
    assert isinstance(back, BeatSchedule) and back == sched and hash(back) == hash(sched)
    assert back.schedules == (MINUTELY, paris) and back.clock == Clock(1.0, 2.0, 3.0)
    assert back.max_interval == 5
    assert sched != BeatSchedule([MINUTELY], max_interval=5, clock=Clock(1.0, 2.0, 3.0))


def test_horizon_trusts_a_beat_clock_only_a_little_ahead() -> None:
    now = utc(12)
    assert horizon_for(None, now) == now
    assert horizon_for(utc(11, 59), now) == now
    assert horizon_for(utc(12, 0, 20), now) == utc(12, 0, 20)
    assert horizon_for(utc(13), now) == utc(12, 1)


# -- worker: which ticks run, which are skipped -------------------------------------------


def test_first_deploy_runs_only_a_recent_tick() -> None:
    assert decide([MINUTELY], None, utc(12, 0, 10), DEADLINE).run == (utc(12), 0)
    assert decide([MINUTELY], None, utc(12, 0, 10), DEADLINE).skipped == ()
    assert decide([HOURLY], None, utc(12, 30), DEADLINE).run is None


def test_catch_up_runs_the_latest_and_skips_the_rest() -> None:
    d = decide([MINUTELY], utc(12, 0, 0.5), utc(12, 4, 2), DEADLINE)
    assert d.run == (utc(12, 4), 0)
    assert [t for t, _ in d.skipped] == [utc(12, 1), utc(12, 2), utc(12, 3)]
    assert decide([MINUTELY], utc(12, 4, 2), utc(12, 4, 30), DEADLINE) == decide(
        [MINUTELY], utc(12, 4, 2), utc(12, 4, 2), DEADLINE
    )
    assert decide([MINUTELY], utc(12, 4, 2), utc(12, 4, 30), DEADLINE).run is None


def test_a_tick_beyond_the_deadline_is_skipped_too() -> None:
    d = decide([HOURLY], utc(10, 0, 1), utc(12, 6), DEADLINE)
    assert d.run is None
    assert [t for t, _ in d.skipped] == [utc(11), utc(12)]
    d = decide([HOURLY], utc(10, 0, 1), utc(12, 5), DEADLINE)
    assert d.run == (utc(12), 0) and [t for t, _ in d.skipped] == [utc(11)]


def test_a_cursor_ahead_of_the_horizon_plans_nothing() -> None:
    assert decide([MINUTELY], utc(12, 5), utc(12, 4), DEADLINE).run is None


def test_several_triggers_act_as_one_schedule() -> None:
    half = CronSchedule.parse("30 * * * *")
    d = decide([HOURLY, half], utc(10, 0, 1), utc(12, 31), timedelta(hours=3))
    assert d.run == (utc(12, 30), 1)
    assert [(t, i) for t, i in d.skipped] == [
        (utc(10, 30), 1),
        (utc(11), 0),
        (utc(11, 30), 1),
        (utc(12), 0),
    ]
    first = decide([HOURLY, half], None, utc(12, 31), timedelta(hours=1))
    assert first.run == (utc(12, 30), 1) and first.skipped == ()
    twice = decide([HOURLY, HOURLY], utc(10, 0, 1), utc(12, 1), DEADLINE)
    assert twice.run == (utc(12), 0) and [t for t, _ in twice.skipped] == [utc(11)]


def test_fall_back_hour_is_not_doubled() -> None:
    # Europe/Paris leaves summer time on 2030-10-27: 02:00-03:00 local happens twice.
    paris = CronSchedule.parse("TZ=Europe/Paris */30 2 * * *")
    d = decide([paris], utc(23, 0, day=26, month=10), utc(3, day=27, month=10), timedelta(days=1))
    ticks = [t for t, _ in d.skipped] + ([d.run[0]] if d.run else [])
    assert ticks == [utc(0, day=27, month=10), utc(0, 30, day=27, month=10)]


def test_skipped_list_is_capped() -> None:
    d = decide([MINUTELY], utc(0, 0, 1), utc(23, 0, 1), timedelta(0))
    assert d.run is None and d.truncated
    assert len(d.skipped) == MAX_SKIPPED and d.skipped[-1][0] == utc(23)


def test_tick_event_is_deterministic() -> None:
    app = _app()
    client = fanout.Fanout("crontest", celery=app, redis_url=_memory_url())

    @client.create_function(fn_id="nightly", trigger=fanout.TriggerCron(cron="0 3 * * *"))
    def nightly(ctx: fanout.ContextSync) -> None:
        return None

    fn = client.functions["nightly"]
    ev = tick_event(fn, fn.cron_triggers[0], utc(3))
    assert ev == tick_event(fn, fn.cron_triggers[0], utc(3))
    assert ev["name"] == TIMER_EVENT
    assert ev["data"] == {
        "cron": "0 3 * * *",
        "scheduled_at": "2030-01-01T03:00:00Z",
        "fn_id": "nightly",
    }
    assert ev["id"] != tick_event(fn, fn.cron_triggers[0], utc(3, day=2))["id"]
    fanout.Event(**ev)  # a valid event


# -- worker side on the in-memory store -----------------------------------------------------


def _memory_url() -> str:
    return f"memory://cron-{uuid.uuid4().hex}"


def _app() -> Celery:
    app = Celery("crontest", broker="memory://", set_as_current=False)
    app.conf.update(task_serializer="json", accept_content=["json"], result_serializer="json")
    return app


class Setup:
    def __init__(self, monkeypatch: pytest.MonkeyPatch, **conf: Any) -> None:
        self.app = _app()
        self.app.conf.update(conf)
        self.client = fanout.Fanout("crontest", celery=self.app, redis_url=_memory_url())
        self.rt = self.client.runtime
        self.enqueued: list[tuple[str, str, int | None]] = []
        monkeypatch.setattr(
            self.rt.publisher,
            "enqueue",
            lambda fk, rid, seq, producer=None: self.enqueued.append((fk, rid, seq)),
        )
        self.cron: CronService = self.rt.cron

    def add(self, fn_id: str, cron: str, jitter: float | None = None) -> Any:
        @self.client.create_function(
            fn_id=fn_id, trigger=fanout.TriggerCron(cron=cron, jitter=jitter)
        )
        def handler(ctx: fanout.ContextSync) -> None:
            return None

        return self.client.functions[fn_id]

    def cursor(self, fn: Any) -> dict[str, str]:
        raw = self.rt.store.r.hgetall(self.cron.cursor_key(fn.key))
        return {_s(k): _s(v) for k, v in raw.items()}


def test_process_creates_one_run_per_tick_and_moves_the_cursor(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    s = Setup(monkeypatch)
    fn = s.add("every-minute", "* * * * *")
    now = datetime.now(UTC)
    tick = now.replace(second=0, microsecond=0)
    assert s.cron.process(fn, now) == 1
    rid = tick_id(fn.key, tick)
    assert s.enqueued == [(fn.key, rid, 0)]
    run = s.client.get_run(rid)
    assert run is not None and run.status == "queued"
    assert s.cursor(fn)["at"] == str(int(now.timestamp() * 1000))
    # the same message again, or a second beat's: nothing new
    assert s.cron.process(fn, now) == 0
    # a worker that read the cursor before it moved: the run exists, no second one
    s.rt.store.r.delete(s.cron.cursor_key(fn.key))
    s.cron.process(fn, now)
    assert [r.run_id for r in s.client.list_runs(fn_id="every-minute")] == [rid]
    # an older message never moves the cursor back
    s.cron.process(fn, now - timedelta(seconds=30))
    assert s.cursor(fn)["at"] == str(int(now.timestamp() * 1000))


def test_process_records_missed_ticks_as_expiring_skipped_runs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    s = Setup(monkeypatch, fanout_cron_deadline=120)
    fn = s.add("every-minute", "* * * * *")
    now = datetime.now(UTC)
    tick = now.replace(second=0, microsecond=0)
    cursor = tick - timedelta(minutes=4, seconds=30)
    s.rt.store.r.hset(s.cron.cursor_key(fn.key), "at", int(cursor.timestamp() * 1000))
    assert s.cron.process(fn, now) == 1
    skipped = s.client.list_runs(fn_id="every-minute", status="skipped")
    expected = [tick - timedelta(minutes=m) for m in (1, 2, 3, 4)]
    assert sorted(r.run_id for r in skipped) == sorted(tick_id(fn.key, t) for t in expected)
    for r in skipped:
        assert r.ended_at is not None and r.error and r.error["type"] == "CronTickSkipped"
        ttl = s.rt.store.r.ttl(s.rt.store.run_key(r.run_id))
        assert 0 < ttl <= s.rt.store.retention
    assert s.enqueued == [(fn.key, tick_id(fn.key, tick), 0)]
    assert s.cursor(fn)["skipped"] == "4"
    # replaying the message records nothing twice
    s.rt.store.r.hset(s.cron.cursor_key(fn.key), "at", int(cursor.timestamp() * 1000))
    s.cron.process(fn, now)
    assert s.cursor(fn)["skipped"] == "4"


def test_jittered_run_waits_on_a_timer(monkeypatch: pytest.MonkeyPatch) -> None:
    s = Setup(monkeypatch)
    fn = s.add("jittered", "* * * * *", jitter=120)
    now = datetime.now(UTC)
    tick = now.replace(second=0, microsecond=0)
    rid = tick_id(fn.key, tick)
    delay = jitter_for(tick_key(fn.key, tick), 120)  # seeded by the earlier spelling
    due = tick.timestamp() + delay
    s.cron.process(fn, now)
    if due > now.timestamp() + 0.05:
        assert s.enqueued == []
        score = s.rt.store.r.zscore(s.rt.store.timer_key(rid), rid)
        assert score == int(due * 1000)
        assert float(s.rt.store.run_fields(rid)["wake"]) == pytest.approx(due)
    else:  # the jitter has already passed: start at once
        assert s.enqueued == [(fn.key, rid, 0)]


def test_a_tick_created_under_the_earlier_id_spelling_does_not_run_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # An older beat created the tick's run (lower-case id) and was replaced by a deploy
    # before it moved the cursor: the new beat must not start the tick a second time.
    s = Setup(monkeypatch)
    fn = s.add("every-minute", "* * * * *")
    now = datetime.now(UTC)
    tick = now.replace(second=0, microsecond=0)
    old = tick_key(fn.key, tick)
    s.rt.store.r.hset(s.rt.store.run_key(old), mapping={"st": "queued", "fn": fn.key})
    assert s.cron.process(fn, now) == 0
    assert s.enqueued == []
    assert s.client.get_run(tick_id(fn.key, tick)) is None
    assert s.cursor(fn)["at"]  # the cursor still moves past the tick


# -- beat_init ---------------------------------------------------------------------------------


def test_beat_init_adds_one_entry_beside_the_users(tmp_path: Path) -> None:
    app = _app()
    app.conf.result_expires = None  # no celery.backend_cleanup entry
    app.conf.beat_schedule = {"mine": {"task": "my.task", "schedule": 30.0}}
    client = fanout.Fanout("crontest", celery=app, redis_url=_memory_url())

    @client.create_function(fn_id="a", trigger=fanout.TriggerCron(cron="0 * * * *"))
    def a(ctx: fanout.ContextSync) -> None:
        return None

    filename = str(tmp_path / "beat-schedule")
    service = Service(app, schedule_filename=filename)
    signals.beat_init.send(sender=service)
    entries = service.scheduler.schedule
    assert set(entries) == {"mine", ENTRY_NAME}
    entry = entries[ENTRY_NAME]
    assert entry.task == "fanout.cron" and isinstance(entry.schedule, BeatSchedule)
    assert entry.schedule.schedules == (CronSchedule.parse("0 * * * *"),)
    assert entry.is_due()[0]  # catch up once at start-up
    assert entry.options["queue"] == client.runtime.router_queue.name
    # a sync writes the shelve back and the entry is read (unpickled) again: still live
    service.scheduler.sync()
    assert service.scheduler.schedule[ENTRY_NAME].schedule == entry.schedule
    assert service.scheduler.schedule[ENTRY_NAME] is not entry
    service.scheduler.close()
    # a restart reads the shelve file back: the user's entry stays, ours is re-added
    again = PersistentScheduler(app=app, schedule_filename=filename)
    assert set(again.schedule) == {"mine"}
    again.close()


def test_beat_init_falls_back_to_a_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    s = Setup(monkeypatch)
    s.add("a", "0 * * * *")
    fired: list[BeatSchedule] = []
    monkeypatch.setattr(CronService, "_fire_loop", lambda self, sched: fired.append(sched))

    class Refusing:
        def update_from_dict(self, entries: dict[str, Any]) -> None:
            raise TypeError("unsupported schedule type")

    class Sender:
        app = s.app
        scheduler = Refusing()

    signals.beat_init.send(sender=Sender())
    assert s.cron._thread is not None
    s.cron._thread.join(5)
    assert len(fired) == 1 and fired[0].schedules == (CronSchedule.parse("0 * * * *"),)


def test_ticks_of_a_paused_function_are_recorded_and_wait_for_resume(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    s = Setup(monkeypatch)
    fn = s.add("paused-minutely", "* * * * *")
    s.client.pause(fn.fn_id)
    now = datetime.now(UTC)
    tick = now.replace(second=0, microsecond=0)
    assert s.cron.process(fn, now) == 1  # the tick is recorded as a run, as always
    rid = tick_id(fn.key, tick)
    assert s.enqueued == [(fn.key, rid, 0)]
    passes.execute_pass(s.rt, fn.key, rid, 0)  # its pass arrives while paused: parked, not run
    run = s.client.get_run(rid)
    assert run is not None and run.status == "queued"
    assert s.client.resume(fn.fn_id) == 1
    assert s.enqueued[-1] == (fn.key, rid, 0)  # handed back to the workers
