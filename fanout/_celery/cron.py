"""Cron triggers through Celery beat.

Beat side
    At ``beat_init`` fanout adds ONE entry, ``fanout.cron``, to the scheduler of
    the beat that runs this app.  Its schedule (:class:`BeatSchedule`) is due
    whenever any cron function's next tick has arrived (and once at start-up, to
    catch up), and otherwise asks beat to look again at that tick (at most
    ``fanout_cron_max_interval`` seconds later).  The message only says "look
    now" (plus beat's clock, ``upto``); it carries no run.  A scheduler that
    cannot store the entry (a database scheduler) gets a small thread instead.

Worker side
    The ``fanout.cron`` task (on the router queue) reads each cron function's
    cursor ``P:cron:<app>:<fn>`` (the newest instant already handled), plans
    the missed ticks with :func:`fanout._core.schedule.plan_catch_up`, creates the
    run set-if-absent under the id ``tick_id(fn_key, tick)``, records the older
    missed ticks as ``skipped`` runs (they expire after the retention), and only
    then advances the cursor, forward only (``cron_cursor.lua``).  Any number of
    beats, a beat restart or a redelivered message therefore never give a tick
    a second run.  A jittered run is created with ``wake`` and its timer armed.

Settings (``app.conf``)
    ``fanout_cron_deadline`` (seconds, default 300): a missed tick runs when it is
    picked up at most this late; otherwise it is recorded as skipped.
    ``fanout_cron_max_interval`` (seconds, default 60): longest beat sleep.

Test-only clock
    ``FANOUT_TEST_CLOCK=REAL0:FAKE0:SPEED`` (epoch seconds, a factor) makes cron
    decisions see ``FAKE0 + (now - REAL0) * SPEED`` in beat and in workers, so an
    every-minute schedule ticks every ``60 / SPEED`` real seconds.  Storage
    (timers, ``wake``, created/started times) stays on real time.  Never set it
    in production; a warning is logged when it is active.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

from celery import Celery, signals
from celery.beat import BeatLazyFunc
from celery.schedules import BaseSchedule

from .._core.event import dumps
from .._core.outage import Outage
from .._core.run_record import ENDED, ERROR, EVENT, ST, WAKE, new_run_fields
from .._core.schedule import (
    MAX_SKIPPED,
    CronSchedule,
    jitter_for,
    plan_catch_up,
    tick_id,
    tick_key,
)
from .._errors import ConfigError
from .._redis.store import Store, StoreError
from .forkgate import gate
from .publisher import Publisher

if TYPE_CHECKING:
    from .._core.function import FunctionDef
    from .._core.triggers import TriggerCron

log = logging.getLogger("fanout")

CRON_TASK = "fanout.cron"
ENTRY_NAME = "fanout.cron"
TIMER_EVENT = "fanout/scheduled.timer"
CLOCK_ENV = "FANOUT_TEST_CLOCK"
DEFAULT_DEADLINE = 300.0
DEFAULT_MAX_INTERVAL = 60.0
MAX_AHEAD = timedelta(seconds=60)
"""How far ahead of a worker's clock a beat's ``upto`` is believed."""

_UTC = timezone.utc
_NEVER = datetime(1970, 1, 1, tzinfo=_UTC)  # entry's last_run_at before its first send


# -- pure parts ----------------------------------------------------------------------


@dataclass(frozen=True)
class Clock:
    """Real time -> the instant cron decisions use; the identity unless testing."""

    real0: float = 0.0
    fake0: float = 0.0
    speed: float = 1.0

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Clock:
        raw = (os.environ if environ is None else environ).get(CLOCK_ENV, "")
        if not raw:
            return cls()
        try:
            real0, fake0, speed = (float(part) for part in raw.split(":"))
        except ValueError:
            raise ConfigError(
                f"{CLOCK_ENV}={raw!r}: expected REAL0:FAKE0:SPEED (a test-only setting)"
            ) from None
        if not speed > 0:
            raise ConfigError(f"{CLOCK_ENV}={raw!r}: SPEED must be > 0")
        return cls(real0, fake0, speed)

    @property
    def is_real(self) -> bool:
        return self == Clock()

    def at(self, real: float) -> datetime:
        return datetime.fromtimestamp(self.fake0 + (real - self.real0) * self.speed, _UTC)

    def now(self) -> datetime:
        return self.at(time.time())

    def real(self, instant: datetime) -> float:
        """The real epoch time at which the clock shows ``instant``."""
        return self.real0 + (instant.timestamp() - self.fake0) / self.speed


@dataclass(frozen=True)
class CronOptions:
    deadline: timedelta
    max_interval: float


def read_options(conf: Mapping[str, Any]) -> CronOptions:
    """``fanout_cron_deadline`` and ``fanout_cron_max_interval`` from a Celery conf."""

    def seconds(key: str, default: float, low: float) -> float:
        value = conf.get(key)
        if value is None:
            return default
        if isinstance(value, timedelta):
            value = value.total_seconds()
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= low:
            raise ConfigError(f"{key} must be a number of seconds >= {low:g}, not {value!r}")
        return float(value)

    return CronOptions(
        deadline=timedelta(seconds=seconds("fanout_cron_deadline", DEFAULT_DEADLINE, 0)),
        max_interval=seconds("fanout_cron_max_interval", DEFAULT_MAX_INTERVAL, 1),
    )


def _earliest(schedules: Sequence[CronSchedule], after: datetime) -> datetime | None:
    ticks = []
    for sched in schedules:
        try:
            ticks.append(sched.next_after(after))
        except ValueError:  # no tick before the end of the calendar
            continue
    return min(ticks, default=None)


def due_state(
    schedules: Sequence[CronSchedule],
    last: datetime | None,
    now: datetime,
    *,
    max_interval: float,
    speed: float = 1.0,
) -> tuple[bool, float]:
    """Celery's ``is_due`` for a set of schedules: (due, real seconds to the next check).

    Due when a tick lies in ``(last, now]``, or when nothing was sent yet
    (``last`` None: the start-up catch-up).
    """
    if last is not None:
        pending = _earliest(schedules, last)
        if pending is None or pending > now:
            wait = max_interval if pending is None else (pending - now).total_seconds() / speed
            return False, min(max_interval, wait)
    upcoming = _earliest(schedules, now)
    wait = max_interval if upcoming is None else (upcoming - now).total_seconds() / speed
    return True, min(max_interval, max(0.0, wait))


def horizon_for(upto: datetime | None, now: datetime) -> datetime:
    """Plan up to beat's clock when it is a little ahead of ours, else up to ours."""
    if upto is None or upto <= now:
        return now
    return min(upto, now + MAX_AHEAD)


