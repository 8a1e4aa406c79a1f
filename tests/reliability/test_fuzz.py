"""Fuzzing the inputs users hand fanout: events, CEL expressions, cron strings.

* Events go through ``fanout.Event`` and ``client.send_sync`` against real Redis
  with a real worker and router: each send raises ``fanout.EventError`` or
  succeeds; afterwards the worker is alive, every accepted ``fuzz/*`` event ran
  its subscriber with the payload that was stored, and a normal event still
  completes.
* CEL: ``fanout.TriggerEvent(event=..., expression=...)`` raises
  ``ExpressionError`` (or ``ConfigError``) or compiles, and a compiled filter
  answers True/False for any event, never raises.
* Cron: ``fanout.TriggerCron(cron=...)`` raises ``ConfigError`` or gives a schedule
  whose next tick is in the future.

Inputs the fuzzer once found mishandled (lone surrogates, 5,000-deep nesting,
huge integers, a ``ts`` that is not a number Redis can sort by) are pinned in
``test_known_bad_event_inputs``: each must raise ``EventError``.
"""

from __future__ import annotations

import datetime as dt
import math
import string
import time
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fanout
from tests.support import Worker, make_app, run_of, wait_run

app, client = make_app(__name__)


@client.create_function(fn_id="echo", trigger=fanout.TriggerEvent(event="fuzz/*"))
def echo(ctx: fanout.ContextSync) -> Any:
    return ctx.event.data


@client.create_function(
    fn_id="filtered",
    trigger=fanout.TriggerEvent(
        event="fuzz/*", expression="has(event.data.x) && event.data.x > 1 || size(event.name) > 40"
    ),
)
def filtered(ctx: fanout.ContextSync) -> Any:
    return ctx.step.run("echo", lambda: ctx.event.name)


@client.create_function(fn_id="plain", trigger=fanout.TriggerEvent(event="plain/ping"))
def plain(ctx: fanout.ContextSync) -> str:
    return str(ctx.step.run("pong", lambda: "pong"))


# -- event strategies ----------------------------------------------------------------

# Strings without lone surrogates (st.text's default): surrogates are pinned in
# test_known_bad_event_inputs.
text = st.text(max_size=40)
json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**80), max_value=2**80),
    st.floats(allow_nan=False, allow_infinity=False), text,
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(text, inner, max_size=4)),
    max_leaves=15,
)
not_json = st.one_of(
    st.just(float("nan")), st.just(float("inf")), st.binary(max_size=5),
    st.sets(st.integers(), max_size=2), st.just(object()), st.just(dt.datetime(2020, 1, 1)),
    st.dictionaries(st.integers(), st.integers(), min_size=1, max_size=2),
)
payloads = st.one_of(
    st.dictionaries(text, json_values, max_size=5),
    st.dictionaries(text, st.one_of(json_values, not_json), min_size=1, max_size=3),
    json_values,  # not always a dict: must be refused
)
names = st.one_of(
    st.builds(lambda s: "fuzz/" + s, st.text(min_size=1, max_size=60)),
    st.builds(lambda s: "fanout/" + s, text),
    st.text(max_size=300),
    st.sampled_from(["", " ", "fuzz/", "fuzz/*", "a" * 257, "fuzz/" + "x" * 251]),
    st.integers(), st.none(),
)
ids = st.one_of(st.none(), st.none(), st.text(max_size=300), st.integers(), st.just(""))
timestamps = st.one_of(st.none(), st.integers(min_value=-(2**62), max_value=2**62),
                       st.floats(allow_nan=False, allow_infinity=False), st.booleans())
extras = st.dictionaries(st.sampled_from(["v", "user", "bogus", "ts"]),
                         st.one_of(json_values, not_json), max_size=2)


good_names = st.builds(lambda s: "fuzz/" + s, st.text(min_size=1, max_size=60))
good_payloads = st.dictionaries(text, json_values, max_size=5)


@st.composite
def events(draw: st.DrawFn) -> dict[str, Any]:
    """Mostly valid events (so many reach the router), each field sometimes hostile."""

    def pick(good: st.SearchStrategy[Any], hostile: st.SearchStrategy[Any]) -> Any:
        return draw(hostile) if draw(st.integers(0, 9)) == 0 else draw(good)

    ev: dict[str, Any] = {"name": pick(good_names, names), "data": pick(good_payloads, payloads)}
    eid = pick(st.none(), ids)
    if eid is not None:
        ev["id"] = eid
    ts = pick(st.none(), timestamps)
    if ts is not None:
        ev["ts"] = ts
    ev.update(pick(st.just({}), extras))
    return ev


