"""Cron triggers through real `celery beat` processes and a real worker.

The beats and the worker share a test clock (``FANOUT_TEST_CLOCK``) that runs
SPEED times faster, so ``* * * * *`` ticks every 60 / SPEED real seconds. The
tests run in file order and share one worker: two beats at once and a beat
restart; then beat down for several ticks (catch-up); then what the runs saw.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import redis

import fanout
from fanout._celery.cron import CLOCK_ENV, TIMER_EVENT, Clock, iso, tick_event
from fanout._core.schedule import jitter_for, tick_id, tick_key
from fanout._redis.replies import text as _s
from tests.support import ROOT, Worker, make_app, redis_for, wait_for, wait_run

SPEED = 30.0  # one cron minute every 2 real seconds
MINUTE = timedelta(minutes=1)
JITTER = 30.0  # fake seconds: up to 1 real second

app, client = make_app(__name__, app_id="crontests")
app.conf.fanout_cron_deadline = 150  # fake seconds (5 real seconds)
app.conf.result_expires = None
app.conf.beat_schedule = {"user-heartbeat": {"task": "cron-scenario.heartbeat", "schedule": 1.0}}


@app.task(name="cron-scenario.heartbeat")  # type: ignore[untyped-decorator]
def heartbeat() -> None:
    redis_for(__name__).incr("side:heartbeat")


def record(ctx: fanout.ContextSync, fn: str) -> dict[str, Any]:
    redis_for(__name__).hincrby(f"side:{fn}", str(ctx.event.data.get("scheduled_at")), 1)
    return {"name": ctx.event.name, "data": ctx.event.data, "id": ctx.event.id}


@client.create_function(fn_id="minutely", trigger=fanout.TriggerCron(cron="* * * * *"))
def minutely(ctx: fanout.ContextSync) -> dict[str, Any]:
    return record(ctx, "minutely")


@client.create_function(
    fn_id="jittered", trigger=fanout.TriggerCron(cron="* * * * *", jitter=JITTER)
)
def jittered(ctx: fanout.ContextSync) -> dict[str, Any]:
    return record(ctx, "jittered")


class Beat:
    """A `celery beat` subprocess with its own schedule file."""

    def __init__(self, name: str, *, schedule_dir: Path, log_dir: Path, env: dict[str, str]):
        self.name = name
        self.log_path = log_dir / f"cron-beat-{name}-{int(time.time() * 1000)}.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [
                sys.executable, "-m", "celery", "-A", __name__, "beat",
                "--schedule", str(schedule_dir / f"beat-{name}"),
                "--max-interval", "1", "--loglevel", "INFO",
            ],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT), **env},
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"beat {self.name} exited early:\n{self.log()[-4000:]}")
            if "fanout: cron ticks of 2 function(s)" in self.log():
                return
            time.sleep(0.05)
        raise RuntimeError(f"beat {self.name} not ready after {timeout}s:\n{self.log()[-4000:]}")

    def sends(self) -> int:
        return self.log().count("Sending due task fanout.cron (fanout.cron)")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        self._log.close()


class Cluster:
    def __init__(self, log_dir: Path, schedule_dir: Path, clock_value: str) -> None:
        self.log_dir, self.schedule_dir = log_dir, schedule_dir
        self.env = {CLOCK_ENV: clock_value}
        self.clock = Clock.from_env(self.env)
        self.store = client.runtime.store
        self.worker = Worker(__name__, name="cron", log_dir=log_dir, env=self.env)

    def beats(self, *names: str) -> list[Beat]:
        started = [
            Beat(n, schedule_dir=self.schedule_dir, log_dir=self.log_dir, env=self.env)
            for n in names
        ]
        for beat in started:
            beat.wait_ready()
        return started

    def sleep_ticks(self, n: int) -> None:
        time.sleep(n * 60 / SPEED)

    def records(self, fn_id: str) -> dict[datetime, dict[str, str]]:
        """Every run record of ``fn_id`` by scheduled tick (fails on two for one tick)."""
        out: dict[datetime, dict[str, str]] = {}
        for rid in self.store.run_ids(fn_key=f"crontests:{fn_id}", limit=10000):
            fields = self.store.run_fields(rid)
            if not fields or '"fanout/scheduled.timer"' not in fields["event"]:
                continue
            data = fanout.Event.model_validate_json(fields["event"]).data
            tick = datetime.fromisoformat(data["scheduled_at"].replace("Z", "+00:00"))
            assert tick not in out, f"two runs for the tick {tick}"
            assert rid == tick_id(f"crontests:{fn_id}", tick)
            out[tick] = {"run_id": rid, **fields}
        return out

    def cursor(self, fn_key: str) -> dict[str, str]:
        raw = self.store.r.hgetall(f"fanout:cron:{fn_key}")
        return {_s(k): _s(v) for k, v in raw.items()}

    def side(self, fn_id: str) -> dict[str, int]:
        raw = redis_for(__name__).hgetall(f"side:{fn_id}")
        return {_s(k): int(v) for k, v in raw.items()}

    def cron_tasks_done(self) -> int:
        return len(re.findall(r"fanout\.cron\[[^\]]+\] succeeded", self.worker.log()))

    def settle(self) -> None:
        """Wait until every created run of both functions has finished."""

        def done() -> bool:
            return all(
                r["st"] in ("completed", "skipped")
                for fn in ("minutely", "jittered")
                for r in self.records(fn).values()
            )

        wait_for(done, timeout=20)


def assert_contiguous(ticks: list[datetime]) -> None:
    assert ticks == sorted(ticks)
    gaps = [(a, b) for a, b in zip(ticks, ticks[1:], strict=False) if b - a != MINUTE]
    assert not gaps, f"ticks lost or doubled: {gaps}"


@pytest.fixture(scope="module")
def cluster(clean_db: redis.Redis, log_dir: Path, tmp_path_factory: pytest.TempPathFactory
            ) -> Iterator[Cluster]:
    fake0 = datetime(2030, 1, 1, 0, 0, 50, tzinfo=timezone.utc).timestamp()
    c = Cluster(log_dir, tmp_path_factory.mktemp("beat"), f"{time.time()}:{fake0}:{SPEED}")
    yield c
    c.worker.stop()


def test_two_beats_and_a_restart_give_one_run_per_tick(cluster: Cluster) -> None:
    a, b = cluster.beats("a", "b")
    try:
        cluster.sleep_ticks(5)
        a.stop()  # restart one beat: it catches up at start, nothing is doubled
        (a,) = cluster.beats("a")
        cluster.sleep_ticks(3)
    finally:
        a.stop()
        b.stop()
    cluster.settle()
    recs = cluster.records("minutely")
    ticks = sorted(recs)
    assert len(ticks) >= 7
    assert_contiguous(ticks)
    assert all(recs[t]["st"] == "completed" for t in ticks)
    side = cluster.side("minutely")
    assert side == {iso(t): 1 for t in ticks}  # each tick's handler ran exactly once
    assert a.sends() >= 2 and b.sends() >= 6  # both beats really fired the ticks
    assert int(redis_for(__name__).get("side:heartbeat") or 0) >= 6  # the user's entry too

    # A redelivered or stale tick message (old `upto`, or none) starts nothing that
    # already ran. The test clock keeps going (a minute every 2 s), so the message
    # without `upto` may catch up ticks that came due after the beats stopped: only
    # those, each once.
    before = cluster.cron_tasks_done()
    for upto in (ticks[2].isoformat(), None):
        client.runtime.cron.task.apply_async(
            kwargs={"upto": upto}, queue=client.runtime.router_queue.name
        )
    wait_for(lambda: cluster.cron_tasks_done() >= before + 2, timeout=20)
    after = sorted(cluster.records("minutely"))
    assert after[: len(ticks)] == ticks
    assert_contiguous(after)
    assert all(t <= cluster.clock.at(time.time()) for t in after[len(ticks):])
    side_after = cluster.side("minutely")
    assert {k: v for k, v in side_after.items() if k in side} == side


def test_ticks_missed_while_beat_is_down(cluster: Cluster) -> None:
    fn_key = "crontests:minutely"
    cursor = datetime.fromtimestamp(int(cluster.cursor(fn_key)["at"]) / 1000, timezone.utc)
    handled = set(cluster.records("minutely"))
    cluster.sleep_ticks(4)
    started_real = time.time()
    (beat,) = cluster.beats("c")
    ready_real = time.time()
    try:
        resumed = cluster.clock.at(time.time()).replace(second=0, microsecond=0) + MINUTE
        wait_for(lambda: cluster.records("minutely").get(resumed, {}).get("st") == "completed",
                 timeout=20)
    finally:
        beat.stop()
    cluster.settle()
    recs = cluster.records("minutely")
    new = sorted(t for t in recs if t not in handled)
    assert new[0] == min(t for t in recs if t > cursor)
    assert_contiguous(sorted(recs))
    states = [recs[t]["st"] for t in new]
    n_skipped = states.count("skipped")
    # The ticks missed while beat was down: older ones skipped, the latest ran once.
    assert n_skipped >= 3
    assert states == ["skipped"] * n_skipped + ["completed"] * (len(new) - n_skipped)
    catch_up = recs[new[n_skipped]]
    # the latest tick missed before beat's start-up catch-up, run late, after the restart
    assert cluster.clock.real(new[n_skipped]) < ready_real + 0.5
    assert float(catch_up["t0"]) >= started_real
    side = cluster.side("minutely")
    assert all(iso(t) not in side for t in new[:n_skipped])
    assert all(side[iso(t)] == 1 for t in new[n_skipped:])
    listed = client.list_runs(fn_id="minutely", status="skipped", limit=1000)
    assert {r.run_id for r in listed} == {recs[t]["run_id"] for t in new[:n_skipped]}
    for info in listed:
        assert info.error is not None and info.error["type"] == "CronTickSkipped"
        assert 0 < cluster.store.r.ttl(cluster.store.run_key(info.run_id)) <= 7 * 86400
    assert int(cluster.cursor(fn_key)["skipped"]) == n_skipped


def test_runs_get_the_timer_event_and_jitter(cluster: Cluster) -> None:
    fn = client.functions["minutely"]
    recs = cluster.records("minutely")
    done = [t for t, r in recs.items() if r["st"] == "completed"]
    assert len(done) >= 8
    for tick in done:
        run = client.get_run(recs[tick]["run_id"])
        assert run is not None
        expected = tick_event(fn, fn.cron_triggers[0], tick)
        assert run.output == {"name": TIMER_EVENT, "data": expected["data"], "id": expected["id"]}
        assert expected["data"]["scheduled_at"] == iso(tick) and run.event_ids == [expected["id"]]

    # A jittered run created before its start time starts at tick + jitter_for(tick key).
    checked = 0
    for tick, rec in cluster.records("jittered").items():
        if rec["st"] != "completed":
            continue
        delay = jitter_for(tick_key("crontests:jittered", tick), JITTER) / SPEED
        start = cluster.clock.real(tick) + delay
        if float(rec["c"]) > start - 0.05:
            continue  # created after its start time (first deploy, catch-up)
        late = float(rec["t0"]) - start
        assert -0.06 <= late <= 0.75, (tick, delay, late)
        checked += delay >= 0.2
    assert checked >= 3
    # Without jitter a live tick starts right away.
    starts = [float(r["t0"]) - cluster.clock.real(t) for t, r in recs.items() if "t0" in r]
    assert sorted(starts)[len(starts) // 2] < 0.5


def test_invoke_runs_a_cron_function_now(cluster: Cluster) -> None:
    rid = client.invoke(minutely)
    run = wait_run(client, rid, timeout=20)
    assert run.status == "completed"
    assert run.output["name"] == "fanout/function.invoked"
    assert run.output["data"] == {"fn_id": "minutely"}
