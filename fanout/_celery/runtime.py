"""The Celery adapter: fanout's tasks and what a pass does around the engine.

One :class:`Runtime` per Celery app, shared by every :class:`fanout.Fanout`
client created on it.  It registers:

* ``fanout.step(fn, run_id, seq, branch)``: one pass of a run (replay, execute
  the next step), or one parallel branch;
* ``fanout.route(event_ids, ...)``: the router (``_routing.py``), bound to the
  ``fanout.events`` exchange;
* ``fanout.cron``: cron ticks from Celery beat (``_cron.py``).

Leases and the timer thread live in ``_timers.py``.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from celery import Celery, signals
from kombu import Exchange, Queue  # type: ignore[attr-defined]

from .._core.engine import (
    BranchDone,
    Completed,
    Continue,
    Failed,
    LeaseLost,
    Outcome,
    Parallel,
    PassInput,
    RetryStep,
    Sleep,
    Wait,
    error_info,
    memo_from_fields,
    run_pass,
)
from .._core.event import Event, dumps
from .._core.function import FunctionDef
from .._core.ids import new_token
from .._core.records import StepRecord
from .._core.run_record import new_run_fields, step_field
from .._core.triggers import SubscriberIndex
from .._errors import ConfigError, InvokeError, PublishError
from .._redis.history import History
from .._redis.store import Store, StoreError, connect
from .flow_runtime import FlowRuntime
from .publisher import Publisher
from .runlog import attempt_failed, run_ended, run_started, take_failed
from .sink import PassSink
from .timers import Leases, TimerThread

log = logging.getLogger("fanout")

EVENTS_EXCHANGE = "fanout.events"
ROUTER_QUEUE = "fanout.events"
MAX_TAKEOVERS = 5
FIRST_PASS_PRIORITY = 3  # the Redis transport's second priority step (0, 3, 6, 9)

_runtimes: dict[int, Runtime] = {}
_runtimes_lock = threading.Lock()


def check_serializers(app: Celery) -> None:
    """Refuse an app that would move fanout's messages with pickle."""
    conf = app.conf
    bad = []
    for key in ("task_serializer", "result_serializer"):
        if str(conf.get(key) or "json").lower() in ("pickle", "yaml"):
            bad.append(f"{key}={conf.get(key)!r}")
    accept = conf.get("accept_content") or ["json"]
    if any(str(a).lower() in ("pickle", "application/x-python-serialize", "yaml") for a in accept):
        bad.append(f"accept_content={list(accept)!r}")
    if bad:
        raise ConfigError(
            "fanout requires JSON-only serialization, but the Celery app has "
            + ", ".join(bad)
            + ". Set task_serializer='json', result_serializer='json' and "
            "accept_content=['json'] (or app.config_from_object('fanout.celeryconfig'))."
        )


def delivery_warnings(app: Celery) -> list[str]:
    """What in the app's delivery settings weakens fanout's at-least-once guarantee."""
    conf = app.conf
    found = []
    try:
        prefetch = int(conf.get("worker_prefetch_multiplier") or 0)
    except (TypeError, ValueError):
        prefetch = 0
    if prefetch > 1:
        found.append(
            f"worker_prefetch_multiplier={prefetch}: a killed worker's prefetched passes wait "
            "for fanout's watchdog; set worker_prefetch_multiplier = 1"
        )
    if not conf.get("task_acks_late"):
        found.append(
            "task_acks_late is off: a pass whose worker dies is not delivered again and waits "
            "for fanout's watchdog; set task_acks_late = True"
        )
    return found