@dataclass(frozen=True)
class Decision:
    """Ticks to start (at most one) and to record as skipped, as (tick, trigger index)."""

    run: tuple[datetime, int] | None
    skipped: tuple[tuple[datetime, int], ...]
    truncated: bool = False


def decide(
    schedules: Sequence[CronSchedule],
    cursor: datetime | None,
    horizon: datetime,
    deadline: timedelta,
) -> Decision:
    """:func:`plan_catch_up` over all of a function's triggers as one schedule: only
    the newest missed tick may run; a tick named by two triggers counts once."""
    runs: dict[datetime, int] = {}
    skipped: dict[datetime, int] = {}
    truncated = False
    for index, sched in enumerate(schedules):
        plan = plan_catch_up(sched, cursor, horizon, deadline)
        if plan.run is not None:
            runs.setdefault(plan.run, index)
        for tick in plan.skipped:
            skipped.setdefault(tick, index)
        truncated = truncated or plan.truncated
    run = max(runs, default=None)
    for tick, index in runs.items():
        if tick != run and cursor is not None:  # a first deploy records no skips
            skipped.setdefault(tick, index)
    if run is not None:
        skipped.pop(run, None)
    ordered = sorted(skipped.items())
    if len(ordered) > MAX_SKIPPED:
        ordered, truncated = ordered[-MAX_SKIPPED:], True
    return Decision(
        run=None if run is None else (run, runs[run]), skipped=tuple(ordered), truncated=truncated
    )


def iso(instant: datetime) -> str:
    return instant.astimezone(_UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def tick_event(fn: FunctionDef, trigger: TriggerCron, tick: datetime) -> dict[str, Any]:
    """The ``fanout/scheduled.timer`` event a tick's run receives (deterministic id)."""
    return {
        "name": TIMER_EVENT,
        "data": {"cron": trigger.cron, "scheduled_at": iso(tick), "fn_id": fn.fn_id},
        "id": tick_id(f"event:{fn.key}", tick),
        "ts": int(tick.timestamp() * 1000),
    }


def beat_upto() -> str:
    """Beat's "now", sent with each ``fanout.cron`` message (evaluated at send time)."""
    return Clock.from_env().now().isoformat()


class BeatSchedule(BaseSchedule):  # type: ignore[misc]
    """A Celery schedule that is due when any of ``schedules`` ticks.

    Beat's shelve file re-reads its entries after each sync, so this pickles
    by value (strings and numbers).  At start-up beat drops the stored entry
    (it is not in ``beat_schedule``) and ``beat_init`` adds a fresh one.
    """

    def __init__(
        self,
        schedules: Sequence[CronSchedule] = (),
        *,
        max_interval: float = DEFAULT_MAX_INTERVAL,
        clock: Clock | None = None,
        app: Any = None,
    ) -> None:
        super().__init__(app=app)
        self.schedules = tuple(schedules)
        self.max_interval = max_interval
        self.clock = clock or Clock()

    def now(self) -> datetime:
        return datetime.now(_UTC)  # real time: beat's heap arithmetic

    def is_due(self, last_run_at: datetime | None) -> tuple[bool, float]:
        last: datetime | None = None
        if last_run_at is not None:
            if last_run_at.tzinfo is None:
                last_run_at = last_run_at.replace(tzinfo=_UTC)
            if last_run_at > _NEVER:
                last = self.clock.at(last_run_at.timestamp())
        return due_state(
            self.schedules,
            last,
            self.clock.now(),
            max_interval=self.max_interval,
            speed=self.clock.speed,
        )

    def remaining_estimate(self, last_run_at: datetime | None) -> timedelta:
        return timedelta(seconds=self.is_due(last_run_at)[1])

    def __reduce__(self) -> tuple[Any, ...]:
        clock = (self.clock.real0, self.clock.fake0, self.clock.speed)
        return (_revive, (tuple(str(s) for s in self.schedules), self.max_interval, clock))

    def _key(self) -> tuple[Any, ...]:
        return (self.schedules, self.max_interval, self.clock)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, BeatSchedule) and other._key() == self._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        return f"<fanout cron: {len(self.schedules)} schedule(s)>"


