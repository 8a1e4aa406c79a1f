"""Pure unit tests of the replay engine with an in-memory sink (no Redis, no Celery)."""

from __future__ import annotations

import logging
from typing import Any

import pytest

import fanout
from fanout._core.driver import run_pass
from fanout._core.durations import parse_duration
from fanout._core.engine import MAX_STEP_OUTPUT_BYTES, PassInput
from fanout._core.event import Event
from fanout._core.outcomes import (
    BranchDone,
    Completed,
    Continue,
    Failed,
    Parallel,
    RetryPolicy,
    RetryStep,
    Sleep,
    Wait,
)
from fanout._core.records import StepRecord


class MemorySink:
    def __init__(self) -> None:
        self.saved: dict[str, StepRecord] = {}
        self.sent: list[list[str]] = []
        self.waits: list[dict[str, Any]] = []

    def save_step(self, record: StepRecord) -> StepRecord | None:
        cur = self.saved.get(record.id)
        if cur is not None and cur.status in ("completed", "failed"):
            return cur
        self.saved[record.id] = record
        return None

    def send_events(self, step_id: str, events: list[tuple[Event, str]]) -> list[str]:
        ids = [ev.id or "" for ev, _ in events]
        self.sent.append(ids)
        return ids

    def register_wait(self, step_id: str, spec: dict[str, Any]) -> dict[str, Any] | None:
        self.waits.append(spec)
        return None

    def drop_wait(self, step_id: str, event_name: str) -> None:
        pass

    def start_invoke(self, step_id: str, fn_ref: Any, data: dict[str, Any], seq: int) -> str:
        return "child-run"

    def defer_step(self, record: StepRecord) -> None:
        self.save_step(record)

    def flush(self) -> None:
        pass

    def step_failed(self, record: StepRecord, attempts: int) -> None:
        pass


def drive(handler: Any, *, is_async: bool = False, checkpoint: bool = False,
          retries: int = 2, until_done: bool = True, branch: str | None = None,
          sink: MemorySink | None = None) -> tuple[list[Any], MemorySink]:
    """Run passes like the runtime would, feeding saved records back as the memo."""
    sink = sink or MemorySink()
    outcomes: list[Any] = []
    for _ in range(50):
        memo = {k: v for k, v in sink.saved.items()}
        inp = PassInput(run_id="r1", fn_id="f", event={"name": "t/e", "data": {"x": 1}, "id": "e1", "ts": 1},
                        events=[], attempt=0, memo=memo, checkpoint=checkpoint,
                        policy=RetryPolicy(retries=retries, backoff=(0.0,)), branch=branch)
        out = run_pass(handler, inp, sink, is_async=is_async)
        outcomes.append(out)
        if not until_done or not isinstance(out, (Continue, RetryStep)):
            break
    return outcomes, sink


def test_one_step_per_pass_and_last_pass_finishes() -> None:
    calls: list[str] = []

    def fn(ctx: fanout.ContextSync) -> int:
        a = ctx.step.run("a", lambda: calls.append("a") or 1)
        b = ctx.step.run("b", lambda: calls.append("b") or 2)
        return a + b

    outcomes, sink = drive(fn)
    assert outcomes == [Continue("b"), Completed(3)]
    assert calls == ["a", "b"]
    assert [r.seq for r in sink.saved.values()] == [0, 1]


def test_checkpoint_runs_consecutive_steps_in_one_pass() -> None:
    def fn(ctx: fanout.ContextSync) -> list[int]:
        return [ctx.step.run(f"s{i}", lambda i=i: i) for i in range(5)]

    outcomes, _ = drive(fn, checkpoint=True)
    assert outcomes == [Completed([0, 1, 2, 3, 4])]


def test_async_handler_same_semantics() -> None:
    async def fn(ctx: fanout.Context) -> int:
        async def two() -> int:
            return 2

        a = await ctx.step.run("a", lambda: 1)
        b = await ctx.step.run("b", two)
        return a + b

    outcomes, _ = drive(fn, is_async=True)
    assert outcomes == [Continue("b"), Completed(3)]


def test_loop_ids_are_suffixed() -> None:
    def fn(ctx: fanout.ContextSync) -> None:
        for i in range(3):
            ctx.step.run("same", lambda i=i: i)

    _, sink = drive(fn)
    assert list(sink.saved) == ["same", "same:1", "same:2"]


def test_retries_then_step_error() -> None:
    def fn(ctx: fanout.ContextSync) -> str:
        try:
            ctx.step.run("bad", lambda: 1 / 0)
        except fanout.StepError as exc:
            return exc.error_type
        return "no"

    outcomes, sink = drive(fn, retries=2)
    assert [type(o) for o in outcomes] == [RetryStep, RetryStep, Completed]
    assert outcomes[-1] == Completed("ZeroDivisionError")
    assert sink.saved["bad"].attempts == 3 and sink.saved["bad"].status == "failed"


def test_retry_after_delay() -> None:
    def fn(ctx: fanout.ContextSync) -> None:
        ctx.step.run("r", lambda: (_ for _ in ()).throw(fanout.RetryAfterError("later", 42_000)))

    outcomes, _ = drive(fn, until_done=False)
    assert isinstance(outcomes[0], RetryStep) and outcomes[0].delay == 42