def test_event_fuzz_with_a_real_worker(worker: Worker) -> None:
    accepted: list[tuple[str, dict[str, Any], bool]] = []
    outcomes = {"sent": 0, "refused": 0}

    @settings(max_examples=200, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(batch=st.lists(events(), min_size=1, max_size=3), as_model=st.booleans())
    def send(batch: list[dict[str, Any]], as_model: bool) -> None:
        try:
            items: list[Any] = [fanout.Event(**ev) for ev in batch] if as_model else batch
            sent = client.send_sync(items)
        except fanout.EventError as exc:
            assert str(exc), "an EventError must say what is wrong"
            outcomes["refused"] += 1
            return
        outcomes["sent"] += 1
        assert len(sent) == len(batch)
        for eid, ev in zip(sent, batch, strict=True):
            assert isinstance(eid, str) and eid
            if str(ev["name"]).startswith("fuzz/") and len(ev["name"]) > len("fuzz/"):
                accepted.append((eid, ev, "id" not in ev))

    send()
    assert worker.proc.poll() is None, "the worker died"
    assert outcomes["sent"] and outcomes["refused"], outcomes
    store = client.runtime.store
    for eid, ev, fresh in accepted:
        run = wait_run(client, run_of(client, eid, "echo"), timeout=60)
        assert run.status == "completed", (ev, run.error)
        stored = store.load_events([eid])[0]
        assert stored is not None and run.output == stored["data"]
        if fresh:  # a generated id: the payload is the one just sent
            assert run.output == ev["data"]
    marker = client.emit("plain/ping")
    assert wait_run(client, run_of(client, marker, "plain"), timeout=30).output == "pong"
    assert worker.proc.poll() is None
    print(f"\nevent fuzz: {outcomes}, {len(accepted)} fuzz/* runs checked")


def _deep(n: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    cur = out
    for _ in range(n):
        cur["a"] = {}
        cur = cur["a"]
    return out


KNOWN_BAD = [
    pytest.param({"name": "fuzz/\ud800"}, id="surrogate-in-name"),
    pytest.param({"name": "fuzz/x", "data": {"k": "\udfff"}}, id="surrogate-in-data"),
    pytest.param({"name": "fuzz/x", "id": "\ud800"}, id="surrogate-in-id"),
    pytest.param({"name": "fuzz/x", "data": _deep(5000)}, id="nested-5000-deep"),
    pytest.param({"name": "fuzz/x", "data": {"n": 10**5000}}, id="int-over-4300-digits"),
    pytest.param({"name": "fuzz/x", "ts": 10**400}, id="ts-not-a-double"),
]


@pytest.mark.parametrize("ev", KNOWN_BAD)
def test_known_bad_event_inputs(ev: dict[str, Any], clean_db: object) -> None:
    with pytest.raises(fanout.EventError):
        client.send_sync(fanout.Event(**ev))


# -- CEL -------------------------------------------------------------------------------

CEL_TOKENS = [
    "event", ".", "data", "name", "x", "y", "l", "[", "]", "(", ")", "{", "}", ":", ",",
    "0", "1", "2.5", "-", "+", "*", "/", "%", "!", "==", "!=", "<", ">=", "&&", "||", "?",
    "'s'", '"t"', "b'z'", "true", "false", "null", "has(", "size(", "int(", "string(",
    "double(", "type(", "dyn(", ".all(v, ", ".exists(v, ", ".map(v, ", ".filter(v, ", "v",
    "in", "matches(", "'^a+$'", "startsWith(", "timestamp(", "duration(", "'1s'", "1u",
    "9223372036854775807", "18446744073709551615u", "[1, 2]", "{'a': 1}", " ",
]
cel_sources = st.one_of(
    st.lists(st.sampled_from(CEL_TOKENS), min_size=1, max_size=14).map("".join),
    st.lists(st.sampled_from(CEL_TOKENS), min_size=1, max_size=14).map(" ".join),
    st.text(max_size=60),
    st.text(alphabet="()[]{}!-", min_size=100, max_size=3000),
)
cel_events = st.fixed_dictionaries({
    "name": st.text(max_size=50),
    "data": st.dictionaries(st.sampled_from(["x", "y", "l", "s"]), json_values, max_size=4),
    "id": st.text(max_size=10),
    "ts": st.integers(min_value=0, max_value=2**45),
})


@settings(max_examples=400, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(source=cel_sources, samples=st.lists(cel_events, min_size=1, max_size=3))
def test_cel_expressions_fail_clearly_or_evaluate(
    source: str, samples: list[dict[str, Any]]
) -> None:
    try:
        trig = fanout.TriggerEvent(event="fuzz/*", expression=source)
    except (fanout.ExpressionError, fanout.ConfigError) as exc:
        assert str(exc)
        return
    for ev in samples:
        t0 = time.monotonic()
        assert trig.accepts(ev) in (True, False)
        assert time.monotonic() - t0 < 5, f"{source!r} took too long on {ev!r}"


# -- cron ------------------------------------------------------------------------------

CRON_FIELD = st.one_of(
    st.sampled_from(["*", "*/5", "0", "1-5", "59", "60", "0,30", "L", "?", "5#3", "MON-FRI",
                     "jan", "*/0", "-1", "31", "29", "2", "7", "8", "1-0", "H", "", "0/15"]),
    st.text(alphabet=string.digits + "*/,-#?LW", min_size=1, max_size=6),
)
cron_strings = st.one_of(
    st.lists(CRON_FIELD, min_size=5, max_size=5).map(" ".join),
    st.lists(CRON_FIELD, min_size=1, max_size=7).map(" ".join),
    st.builds(lambda tz, rest: f"TZ={tz} {rest}",
              st.sampled_from(["UTC", "Europe/Paris", "America/New_York", "Mars/Base", "", "+01"]),
              st.lists(CRON_FIELD, min_size=5, max_size=5).map(" ".join)),
    st.sampled_from(["@yearly", "@monthly", "@weekly", "@daily", "@hourly", "@reboot", "@every"]),
    st.text(max_size=40),
)


@settings(max_examples=400, deadline=None, database=None)
@given(cron=st.one_of(cron_strings, st.integers(), st.none()),
       after=st.datetimes(min_value=dt.datetime(2000, 1, 1), max_value=dt.datetime(2090, 1, 1),
                          timezones=st.just(dt.timezone.utc)))
def test_cron_strings_fail_clearly_or_schedule(cron: Any, after: dt.datetime) -> None:
    try:
        trig = fanout.TriggerCron(cron=cron)
    except fanout.ConfigError as exc:
        assert str(exc)
        return
    nxt = trig.schedule.next_after(after)
    assert nxt > after
    assert not math.isnan(nxt.timestamp())
