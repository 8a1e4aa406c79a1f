"""The engine's versioning rules with an in-memory sink: memoized steps are found by
id after a deploy, order changes warn whatever the version (fail in strict mode),
step ids that change on every pass fail after DIVERGENT_PASSES passes, a memoized id
reused by another tool fails naming both, and the run-hash fields that record
versions and warnings."""

from __future__ import annotations

import json
from typing import Any

import pytest

import fanout
from fanout._core.driver import run_pass
from fanout._core.engine import PassInput
from fanout._core.outcomes import Completed, Continue, Failed, RetryPolicy
from fanout._core.versions import (
    DIVERGENT_PASSES,
    crossed_deploy,
    divergence_fields,
    divergence_of,
    fingerprint,
    pass_fields,
    versions_of,
)
from tests.unit.test_engine import MemorySink


class WarnSink(MemorySink):
    def __init__(self) -> None:
        super().__init__()
        self.warnings: list[dict[str, Any]] = []
        self.fields: dict[str, str] = {}  # the guard's run field, as the runtime keeps it

    def versioning_warning(self, entry: dict[str, Any]) -> None:
        self.warnings.append(entry)

    def pass_divergence(self, divergent: bool, unreached: list[str]) -> None:
        self.fields.update(divergence_fields(self.fields, divergent, unreached))


def drive(handler: Any, sink: WarnSink, **inp: Any) -> list[Any]:
    outcomes: list[Any] = []
    for _ in range(20):
        memo = dict(sink.saved)
        # As the runtime does: a warning kind the run recorded is not recorded again.
        warned = frozenset(w["kind"] for w in sink.warnings) | inp.pop("warned", frozenset())
        diverged, gone = divergence_of(sink.fields)
        pi = PassInput(run_id="r1", fn_id="f", event={"name": "t/e", "data": {}, "id": "e1"},
                       events=[], attempt=0, memo=memo, policy=RetryPolicy(retries=0),
                       warned=warned, diverged=diverged, gone=gone, **inp)
        inp["warned"] = warned
        out = run_pass(handler, pi, sink, is_async=False)
        outcomes.append(out)
        if not isinstance(out, Continue):
            break
    return outcomes


def v1(ctx: fanout.ContextSync) -> list[Any]:
    return [ctx.step.run("a", lambda: "a1"), ctx.step.run("b", lambda: "b1")]


def v2_added(ctx: fanout.ContextSync) -> list[Any]:
    return [ctx.step.run("intro", lambda: "i2"), ctx.step.run("a", lambda: "a2"),
            ctx.step.run("b", lambda: "b2")]


def half_run(handler: Any) -> WarnSink:
    sink = WarnSink()
    out = drive(handler, sink)
    sink.saved.pop("b", None)  # as if the run stopped after its first step
    assert isinstance(out[0], Continue)
    return sink


def test_added_step_runs_and_warns_once_after_a_deploy() -> None:
    sink = half_run(v1)
    out = drive(v2_added, sink, version="v2")
    assert out[-1] == Completed(["i2", "a1", "b2"])
    assert [w["kind"] for w in sink.warnings] == ["order"]
    assert sink.warnings[0]["version"] == "v2" and sink.warnings[0]["step"] == "intro"


def test_same_version_order_change_warns_and_goes_on() -> None:
    # A helper module changed under an unchanged handler: the version is the same.
    sink = half_run(v1)
    out = drive(v2_added, sink, version="v1")
    assert out[-1] == Completed(["i2", "a1", "b2"])
    assert [w["kind"] for w in sink.warnings] == ["order"]


def test_ids_that_change_on_every_pass_fail_after_the_threshold() -> None:
    executed: list[str] = []
    ticks = iter(range(1000))

    def moving(ctx: fanout.ContextSync) -> Any:
        sid = f"stamp-{next(ticks)}"  # as f"stamp-{time.time()}" would
        ctx.step.run(sid, lambda: executed.append(sid))
        return ctx.step.run("b", lambda: "b")

    sink = WarnSink()
    out = drive(moving, sink)
    assert isinstance(out[-1], Failed) and not out[-1].retriable
    err = out[-1].error
    assert err["type"] == "NonDeterminismError"
    assert f"{DIVERGENT_PASSES} passes in a row" in err["message"]
    assert "stamp-" in err["message"] and "time" in err["message"]
    # The first pass, then DIVERGENT_PASSES - 1 divergent ones ran their new step;
    # the pass that would be the DIVERGENT_PASSES-th failed before running its own.
    assert len(executed) == DIVERGENT_PASSES
    assert [w["kind"] for w in sink.warnings] == ["order"]


