"""Event names cannot grow the metrics without bound: with the cap at 3, the first
three distinct names (fleet-wide, whichever process sent them) get a series of their
own and every later name is counted under ``other``, in the sending process and in a
worker's ``send_event`` step alike.  The counts stay exact; only the label folds."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

import fanout
import fanout.metrics
from tests.support import Worker, make_app, run_of, wait_run

MOD = __name__
app, client = make_app(__name__, app_id="evn")
app.conf.fanout_metrics_event_names = 3


@client.create_function(fn_id="echo", trigger=fanout.TriggerEvent(event="evn/known"))
def echo(ctx: fanout.ContextSync) -> str:
    ctx.step.send_event("tell", fanout.Event(name="evn/from-worker", data={}))
    return "ok"


@pytest.fixture(scope="module")
def worker(clean_db: Any, log_dir: Any) -> Iterator[Worker]:
    w = Worker(MOD, name="evn", log_dir=log_dir)
    yield w
    w.stop()


def event_series() -> dict[str, float]:
    body, _ctype = fanout.metrics.generate(client)
    return {s.labels["name"]: s.value
            for family in text_string_to_metric_families(body.decode())
            for s in family.samples if s.name == "fanout_events_received_total"}


def test_names_past_the_cap_count_as_other(worker: Worker) -> None:
    run_id = run_of(client, client.emit("evn/known", {}), "echo")  # name 1
    assert wait_run(client, run_id).status == "completed"           # the worker's name: 2
    for name in ("evn/a", "evn/b", "evn/c", "evn/d"):                # 3, then other
        client.emit(name, {})
        client.emit(name, {"again": True})

    series = event_series()
    assert series == {"evn/known": 1, "evn/from-worker": 1, "evn/a": 2, "other": 6}
    snap = fanout.metrics.snapshot(client)
    assert sum(snap.counters["events"].values()) == 10  # every event still counted


def test_a_bad_cap_names_the_setting() -> None:
    bad, bad_client = make_app(__name__ + ".bad", app_id="evn2")
    bad.conf.fanout_metrics_event_names = "many"
    with pytest.raises(fanout.ConfigError, match="fanout_metrics_event_names"):
        bad_client.emit("evn/x", {})