def test_changed_steps_run_on_as_the_table_says() -> None:
    # docs/concepts/versioning.md: a step whose id changed is a new step; the old
    # id's saved result stays unused (a warning, not a failure).
    def v1(ctx: fanout.ContextSync) -> None:
        ctx.step.run("old-a", lambda: 1)
        ctx.step.run("old-b", lambda: 2)

    def v2(ctx: fanout.ContextSync) -> int:
        return int(ctx.step.run("new-a", lambda: 3))

    _, sink = drive(v1, until_done=False)
    outcomes, _ = drive(v2, sink=sink)
    assert outcomes[-1] == Completed(3)


def test_output_limit() -> None:
    def fn(ctx: fanout.ContextSync) -> None:
        ctx.step.run("big", lambda: "x" * (MAX_STEP_OUTPUT_BYTES + 1))

    outcomes, sink = drive(fn)
    assert isinstance(outcomes[-1], Failed)
    assert "the limit is 4194304 bytes (4 MiB)" in sink.saved["big"].error["message"]  # type: ignore[index]


def test_logger_is_silent_while_replaying(caplog: pytest.LogCaptureFixture) -> None:
    def fn(ctx: fanout.ContextSync) -> None:
        ctx.logger.info("before a")
        ctx.step.run("a", lambda: 1)
        ctx.logger.info("after a")
        ctx.step.run("b", lambda: 2)

    with caplog.at_level(logging.INFO, logger="fanout.run"):
        drive(fn)
    msgs = [r.getMessage() for r in caplog.records]
    assert sum("before a" in m for m in msgs) == 1  # logged on pass 1 only
    assert sum("after a" in m for m in msgs) == 1  # pass 1 (after executing a); replayed on 2


def test_sleep_and_wait_outcomes() -> None:
    def fn(ctx: fanout.ContextSync) -> None:
        ctx.step.sleep("nap", "1h30m")

    (out,), sink = drive(fn, until_done=False)
    assert isinstance(out, Sleep) and sink.saved["nap"].status == "sleeping"

    def waiter(ctx: fanout.ContextSync) -> None:
        ctx.step.wait_for_event("w", event="t/x", timeout="5m", match="data.id")

    (out,), sink = drive(waiter, until_done=False)
    assert isinstance(out, Wait) and sink.waits[0]["event"] == "t/x"


def test_parallel_plan_and_branch_mode() -> None:
    def fn(ctx: fanout.ContextSync) -> tuple[Any, ...]:
        return tuple(ctx.group.parallel((lambda: ctx.step.run("a", lambda: 1),
                                         lambda: ctx.step.run("b", lambda: 2))))

    (out,), sink = drive(fn, until_done=False)
    assert out == Parallel(("a", "b"), ("a", "b"))
    assert {r.status for r in sink.saved.values()} == {"queued"}
    (done,), sink = drive(fn, until_done=False, branch="b", sink=sink)
    assert done == BranchDone("b") and sink.saved["b"].status == "completed"
    assert sink.saved["a"].status == "queued"
    drive(fn, until_done=False, branch="a", sink=sink)
    (final,), _ = drive(fn, until_done=False, sink=sink)
    assert final == Completed([1, 2])


def test_nested_step_fails_the_run_whatever_the_handler_catches() -> None:
    def fn(ctx: fanout.ContextSync) -> str:
        try:
            ctx.step.run("outer", lambda: ctx.step.run("inner", lambda: 1))
        except Exception:  # noqa: BLE001 - what ported code often does
            return "swallowed"
        return "no"

    outcomes, sink = drive(fn)
    (last,) = outcomes[-1:]
    assert isinstance(last, Failed) and not last.retriable
    assert last.error["type"] == "NestedStepError"
    assert last.error["message"].startswith("Nested steps are not supported")
    assert "outer" not in sink.saved or sink.saved["outer"].status != "completed"


def test_nested_step_caught_inside_the_step_still_fails() -> None:
    def inner(ctx: fanout.ContextSync) -> int:
        try:
            ctx.step.run("inner", lambda: 1)
        except BaseException:  # noqa: BLE001
            pass
        return 1

    def fn(ctx: fanout.ContextSync) -> object:
        return ctx.step.run("outer", inner, ctx)

    outcomes, _ = drive(fn)
    assert isinstance(outcomes[-1], Failed) and outcomes[-1].error["type"] == "NestedStepError"


@pytest.mark.parametrize(("text", "seconds"), [
    (30_000, 30.0), ("30s", 30.0), ("30m", 1800.0), ("2h", 7200.0), ("1h30m", 5400.0),
    ("1d", 86400.0), ("500ms", 0.5), ("1w", 604800.0),
])
def test_durations(text: Any, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("bad", ["", "abc", "30x", "m30", -1, "2y", "400d", True, None, 1.5])
def test_bad_durations(bad: Any) -> None:
    with pytest.raises(fanout.ConfigError):
        parse_duration(bad)
