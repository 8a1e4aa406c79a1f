"""Prometheus metrics over HTTP: a fan-out on two prefork workers, scraped from the
dashboard's ``/metrics`` and from ``fanout metrics`` before and after. The counters
move, match the runs the store lists, and one scrape sees every worker process."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

import fanout
import fanout.metrics
from tests.support import ROOT, Worker, make_app, redis_for, run_of, wait_for, wait_run

MOD = __name__
app, client = make_app(__name__, app_id="met")
N = 12


@client.create_function(fn_id="loader", trigger=fanout.TriggerEvent(event="met/load"))
def loader(ctx: fanout.ContextSync) -> int:
    n = int(ctx.event.data["n"])
    ctx.step.send_event("fan", [fanout.Event(name="met/user", data={"i": i}) for i in range(n)])
    return n


@client.create_function(fn_id="mailer", trigger=fanout.TriggerEvent(event="met/user"))
def mailer(ctx: fanout.ContextSync) -> dict[str, Any]:
    user = ctx.step.run("fetch", lambda: {"i": ctx.event.data["i"]})
    ctx.step.run("send", lambda: os.getpid())
    return user


def _flaky() -> str:
    if int(redis_for(MOD).incr("side:flaky")) == 1:
        raise ConnectionError("refused once")
    return "ok"


@client.create_function(fn_id="flaky", trigger=fanout.TriggerEvent(event="met/flaky"), retries=3)
def flaky(ctx: fanout.ContextSync) -> str:
    return str(ctx.step.run("call", _flaky))


@client.create_function(fn_id="doomed", trigger=fanout.TriggerEvent(event="met/doomed"), retries=0)
def doomed(ctx: fanout.ContextSync) -> None:
    def charge() -> None:
        raise fanout.NonRetriableError("card declined")

    ctx.step.run("charge", charge)


@client.create_function(fn_id="sleeper", trigger=fanout.TriggerEvent(event="met/sleep"))
def sleeper(ctx: fanout.ContextSync) -> str:
    ctx.step.sleep("nap", "10m")
    return "woke"


Sample = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(url: str) -> Sample:
    with urllib.request.urlopen(url, timeout=10) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain")
        text = resp.read().decode()
    out: Sample = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def val(sample: Sample, metric: str, **labels: str) -> float:
    return sample.get((metric, tuple(sorted(labels.items()))), 0.0)


def settled(base: str, metric: str, want: float, **labels: str) -> Sample | None:
    """A scrape once ``metric`` has reached ``want`` (else None: poll again)."""
    sample = scrape(base + "/metrics")
    return sample if val(sample, metric, **labels) >= want else None


def _serve(args: list[str], pattern: str) -> Iterator[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "fanout._cli", *args, "-A", MOD, "--port", "0"],
                            cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()
        m = re.search(pattern, line)
        assert m, line + (proc.stderr.read() if proc.poll() is not None else "")
        yield m.group(1)
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture(scope="module")
def fleet(clean_db: Any, log_dir: Any) -> Iterator[list[Worker]]:
    """Two prefork workers (two processes each): a fleet of four."""
    workers = [Worker(MOD, name=f"w{i}", log_dir=log_dir) for i in (1, 2)]
    yield workers
    for w in workers:
        w.stop()


@pytest.fixture(scope="module")
def dashboard(fleet: Any) -> Iterator[str]:
    yield from _serve(["dashboard"], r"on (http://127\.0\.0\.1:\d+)/")


@pytest.fixture(scope="module")
def exporter(fleet: Any) -> Iterator[str]:
    yield from _serve(["metrics"], r"on (http://127\.0\.0\.1:\d+)/metrics")


def test_fan_out_moves_the_counters_and_they_match_the_runs(dashboard: str, exporter: str) -> None:
    before = scrape(dashboard + "/metrics")
    lbl = {"app": "met", "fn": "mailer"}
    assert val(before, "fanout_runs_started_total", **lbl) == 0
    assert val(before, "fanout_metrics_counting") == 1

    eid = client.emit("met/load", {"n": N})
    wait_run(client, run_of(client, eid, "loader"))
    wait_for(lambda: len([r for r in client.list_runs(fn_id="mailer") if r.done]) == N,
             timeout=90)
    runs = client.list_runs(fn_id="mailer")
    assert len(runs) == N and all(r.status == "completed" for r in runs)
    assert {r.output["i"] for r in runs} == set(range(N))
    # The runs ran in more than one worker process, and one scrape counts them all.
    worker_pids = {client.get_run(r.run_id).steps[1].output for r in runs}  # type: ignore[union-attr]
    assert len(worker_pids) >= 2, worker_pids

    # The counters are written with the runs; the histograms (whose count is also
    # the step attempts) are sent by each worker process once a second.
    after = scrape(dashboard + "/metrics")
    assert val(after, "fanout_runs_started_total", **lbl) == N
    assert val(after, "fanout_runs_ended_total", status="completed", **lbl) == N
    after = wait_for(lambda: settled(dashboard, "fanout_run_duration_seconds_count", N, **lbl)
                     and settled(dashboard, "fanout_step_attempts_total", 1, app="met",
                                 fn="loader"), timeout=10)
    assert val(after, "fanout_runs_started_total", **lbl) == N
    assert val(after, "fanout_runs_ended_total", status="completed", **lbl) == N
    assert val(after, "fanout_runs_ended_total", status="failed", **lbl) == 0
    assert val(after, "fanout_step_attempts_total", **lbl) == 2 * N
    assert val(after, "fanout_step_failures_total", **lbl) == 0
    assert val(after, "fanout_run_duration_seconds_count", **lbl) == N
    assert val(after, "fanout_run_duration_seconds_bucket", le="+Inf", **lbl) == N
    assert val(after, "fanout_run_duration_seconds_sum", **lbl) > 0
    assert val(after, "fanout_step_duration_seconds_count", **lbl) == 2 * N
    # One pass per step plus the last: every pass's queue delay is observed.
    assert val(after, "fanout_queue_delay_seconds_count", **lbl) >= N
    assert val(after, "fanout_events_received_total", name="met/user") == N
    assert val(after, "fanout_events_received_total", name="met/load") == 1
    loader_lbl = {"app": "met", "fn": "loader"}
    assert val(after, "fanout_runs_ended_total", status="completed", **loader_lbl) == 1
    assert val(after, "fanout_step_attempts_total", **loader_lbl) == 1
    # Buckets are cumulative and end at the count.
    buckets = sorted(((float(dict(k[1])["le"]), v) for k, v in after.items()
                      if k[0] == "fanout_run_duration_seconds_bucket"
                      and dict(k[1]).get("fn") == "mailer"))
    assert [v for _le, v in buckets] == sorted(v for _le, v in buckets)
    assert buckets[-1] == (float("inf"), N)

    # The stand-alone exporter, and the module for your own views, read the same counts.
    alone = scrape(exporter + "/metrics")
    assert val(alone, "fanout_runs_ended_total", status="completed", **lbl) == N
    body, ctype = fanout.metrics.generate(client)
    assert ctype.startswith("text/plain") and b'fanout_runs_started_total{app="met",fn="mailer"}' in body
    assert fanout.metrics.snapshot(app).counter("runs_ended", "met", "mailer", "completed") == N


def test_a_dashboard_with_a_token_asks_for_it(fleet: Any) -> None:
    token = "metrics-token-0123"
    for base in _serve(["dashboard", "--token", token], r"on (http://127\.0\.0\.1:\d+)/"):
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(base + "/metrics", timeout=10)
        assert err.value.code == 401
        req = urllib.request.Request(base + "/metrics",
                                     headers={"Authorization": f"Bearer {token}"})
        with urllib.request.urlopen(req, timeout=10) as resp:
            assert b"fanout_runs_started_total" in resp.read()


def test_failures_retries_and_cancels_are_counted(dashboard: str) -> None:
    before = scrape(dashboard + "/metrics")
    flaky_run = run_of(client, client.emit("met/flaky", {}), "flaky")
    doomed_run = run_of(client, client.emit("met/doomed", {}), "doomed")
    assert wait_run(client, flaky_run).status == "completed"
    assert wait_run(client, doomed_run).status == "failed"
    sleep_run = run_of(client, client.emit("met/sleep", {}), "sleeper")
    wait_for(lambda: getattr(client.get_run(sleep_run), "status", None) == "sleeping")

    fl = {"app": "met", "fn": "flaky"}
    mid = wait_for(lambda: settled(dashboard, "fanout_step_attempts_total", 2, **fl), timeout=10)
    assert val(mid, "fanout_step_attempts_total", **fl) == 2
    assert val(mid, "fanout_step_failures_total", **fl) == 1
    assert val(mid, "fanout_runs_ended_total", status="completed", **fl) == 1
    dm = {"app": "met", "fn": "doomed"}
    assert val(mid, "fanout_runs_ended_total", status="failed", **dm) == 1
    assert val(mid, "fanout_step_failures_total", **dm) == 1
    sl = {"app": "met", "fn": "sleeper"}
    assert val(mid, "fanout_runs_started_total", **sl) == 1
    assert val(mid, "fanout_runs_ended_total", status="cancelled", **sl) == 0
    assert val(mid, "fanout_timers") >= 1  # the sleep's wake-up
    assert val(mid, "fanout_timers") > val(before, "fanout_timers")
    assert val(mid, "fanout_timer_oldest_overdue_seconds") >= 0

    assert client.cancel(sleep_run)
    assert wait_run(client, sleep_run).status == "cancelled"
    # This process cancelled it, and sends its own observation within a second.
    after = wait_for(lambda: settled(dashboard, "fanout_run_duration_seconds_count", 1, **sl),
                     timeout=10)
    assert val(after, "fanout_runs_ended_total", status="cancelled", **sl) == 1
    assert val(after, "fanout_run_duration_seconds_count", **sl) == 1
    # Started = ended + active, for every function.
    for fn in ("loader", "mailer", "flaky", "doomed", "sleeper"):
        lab = {"app": "met", "fn": fn}
        ended = sum(val(after, "fanout_runs_ended_total", status=s, **lab)
                    for s in ("completed", "failed", "cancelled", "skipped"))
        assert ended == val(after, "fanout_runs_started_total", **lab), fn