def test_one_change_then_steady_passes_go_on() -> None:
    sink = WarnSink()

    def v1_long(ctx: fanout.ContextSync) -> list[Any]:
        return [ctx.step.run(s, lambda s=s: s + "1") for s in ("a", "x", "b", "c", "d")]

    out = drive(v1_long, sink)
    for sid in ("b", "c", "d"):
        sink.saved.pop(sid)  # the run stopped after 'x'

    def v2_renamed(ctx: fanout.ContextSync) -> list[Any]:
        # 'x' renamed 'y', and two steps inserted: several passes in a row meet new
        # steps while 'x' stays unreached, but 'x' went unreached once.
        return [ctx.step.run(s, lambda s=s: s + "2")
                for s in ("a", "y", "n1", "n2", "b", "c", "d")]

    out = drive(v2_renamed, sink, version="v2")
    assert out[-1] == Completed(["a1", "y2", "n12", "n22", "b2", "c2", "d2"])
    assert sorted(w["kind"] for w in sink.warnings) == ["order", "unreached"]


def test_divergence_fields() -> None:
    assert divergence_fields({}, False, []) == {}
    one = divergence_fields({}, True, ["a"])
    assert divergence_of(one) == (1, frozenset({"a"}))
    two = {**one, **divergence_fields(one, True, ["b"])}
    assert divergence_of(two) == (2, frozenset({"a", "b"}))
    assert divergence_of({**two, **divergence_fields(two, False, [])}) == (
        0, frozenset({"a", "b"}))
    assert divergence_of({"vdv": ""}) == (0, frozenset())


def test_rolling_deploy_alternating_versions_goes_on() -> None:
    # Passes alternate between version 1 ('b') and version 2 ('b2', its rename), each
    # meeting a new step while the other version's step goes unreached.
    def on(version: int) -> Any:
        def handler(ctx: fanout.ContextSync) -> list[Any]:
            a = ctx.step.run("a", lambda: "a")
            b = ctx.step.run("b" if version == 1 else "b2", lambda: f"b{version}")
            return [a, b] + [ctx.step.run(s, lambda s=s: s) for s in ("c", "d", "e", "f")]
        return handler

    sink = WarnSink()
    outs: list[Any] = []
    for i in range(12):
        diverged, gone = divergence_of(sink.fields)
        pi = PassInput(run_id="r1", fn_id="f", event={"name": "t/e", "data": {}, "id": "e1"},
                       events=[], attempt=0, memo=dict(sink.saved),
                       policy=RetryPolicy(retries=0), diverged=diverged, gone=gone)
        outs.append(run_pass(on(1 + i % 2), pi, sink, is_async=False))
        if not isinstance(outs[-1], Continue):
            break
    assert isinstance(outs[-1], Completed), outs[-1]


def test_strict_mode_fails_after_a_deploy() -> None:
    sink = half_run(v1)
    out = drive(v2_added, sink, strict=True)
    assert isinstance(out[0], Failed) and out[0].error["type"] == "NonDeterminismError"
    assert "strict mode" in out[0].error["message"]


def test_removed_step_is_recorded_as_unreached() -> None:
    sink = WarnSink()
    drive(v1, sink)

    def v2(ctx: fanout.ContextSync) -> Any:
        return ctx.step.run("b", lambda: "b2")

    out = drive(v2, sink)
    assert out == [Completed("b1")]
    assert [(w["kind"], w.get("steps")) for w in sink.warnings] == [("unreached", ["a"])]