def _revive(
    crons: tuple[str, ...], max_interval: float, clock: tuple[float, float, float]
) -> BeatSchedule:
    return BeatSchedule(
        [CronSchedule.parse(c) for c in crons], max_interval=max_interval, clock=Clock(*clock)
    )


# Beat pickles the schedule by these names; they stay at their historical path.
BeatSchedule.__module__ = "fanout._cron"
_revive.__module__ = "fanout._cron"


# -- the Celery / Redis side ----------------------------------------------------------


class CronService:
    """The work of the ``fanout.cron`` task (registered in ``tasks.py``) and the beat
    hook, for the functions declared on one app."""

    def __init__(self, app: Celery, functions: Mapping[str, FunctionDef],
                 store: Callable[[], Store], publisher: Publisher) -> None:
        self.app = app
        self._functions = functions
        self._store = store
        self.publisher = publisher
        self.clock = Clock.from_env()
        if not self.clock.is_real:
            log.warning("fanout: %s is set: cron uses a TEST clock %s", CLOCK_ENV, self.clock)
        self._thread: threading.Thread | None = None
        # One dispatch_uid per service (Celery before 5.7 keys bound methods by function).
        signals.beat_init.connect(self._on_beat_init, weak=False,
                                  dispatch_uid=f"fanout.cron.{id(self)}")

    @property
    def task(self) -> Any:
        """The ``fanout.cron`` task on this app."""
        return self.app.tasks[CRON_TASK]

    @property
    def options(self) -> CronOptions:
        return read_options(self.app.conf)

    def functions(self) -> list[FunctionDef]:
        return [fn for fn in self._functions.values() if fn.cron_triggers]

    def cursor_key(self, fn_key: str) -> str:
        return self._store().cron_key(fn_key)

    # -- worker ----------------------------------------------------------------------

    def run(self, upto: str | None) -> int:
        """Handle one ``fanout.cron`` message: returns the number of runs started."""
        beat_now: datetime | None = None
        if upto:
            try:
                beat_now = datetime.fromisoformat(upto)
                if beat_now.tzinfo is None:
                    beat_now = beat_now.replace(tzinfo=_UTC)
            except ValueError:
                log.warning("fanout: ignoring a malformed cron 'upto' %r", upto)
        horizon = horizon_for(beat_now, self.clock.now())
        started = 0
        for fn in self.functions():
            try:
                started += self.process(fn, horizon)
            except StoreError:
                raise  # the task retries; everything here is idempotent
            except Exception:
                log.exception("fanout: cron tick of %s failed", fn.key)
        return started

    def process(
        self, fn: FunctionDef, horizon: datetime, *, deadline: timedelta | None = None
    ) -> int:
        """Start ``fn``'s due tick and record its skipped ones, up to ``horizon``."""
        store = self._store()
        at = store.cron_cursor(fn.key)
        cursor = None if at is None else datetime.fromtimestamp(at / 1000, _UTC)
        triggers = fn.cron_triggers
        decision = decide(
            [t.schedule for t in triggers],
            cursor,
            horizon,
            self.options.deadline if deadline is None else deadline,
        )
        now = time.time()
        records: list[tuple[str, str, dict[str, Any]]] = []
        wake: float | None = None
        event: dict[str, Any] = {}
        if decision.run is not None:
            tick, index = decision.run
            rid = tick_id(fn.key, tick)
            if store.run_fields(tick_key(fn.key, tick)):
                # An older beat created this tick's run under its earlier id spelling.
                decision = replace(decision, run=None)
        if decision.run is not None:
            tick, index = decision.run
            delay = jitter_for(tick_key(fn.key, tick), triggers[index].jitter_seconds)
            due = self.clock.real(tick + timedelta(seconds=delay))
            wake = due if due > now + 0.05 else None
            event = tick_event(fn, triggers[index], tick)
            fields = self._fields(fn, event, now)
            if wake is not None:
                fields[WAKE] = repr(wake)
            records.append((rid, fn.key, fields))
        latest = decision.skipped[-1][0] if decision.skipped else None
        for tick, index in decision.skipped:
            fields = self._fields(fn, tick_event(fn, triggers[index], tick), now)
            superseded = decision.run is not None or tick != latest
            fields.update({
                ST: "skipped",
                ENDED: repr(now),
                ERROR: dumps(
                    {
                        "type": "CronTickSkipped",
                        "message": f"the tick scheduled at {iso(tick)} was missed and "
                        + (
                            "a later tick superseded it"
                            if superseded
                            else "was picked up more than fanout_cron_deadline late"
                        ),
                    }
                ),
            })
            records.append((tick_id(fn.key, tick), fn.key, fields))
        results = store.create_runs(records)
        started = 0
        if decision.run is not None:
            rid, created, needs_enqueue = results[0]
            if created:  # also readable by event id, like any event
                text = records[0][2][EVENT]
                store.store_event_text(event["id"], text)
            if needs_enqueue:
                if wake is not None:
                    store.arm(rid, wake)
                else:
                    self.publisher.enqueue(fn.key, rid, 0)
                started = 1
        created_skips = [rid for rid, created, _e in results[1 if decision.run else 0 :] if created]
        run_ms = "" if decision.run is None else str(int(decision.run[0].timestamp() * 1000))
        store.advance_cron(fn.key, int(horizon.timestamp() * 1000), created_skips, run_ms)
        if created_skips:
            log.warning(
                "fanout: cron %s: %d missed tick(s) recorded as skipped (%s .. %s)%s",
                fn.key,
                len(created_skips),
                iso(decision.skipped[0][0]),
                iso(decision.skipped[-1][0]),
                f"; older ones beyond the last {MAX_SKIPPED} were not recorded"
                if decision.truncated
                else "",
            )
        return started

    @staticmethod
    def _fields(fn: FunctionDef, event: Mapping[str, Any], now: float) -> dict[str, Any]:
        return new_run_fields(fn.fn_id, fn.app_id, fn.key, event, event_ids=[event["id"]],
                              created=repr(now), creation=fn.creation_fields())

    # -- beat ------------------------------------------------------------------------

    def beat_schedule(self) -> BeatSchedule:
        return BeatSchedule(
            [t.schedule for fn in self.functions() for t in fn.cron_triggers],
            max_interval=self.options.max_interval,
            clock=self.clock,
            app=self.app,
        )

    def send(self) -> None:
        """Publish one ``fanout.cron`` message (what beat does at each tick)."""
        self.task.apply_async(
            kwargs={"upto": beat_upto()}, queue=self.publisher.router_queue.name, retry=True
        )

    def _on_beat_init(self, sender: Any = None, **_: Any) -> None:
        if getattr(sender, "app", None) is not self.app:
            return
        fns = self.functions()
        if not fns:
            log.info("fanout: no cron functions in this app; nothing added to beat")
            return
        schedule = self.beat_schedule()
        entry = {
            "task": CRON_TASK,
            "schedule": schedule,
            "kwargs": {"upto": BeatLazyFunc(beat_upto)},
            "options": {"queue": self.publisher.router_queue.name},
            "last_run_at": _NEVER,
        }
        how = f"beat entry {ENTRY_NAME!r}"
        try:
            sender.scheduler.update_from_dict({ENTRY_NAME: entry})
        except Exception:
            log.warning(
                "fanout: the beat scheduler %s cannot hold fanout's cron entry; "
                "sending cron ticks from a thread of this beat instead",
                type(sender.scheduler).__name__,
                exc_info=True,
            )
            self._thread = threading.Thread(
                target=self._fire_loop, args=(schedule,), name="fanout-cron", daemon=True
            )
            self._thread.start()
            how = "thread 'fanout-cron'"
        log.info(
            "fanout: cron ticks of %d function(s) sent by %s: %s",
            len(fns),
            how,
            ", ".join(fn.key for fn in fns),
        )

    def _fire_loop(self, schedule: BeatSchedule) -> None:
        last = _NEVER
        outage = Outage("sending cron ticks to the broker", base=0.5)
        while True:
            try:
                with gate.section():
                    due, wait = schedule.is_due(last)
                    if due:
                        self.send()
                        last = schedule.now()
            except Exception as exc:  # noqa: BLE001 - keep ticking through broker outages
                wait = outage.failed(exc)
            else:
                outage.ok()
            time.sleep(max(0.05, wait))