class Runtime:
    """State and tasks shared by all clients of one Celery app."""

    def __init__(self, app: Celery, redis_url: str, *, recovery_timeout: float, retention: float):
        self.app = app
        self.redis_url = redis_url
        self.functions: dict[str, FunctionDef] = {}
        self.index = SubscriberIndex()
        self.recovery_timeout = float(recovery_timeout)
        self.lease_s = max(1.0, self.recovery_timeout / 2)
        self.retention = retention
        self._store: Store | None = None
        self._store_pid = 0
        self.leases = Leases(self)
        self.timers = TimerThread(self)
        self.flow = FlowRuntime(self)
        self.publisher = Publisher(app)
        self.exchange = Exchange(EVENTS_EXCHANGE, type="direct", durable=True)  # type: ignore[no-untyped-call]
        self.router_queue = Queue(  # type: ignore[no-untyped-call]
            ROUTER_QUEUE, exchange=self.exchange, routing_key="fanout.route", durable=True
        )
        self._register_tasks()
        # Trim history indexes past the retention about once an hour in each worker.
        self.add_periodic(
            "fanout-history-prune", lambda: History(self.store).prune(), 3600.0, at_start=False
        )
        # A dispatch_uid per runtime: Celery before 5.7 keys a bound method by its function
        # alone, so a second runtime in the process (a second app) would not be connected.
        uid = f"fanout.runtime.{id(self)}"
        signals.worker_init.connect(self._on_worker_init, weak=False, dispatch_uid=f"{uid}.init")
        signals.worker_ready.connect(self._on_worker_ready, weak=False, dispatch_uid=f"{uid}.ready")
        signals.worker_shutting_down.connect(self._on_worker_stop, weak=False,
                                             dispatch_uid=f"{uid}.stop")
        from .cron import install_cron

        self.cron = install_cron(self)

    # -- plumbing ------------------------------------------------------------------

    @property
    def store(self) -> Store:
        """The store, reconnected after a fork (prefork children get their own sockets)."""
        pid = os.getpid()
        if self._store is None or self._store_pid != pid:
            self._store = Store(
                connect(self.redis_url), retention=self.retention,
                watchdog=5 * self.recovery_timeout,
            )
            self._store_pid = pid
        return self._store

    @staticmethod
    def parse_json(text: str) -> Any:
        import json

        return json.loads(text)

    def add_function(self, fn: FunctionDef) -> None:
        if fn.key in self.functions:
            raise ConfigError(f"function {fn.fn_id!r} is already declared in app {fn.app_id!r}")
        self.functions[fn.key] = fn
        for trig in fn.event_triggers:
            self.index.add(fn, trig)
        self.flow.add_function(fn)

    def resolve_function(self, ref: Any, app_id: str) -> FunctionDef:
        """A FunctionDef from a decorated handler, a FunctionDef, or an id string."""
        fn = getattr(ref, "fanout_function", ref)
        if isinstance(fn, FunctionDef) and fn.key in self.functions:
            return fn
        if isinstance(ref, str):
            found = self.functions.get(ref) or self.functions.get(f"{app_id}:{ref}")
            if found is not None:
                return found
        raise InvokeError(f"cannot invoke {ref!r}: it is not a function declared on this app")

    def add_periodic(
        self, name: str, fn: Callable[[], Any], interval: float, *, at_start: bool = True
    ) -> None:
        """Run ``fn()`` about every ``interval`` seconds in each worker's timer thread
        (for example the Django outbox sweeper). Errors are logged, never raised."""
        self.timers.add_periodic(name, fn, interval, at_start=at_start)

    def start_scanner(self) -> None:
        self.timers.start()

    def stop_scanner(self) -> None:
        self.timers.stop()

    def _register_tasks(self) -> None:
        app, rt = self.app, self
        opts: dict[str, Any] = dict(
            acks_late=True, reject_on_worker_lost=True, ignore_result=True, serializer="json",
            shared=False,
        )

        # While Redis is unreachable a message is put back (a retry a few seconds
        # later) rather than acknowledged as failed; the run's timer in Redis is the
        # second line of defence.
        @app.task(name="fanout.step", bind=True, **opts)  # type: ignore[untyped-decorator]
        def step(
            task: Any, fn: str, run_id: str, seq: int | None = None, branch: str | None = None
        ) -> None:
            take_failed()
            try:
                if branch is None:
                    rt.execute_pass(fn, run_id, seq)
                else:
                    rt.execute_branch(fn, run_id, branch)
            except StoreError as exc:
                log.warning("fanout: Redis error in run %s, retrying the message: %s", run_id, exc)
                raise task.retry(exc=exc, countdown=2, max_retries=None) from None
            failed = take_failed()
            # The run's end is recorded: report the task as failed, so Flower, `celery
            # events` and task_failure hooks see it. Celery acks a task that raised.
            if failed is not None and rt.app.conf.get("fanout_task_failure", True):
                raise failed

        @app.task(name="fanout.route", bind=True, **opts)  # type: ignore[untyped-decorator]
        def route(
            task: Any,
            event_ids: list[str],
            parent_run_id: str | None = None,
            target: str | None = None,
            batch_id: str | None = None,
            invoker: dict[str, Any] | None = None,
        ) -> None:
            from .routing import route as do_route

            try:
                do_route(rt, event_ids, parent_run_id=parent_run_id, target=target,
                         invoker=invoker, batch_id=batch_id)
            except StoreError as exc:
                log.warning("fanout: Redis error while routing, retrying the message: %s", exc)
                raise task.retry(exc=exc, countdown=2, max_retries=None) from None

        queues = app.conf.task_queues
        if queues is None:
            default = Queue(app.conf.task_default_queue)  # type: ignore[no-untyped-call]
            app.conf.task_queues = [default, self.router_queue]
        elif not any(q.name == ROUTER_QUEUE for q in queues):
            app.conf.task_queues = [*queues, self.router_queue]

    def _mine(self, sender: Any) -> bool:
        app = getattr(sender, "app", None)
        return app is None or app is self.app

    def _on_worker_init(self, sender: Any = None, **_: Any) -> None:
        if self._mine(sender):
            try:
                check_serializers(self.app)
            except ConfigError as exc:
                # Celery logs and ignores exceptions raised by signal handlers; a
                # worker that would move fanout's messages with pickle must not start.
                log.critical("fanout: %s", exc)
                raise SystemExit(f"fanout: {exc}") from None
            for warning in delivery_warnings(self.app):
                log.warning("fanout: %s (or use app.config_from_object('fanout.celeryconfig'))",
                            warning)

    def _on_worker_ready(self, sender: Any = None, **_: Any) -> None:
        if self._mine(sender):
            self.timers.start()

    def _on_worker_stop(self, **_: Any) -> None:
        self.timers.stop()

    # -- publishing ------------------------------------------------------------------

    def publish(
        self,
        events: Sequence[tuple[Event, str]],
        *,
        parent_run_id: str | None = None,
        target: str | None = None,
        invoker: dict[str, Any] | None = None,
    ) -> list[str]:
        """Store the events and publish one router message; never waits for a worker."""
        ids = [ev.id or "" for ev, _ in events]
        batch = new_token()
        payload = dumps({"ids": ids, "parent": parent_run_id, "target": target, "invoker": invoker})
        try:
            self.store.store_events(
                [(ev.id or "", text, ev.ts or 0, ev.name) for ev, text in events],
                route=(batch, payload),
            )
        except StoreError as exc:
            raise PublishError(f"could not store {len(ids)} event(s) in Redis: {exc}") from exc
        self.publish_route(
            ids, parent_run_id=parent_run_id, target=target, invoker=invoker, batch_id=batch
        )
        return ids

    def publish_route(
        self,
        ids: list[str],
        *,
        parent_run_id: str | None = None,
        target: str | None = None,
        invoker: dict[str, Any] | None = None,
        batch_id: str | None = None,
        producer: Any = None,
    ) -> None:
        shown = f"{len(ids)} event(s): {ids[0]}" + (f" .. {ids[-1]}" if len(ids) > 1 else "")
        if parent_run_id:
            shown += f" from run {parent_run_id}"
        if target:
            shown += f" for {target}"
        try:
            self.publisher.send(
                "fanout.route", (ids,), argsrepr=shown,
                kwargs={"parent_run_id": parent_run_id, "target": target, "batch_id": batch_id,
                        "invoker": invoker},
                queue=self.router_queue, producer=producer,
                retry_policy={"max_retries": 3, "interval_start": 0.1, "interval_step": 0.3},
            )
        except Exception as exc:
            raise PublishError(
                f"could not publish {len(ids)} event id(s) to the broker: {exc}"
            ) from exc

    def enqueue(
        self, fn_key: str, run_id: str, seq: int | None, *, branch: str | None = None,
        producer: Any = None, queue: Any = None,
    ) -> None:
        """Publish one ``fanout.step`` message (ids only). Flower and worker logs show
        it as ``fn=<app:fn> run=<id> pass=<seq>`` (``branch=<step>`` for a branch).
        ``queue`` overrides the task's route (the timer thread's wake-ups)."""
        priority = None
        if branch is None:
            args: tuple[Any, ...] = (fn_key, run_id, seq)
            shown = f"fn={fn_key} run={run_id} pass={'next' if seq is None else seq}"
            if seq == 0:
                priority = self.first_pass_priority
        else:
            args = (fn_key, run_id, None, branch)
            shown = f"fn={fn_key} run={run_id} branch={branch}"
        self.publisher.send("fanout.step", args, argsrepr=shown, producer=producer, queue=queue,
                            priority=priority)

    @functools.cached_property
    def first_pass_priority(self) -> int | None:
        """The message priority of a run's first pass: on a Redis broker, below the
        default (Redis serves 0 first), so passes of runs already under way, and
        wake-ups, do not wait behind the first passes of a large send. The Celery
        setting ``fanout_first_pass_priority`` changes it; None turns it off. Other
        brokers get no priority (a RabbitMQ queue has none unless declared with
        ``x-max-priority``, where higher means sooner)."""
        conf = self.app.conf
        if "fanout_first_pass_priority" in conf:
            value = conf.get("fanout_first_pass_priority")
            if value is not None and not (isinstance(value, int) and 0 <= value <= 9):
                raise ConfigError(
                    f"fanout_first_pass_priority must be None or an integer from 0 to 9, "
                    f"not {value!r}"
                )
            return value
        conn = self.app.connection_for_write()
        try:
            driver = conn.transport.driver_type
        finally:
            conn.release()
        return FIRST_PASS_PRIORITY if driver == "redis" else None

    # -- one pass ----------------------------------------------------------------------

    def _function_for(self, fn_key: str, run_id: str) -> FunctionDef | None:
        fn = self.functions.get(fn_key)
        if fn is None:
            log.error(
                "fanout: run %s belongs to function %s, which this worker does not declare; "
                "its timer will offer it again",
                run_id,
                fn_key,
            )
            self.store.arm(run_id, time.time() + self.recovery_timeout)
        return fn

    def _input(self, fn: FunctionDef, run_id: str, fields: dict[str, str],
               branch: str | None = None) -> PassInput:
        memo = memo_from_fields(fields)
        event = self.parse_json(fields.get("event", "{}"))
        events = self.parse_json(fields["events"]) if "events" in fields else [event]
        attempt = int(fields.get("att", "0"))
        retrying = [r.attempts for r in memo.values() if r.status == "retrying"]
        return PassInput(
            run_id=run_id, fn_id=fn.fn_id, event=event, events=events,
            attempt=max([attempt, *retrying]), memo=memo, checkpoint=fn.checkpoint,
            policy=fn.policy, branch=branch,
            queued_at=float(fields.get("qa") or fields.get("c") or 0) or None,
            state_bytes=sum(len(k) + len(v) for k, v in fields.items()),
        )

    def _run(self, fn: FunctionDef, inp: PassInput, sink: PassSink) -> Outcome:
        try:
            return run_pass(fn.handler, inp, sink, is_async=fn.is_async)
        except Exception as exc:  # an engine fault: retry the pass, never lose the run
            log.exception("fanout: internal error in a pass of run %s", inp.run_id)
            return Failed(error_info(exc), True)

    def execute_pass(self, fn_key: str, run_id: str, seq: int | None) -> None:
        fn = self._function_for(fn_key, run_id)
        if fn is None:
            return
        store = self.store
        token = new_token()
        lease_ms = int((time.time() + self.lease_s) * 1000)
        head, fields = store.begin_pass(run_id, token, lease_ms, seq)
        if head == "cancel":  # cancelled while a worker that has since died held it
            self.finish(run_id, "", "cancelled", None, self._cancel_reason(run_id))
            return
        if head != "ok":
            return
        self.leases.hold(run_id, "lease", token, lease_ms)
        hold = None
        try:
            if int(fields.get("takeovers", "0")) > MAX_TAKEOVERS:
                self.finish(run_id, token, "failed", None, {
                    "type": "WorkerLost",
                    "message": f"the worker running this run died {MAX_TAKEOVERS + 1} times in "
                    "a row (a step that kills its process?); the run was stopped",
                }, fields)
                return
            if fn.flow.at_pass:  # timeouts, batch/debounce close, concurrency slots
                go, hold = self.flow.before_pass(fn, run_id, token, fields, lease_ms)
                if not go:
                    return
            inp = self._input(fn, run_id, fields)
            if inp.attempt == 0 and not inp.memo and fields.get("takeovers", "0") == "0":
                run_started(fn.key, run_id)
            sink = PassSink(self, fn, run_id, token, fields)
            outcome = self._run(fn, inp, sink)
            self.flow.release(hold)  # the step is over: free the slot before the next pass
            self._conclude(fn, run_id, token, outcome, fields, sink.take_deferred())
        finally:
            self.flow.release(hold)
            self.leases.release(run_id, "lease")

    def _conclude(
        self, fn: FunctionDef, run_id: str, token: str, outcome: Outcome,
        fields: dict[str, str], steps: dict[str, str],
    ) -> None:
        """End the pass. ``steps`` are the step records the pass deferred: the same
        script that releases the lease or finishes the run writes them."""
        store = self.store
        attempt = int(fields.get("att", "0"))
        end: dict[str, Any] = {**steps, "takeovers": 0, "qa": repr(time.time())}
        if isinstance(outcome, Completed):
            self.finish(run_id, token, "completed", outcome.output, None, fields, steps)
            return
        if isinstance(outcome, LeaseLost):
            if outcome.cancelled:
                self.finish(run_id, token, "cancelled", None, self._cancel_reason(run_id),
                            fields, steps)
            else:
                log.warning("fanout: run %s was taken over by another worker mid-pass", run_id)
            return
        if isinstance(outcome, Failed):
            if not (outcome.retriable and attempt < fn.retries):
                self.finish(run_id, token, "failed", None, outcome.error, fields, steps)
                return
            delay = outcome.retry_after if outcome.retry_after is not None else fn.policy.delay(attempt + 1)
            end.update(att=attempt + 1, err=dumps(outcome.error))
            wake = self.flow.clamp_wake(fn, fields, time.time() + delay)
            attempt_failed(fn.key, run_id, None, attempt + 1, fn.retries + 1, outcome.error, wake)
            end["qa"] = repr(wake)
            seq, _r = store.end_pass(run_id, token, "running", fields=end, wake=wake)
        elif isinstance(outcome, RetryStep):
            wake = self.flow.clamp_wake(fn, fields, time.time() + outcome.delay)
            end["qa"] = repr(wake)
            seq, _r = store.end_pass(run_id, token, "running", fields=end, wake=wake)
        elif isinstance(outcome, Sleep):
            wake = self.flow.clamp_wake(fn, fields, outcome.until)
            end["qa"] = repr(wake)
            seq, _r = store.end_pass(run_id, token, "sleeping", fields=end, wake=wake)
        elif isinstance(outcome, Wait):
            until = self.flow.clamp_wake(fn, fields, outcome.until)
            seq, resolved = store.end_pass(run_id, token, "waiting", wake=until,
                                           awaiting=outcome.step_id, fields=end)
            if resolved and seq is not None and seq >= 0:
                self.enqueue(fn.key, run_id, seq)
                watch = int((time.time() + store.watchdog) * 1000)
                store.retime(int(until * 1000), {run_id: watch})
        elif isinstance(outcome, Parallel):
            # Arm each new branch's recovery timer before releasing the run, then
            # release it, then enqueue the branches: a branch that joins at once
            # must find the run free to continue.
            due = time.time() + self.lease_s
            for sid in outcome.new:
                store.arm(f"branch:{run_id}:{sid}", due)
            seq, _r = store.end_pass(run_id, token, "running", fields=end)
            if seq is not None and seq >= 0:
                with self.publisher.batch() as producer:
                    for sid in outcome.new:
                        self.enqueue(fn.key, run_id, None, branch=sid, producer=producer)
        elif isinstance(outcome, Continue):
            seq, _r = store.end_pass(run_id, token, "queued", fields=end)
            if seq is not None and seq >= 0:
                self.enqueue(fn.key, run_id, seq)
        else:  # BranchDone cannot end a normal pass
            seq = None
        if seq == -1:  # end_pass wrote the step records, then found the cancel request
            self.finish(run_id, token, "cancelled", None, self._cancel_reason(run_id), fields)

    # -- parallel branches ---------------------------------------------------------------

    def execute_branch(self, fn_key: str, run_id: str, step_id: str) -> None:
        fn = self._function_for(fn_key, run_id)
        if fn is None:
            return
        store = self.store
        token = new_token()
        lease_ms = int((time.time() + self.lease_s) * 1000)
        member = f"branch:{run_id}:{step_id}"
        head, fields, joined = store.begin_branch(run_id, step_id, token, lease_ms)
        if head == "done":
            if joined:
                self.enqueue(fn.key, run_id, None)
            store.drop_timer(member)
            return
        if head != "ok":
            return
        field = f"bl:{step_id}"
        self.leases.hold(run_id, field, token, lease_ms)
        hold = None
        try:
            if fn.flow.concurrency:
                hold = self.flow.acquire(fn, run_id, token, fields, lease_ms, step_id)
                if hold is None:
                    return
            inp = self._input(fn, run_id, fields, branch=step_id)
            rec = inp.memo.get(step_id)
            group = list((rec.extra or {}).get("group", [])) if rec else []
            sink = PassSink(self, fn, run_id, token, fields, branch=step_id, group=group)
            outcome = self._run(fn, inp, sink)
            self.flow.release(hold)
            if isinstance(outcome, BranchDone):
                store.end_branch(run_id, step_id, token)
                if sink.joined:
                    self.enqueue(fn.key, run_id, None)
                store.drop_claimed([member], self.leases.score(run_id, field))
            elif isinstance(outcome, RetryStep):
                store.end_branch(run_id, step_id, token)
                store.arm(member, time.time() + outcome.delay)
            elif isinstance(outcome, Failed):
                store.end_branch(run_id, step_id, token)
                store.arm(member, time.time() + fn.policy.delay(1))
                log.warning("fanout: branch %s of run %s failed outside its step: %s",
                            step_id, run_id, outcome.error.get("message"))
        finally:
            self.flow.release(hold)
            self.leases.release(run_id, field)

    # -- ending runs ---------------------------------------------------------------------

    def _cancel_reason(self, run_id: str) -> dict[str, Any]:
        raw = self.store.run_fields(run_id).get("cx")
        return self.parse_json(raw) if raw else {"type": "Cancelled", "message": "cancelled"}

    def finish(
        self, run_id: str, token: str, status: str, output: Any, error: dict[str, Any] | None,
        fields: dict[str, str] | None = None, steps: dict[str, str] | None = None,
    ) -> None:
        """End a run (writing the pass's deferred step records with it); release what it
        held, emit system events, tell an invoking parent."""
        values: dict[str, Any] = dict(steps or {})
        if status == "completed":
            values["out"] = dumps(output)
            values["err"] = ""  # an earlier attempt's error no longer describes the run
        if error is not None:
            values["err"] = dumps(error)
        if not self.store.finish_run(run_id, token, status, values):
            return
        fields = fields if fields and "fk" in fields else self.store.run_fields(run_id)
        run_ended(fields.get("fk", ""), run_id, status, error)
        self.flow.ended(run_id, status, fields, output, error)
        inv = fields.get("inv")
        if inv:
            self._tell_parent(self.parse_json(inv), status, output, error)

    def _tell_parent(
        self, inv: dict[str, Any], status: str, output: Any, error: dict[str, Any] | None
    ) -> None:
        rec = StepRecord(id=inv["step"], kind="invoke", seq=int(inv.get("seq", 0)),
                         ended_at=time.time())
        if status == "completed":
            rec.status, rec.output = "completed", output
        else:
            detail = (error or {}).get("message", status)
            rec.status = "failed"
            rec.error = {"type": "InvokeError", "message": f"the invoked run {status}: {detail}"}
        if self.store.resolve_step(inv["run"], rec) == "enqueue":
            self.enqueue(inv["fk"], inv["run"], None)

    def start_run(
        self,
        fn: FunctionDef,
        event: dict[str, Any],
        *,
        run_id: str,
        parent_run_id: str | None = None,
        steps: Sequence[StepRecord] = (),
        extra_fields: dict[str, Any] | None = None,
    ) -> bool:
        """Create a run directly (no router) with optional memoized steps; enqueue it.

        Used for replays and reruns. Returns False if ``run_id`` already exists.
        """
        fields = new_run_fields(
            fn.fn_id, fn.app_id, fn.key, event,
            event_ids=[event.get("id")] if event.get("id") else [], created=repr(time.time()),
            parent_run_id=parent_run_id,
        )
        for rec in steps:
            fields[step_field(rec.id)] = dumps(rec.to_json())
        fields.update(extra_fields or {})
        now = time.time()
        if fn.flow.at_start:  # priority, start deadline, cancel listeners (no admission gates)
            self.flow.decorate(fn, event, fields, now)
        ((_rid, created, enqueue),) = self.store.create_runs([(run_id, fn.key, fields)])
        if created:
            self.flow.listen(fn, run_id, event, fields, now)
        if enqueue:
            self.enqueue(fn.key, run_id, 0)
        return created

    def cancel(self, run_id: str, reason: str = "cancelled by request") -> str:
        """Cancel a run between steps; returns 'cancelled', 'flagged', 'ended' or 'missing'."""
        error = {"type": "Cancelled", "message": reason}
        head = self.store.cancel_run(run_id, error)
        if head == "cancelled":
            fields = self.store.run_fields(run_id)
            self.flow.ended(run_id, "cancelled", fields, None, error)
            inv = fields.get("inv")
            if inv:
                self._tell_parent(self.parse_json(inv), "cancelled", None, error)
        return head


def get_runtime(app: Any) -> Runtime | None:
    """The runtime fanout keeps for ``app`` (a Celery app), or ``None`` when no fanout
    client was created on it."""
    with _runtimes_lock:
        rt = _runtimes.get(id(app))
    return rt if rt is not None and rt.app is app else None


def runtime_for(
    app: Celery, redis_url: str, *, recovery_timeout: float, retention: float
) -> Runtime:
    with _runtimes_lock:
        rt = _runtimes.get(id(app))
        if rt is None or rt.app is not app:
            rt = Runtime(app, redis_url, recovery_timeout=recovery_timeout, retention=retention)
            _runtimes[id(app)] = rt
        elif rt.redis_url != redis_url:
            raise ConfigError(
                f"two fanout clients on one Celery app use different Redis URLs "
                f"({rt.redis_url!r} and {redis_url!r})"
            )
        return rt