def test_reordered_memoized_steps_warn() -> None:
    sink = WarnSink()
    drive(v1, sink)

    def v2(ctx: fanout.ContextSync) -> list[Any]:
        return [ctx.step.run("b", lambda: "b2"), ctx.step.run("a", lambda: "a2")]

    out = drive(v2, sink)
    assert out == [Completed(["b1", "a1"])]
    assert [w["kind"] for w in sink.warnings] == ["order"]


def test_warning_kind_already_recorded_is_not_repeated() -> None:
    sink = half_run(v1)
    drive(v2_added, sink, warned=frozenset({"order"}))
    assert sink.warnings == []


def test_tool_mismatch_names_both_tools() -> None:
    sink = half_run(v1)

    def v2(ctx: fanout.ContextSync) -> None:
        ctx.step.sleep("a", 1)

    out = drive(v2, sink)
    assert isinstance(out[0], Failed) and not out[0].retriable
    msg = out[0].error["message"]
    assert out[0].error["type"] == "NonDeterminismError"
    assert "ctx.step.run" in msg and "ctx.step.sleep" in msg and "'a-sleep'" in msg


def test_patched_answers_from_the_run_and_checks_the_declaration() -> None:
    seen: list[bool] = []

    def fn(ctx: fanout.ContextSync) -> bool:
        seen.append(ctx.patched("new-pricing"))
        return seen[-1]

    for markers, want in ((frozenset({"new-pricing"}), True), (frozenset(), False)):
        out = drive(fn, WarnSink(), markers=markers, patches=frozenset({"new-pricing"}))
        assert out == [Completed(want)]
    out = drive(fn, WarnSink(), patches=frozenset({"other"}))
    assert isinstance(out[0], Failed) and out[0].error["type"] == "ConfigError"
    assert "patches=['other', 'new-pricing']" in out[0].error["message"]


def test_version_fields() -> None:
    created = {"v": "v1"}
    assert pass_fields("v1", created, []) == {}
    moved = {**created, **pass_fields("v2", created, [])}
    assert versions_of(moved) == ["v1", "v2"] and crossed_deploy(moved)
    back = {**moved, **pass_fields("v1", moved, [])}
    assert versions_of(back) == ["v1", "v2", "v1"]
    warned = pass_fields("v1", back, [{"kind": "order", "message": "m"}])
    assert json.loads(warned["vw"])[0]["kind"] == "order"
    again = pass_fields("v1", {**back, **warned}, [{"kind": "order", "message": "m2"}])
    assert "vw" not in again


def test_declaration_checks() -> None:
    from fanout.embedded import embedded_celery

    client = fanout.Fanout("versioning", celery=embedded_celery(),
                           redis_url="memory://versioning-unit")

    with pytest.raises(fanout.ConfigError, match="version must be"):
        client.create_function(fn_id="bad-v", trigger=fanout.TriggerEvent(event="t/x"),
                               version="has space")(v1)
    with pytest.raises(fanout.ConfigError, match="patches must be a list"):
        client.create_function(fn_id="bad-p", trigger=fanout.TriggerEvent(event="t/x"),
                               patches="new-pricing")(v1)  # type: ignore[arg-type]
    assert fingerprint(v1) != fingerprint(v2_added) and fingerprint(v1).startswith("src-")


def test_harness_runs_begin_on_the_code_under_test() -> None:
    from fanout.testing import embedded_celery, run_function

    client = fanout.Fanout("versioning-h", celery=embedded_celery(),
                           redis_url="memory://versioning-harness")

    @client.create_function(fn_id="priced", trigger=fanout.TriggerEvent(event="t/p"),
                            patches=["new-pricing"])
    def priced(ctx: fanout.ContextSync) -> str:
        return "new" if ctx.patched("new-pricing") else "old"

    @client.create_function(fn_id="undeclared", trigger=fanout.TriggerEvent(event="t/u"))
    def undeclared(ctx: fanout.ContextSync) -> bool:
        return ctx.patched("new-pricing")

    assert run_function(priced, {"name": "t/p"}).output == "new"
    bad = run_function(undeclared, {"name": "t/u"})
    assert bad.status == "failed" and bad.error is not None
    assert "patches=['new-pricing']" in bad.error["message"]
