"""The Celery adapter: fanout's tasks, the router, leases and the timer scanner.

One :class:`Runtime` per Celery app, shared by every :class:`fanout.Fanout`
client created on it.  It registers three tasks:

* ``fanout.step(fn, run_id, seq)``: one pass of a run (replay, execute the next step);
* ``fanout.route(event_ids, ...)``: consumes the ``fanout.events`` exchange and
  starts one run per matching function;
* ``fanout.cron(fn, tick)``: a cron tick from Celery beat.

Inside each worker's main process a daemon thread drains the timer set: expired
leases (a worker died mid-pass), step retries and wake-ups become new
``fanout.step`` messages.  No extra process is needed.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import redis
from celery import Celery, signals
from kombu import Exchange, Queue

from ._engine import (
    Completed,
    Continue,
    Failed,
    LeaseLost,
    Outcome,
    PassInput,
    RetryStep,
    SaveRejected,
    error_info,
    run_pass,
)
from ._errors import ConfigError, PublishError
from ._event import Event, dumps
from ._function import FunctionDef
from ._ids import new_token, run_id_for
from ._records import StepRecord
from ._store import Store, connect
from ._triggers import SubscriberIndex

log = logging.getLogger("fanout")

EVENTS_EXCHANGE = "fanout.events"
ROUTER_QUEUE = "fanout.events"
ROUTE_CHUNK = 500
MAX_TAKEOVERS = 5

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
            "accept_content=['json'] (see fanout's celeryconfig.py)."
        )


class _Sink:
    """The engine's view of Redis and the broker during one pass."""

    def __init__(self, rt: Runtime, run_id: str, token: str) -> None:
        self.rt, self.run_id, self.token = rt, run_id, token

    def save_step(self, record: StepRecord) -> StepRecord | None:
        head, existing = self.rt.store.save_step(self.run_id, self.token, record)
        if head == "lost":
            raise SaveRejected(self.run_id)
        return existing

    def send_events(self, step_id: str, events: list[tuple[Event, str]]) -> list[str]:
        return self.rt.publish(events, parent_run_id=self.run_id)


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
        self.poll_interval = 0.25
        self._store: Store | None = None
        self._store_pid = 0
        self._leases: dict[str, tuple[str, int]] = {}
        self._leases_lock = threading.Lock()
        self._heartbeat_pid = 0
        self._scanner: threading.Thread | None = None
        self._stop = threading.Event()
        self._periodic: list[list[Any]] = []
        self.exchange = Exchange(EVENTS_EXCHANGE, type="direct", durable=True)
        self.router_queue = Queue(
            ROUTER_QUEUE, exchange=self.exchange, routing_key="fanout.route", durable=True
        )
        self._register_tasks()
        self._connect_signals()

    # -- plumbing ------------------------------------------------------------------

    @property
    def store(self) -> Store:
        """The store, reconnected after a fork (prefork children get their own sockets)."""
        pid = os.getpid()
        if self._store is None or self._store_pid != pid:
            self._store = Store(connect(self.redis_url), retention=self.retention)
            self._store_pid = pid
        return self._store

    def add_function(self, fn: FunctionDef) -> None:
        if fn.key in self.functions:
            raise ConfigError(f"function {fn.fn_id!r} is already declared in app {fn.app_id!r}")
        self.functions[fn.key] = fn
        for trig in fn.event_triggers:
            self.index.add(fn, trig)

    def _register_tasks(self) -> None:
        app = self.app
        opts: dict[str, Any] = dict(
            acks_late=True,
            reject_on_worker_lost=True,
            ignore_result=True,
            serializer="json",
            shared=False,
        )
        rt = self

        @app.task(name="fanout.step", **opts)  # type: ignore[untyped-decorator]
        def step(fn: str, run_id: str, seq: int | None = None) -> None:
            rt.execute_pass(fn, run_id, seq)

        @app.task(name="fanout.route", **opts)  # type: ignore[untyped-decorator]
        def route(
            event_ids: list[str],
            parent_run_id: str | None = None,
            target: str | None = None,
            batch_id: str | None = None,
        ) -> None:
            rt.route(event_ids, parent_run_id=parent_run_id, target=target, batch_id=batch_id)

        self.step_task = step
        self.route_task = route
        queues = app.conf.task_queues
        if queues is not None and not any(q.name == ROUTER_QUEUE for q in queues):
            app.conf.task_queues = [*queues, self.router_queue]
        elif queues is None:
            default = Queue(app.conf.task_default_queue)
            app.conf.task_queues = [default, self.router_queue]

    def _connect_signals(self) -> None:
        signals.worker_init.connect(self._on_worker_init, weak=False)
        signals.worker_ready.connect(self._on_worker_ready, weak=False)
        signals.worker_shutting_down.connect(self._on_worker_stop, weak=False)

    def _mine(self, sender: Any) -> bool:
        app = getattr(sender, "app", None)
        return app is None or app is self.app

    def _on_worker_init(self, sender: Any = None, **_: Any) -> None:
        if self._mine(sender):
            check_serializers(self.app)

    def _on_worker_ready(self, sender: Any = None, **_: Any) -> None:
        if self._mine(sender):
            self.start_scanner()

    def _on_worker_stop(self, **_: Any) -> None:
        self._stop.set()

    # -- publishing ------------------------------------------------------------------

    def publish(
        self,
        events: Sequence[tuple[Event, str]],
        *,
        parent_run_id: str | None = None,
        target: str | None = None,
    ) -> list[str]:
        """Store the events and publish one router message; never waits for a worker."""
        ids = [ev.id or "" for ev, _ in events]
        try:
            self.store.store_events([(ev.id or "", text, ev.ts or 0) for ev, text in events])
        except redis.RedisError as exc:
            raise PublishError(f"could not store {len(ids)} event(s) in Redis: {exc}") from exc
        self._publish_route(ids, parent_run_id=parent_run_id, target=target)
        return ids

    def _publish_route(
        self,
        ids: list[str],
        *,
        parent_run_id: str | None = None,
        target: str | None = None,
        batch_id: str | None = None,
        producer: Any = None,
    ) -> None:
        try:
            self.route_task.apply_async(
                args=(ids,),
                kwargs={"parent_run_id": parent_run_id, "target": target, "batch_id": batch_id},
                queue=self.router_queue,
                producer=producer,
                retry=True,
                retry_policy={"max_retries": 3, "interval_start": 0.1, "interval_step": 0.3},
            )
        except Exception as exc:
            raise PublishError(
                f"could not publish {len(ids)} event id(s) to the broker: {exc}"
            ) from exc

    def enqueue(self, fn_key: str, run_id: str, seq: int | None, producer: Any = None) -> None:
        self.step_task.apply_async(args=(fn_key, run_id, seq), producer=producer)

    # -- routing ---------------------------------------------------------------------

    def route(
        self,
        event_ids: list[str],
        *,
        parent_run_id: str | None,
        target: str | None,
        batch_id: str | None,
    ) -> None:
        store = self.store
        if len(event_ids) > ROUTE_CHUNK:
            # Split a large send so several workers route it at once.
            with self.app.producer_or_acquire() as producer:
                for i in range(0, len(event_ids), ROUTE_CHUNK):
                    self._publish_route(
                        event_ids[i : i + ROUTE_CHUNK],
                        parent_run_id=parent_run_id,
                        target=target,
                        producer=producer,
                    )
            return
        batch = batch_id or new_token()
        payload = dumps({"ids": event_ids, "parent": parent_run_id, "target": target})
        store.begin_route(batch, payload, self.lease_s)
        runs: list[tuple[str, str, dict[str, Any]]] = []
        now = repr(time.time())
        for eid, ev in zip(event_ids, store.load_events(event_ids), strict=True):
            if ev is None:
                log.warning("fanout: event %s is not in Redis (expired?); nothing to route", eid)
                continue
            if target is not None:
                fn = self.functions.get(target)
                fns = [fn] if fn is not None else []
                if fn is None:
                    log.error("fanout: invoke target %s is not declared on this worker", target)
            else:
                fns = self.index.match(ev)
            text = dumps(ev)
            for fn in fns:
                fields: dict[str, Any] = {
                    "st": "queued",
                    "fn": fn.fn_id,
                    "app": fn.app_id,
                    "fk": fn.key,
                    "ev": dumps([eid]),
                    "event": text,
                    "c": now,
                    "seq": "0",
                    "att": "0",
                }
                if parent_run_id:
                    fields["par"] = parent_run_id
                runs.append((run_id_for(eid, fn.key), fn.key, fields))
        results = store.create_runs(runs)
        todo = [(fk, rid) for (rid, fk, _f), (_r, _c, enq) in zip(runs, results, strict=True) if enq]
        if todo:
            with self.app.producer_or_acquire() as producer:
                for fk, rid in todo:
                    self.enqueue(fk, rid, 0, producer=producer)
        store.end_route(batch)

    # -- one pass ----------------------------------------------------------------------

    def execute_pass(self, fn_key: str, run_id: str, seq: int | None) -> None:
        fn = self.functions.get(fn_key)
        store = self.store
        if fn is None:
            log.error(
                "fanout: run %s belongs to function %s, which this worker does not declare; "
                "it will be retried when the timer fires",
                run_id,
                fn_key,
            )
            store.arm(run_id, time.time() + self.recovery_timeout)
            return
        token = new_token()
        lease_ms = int((time.time() + self.lease_s) * 1000)
        head, fields = store.begin_pass(run_id, token, lease_ms, seq)
        if head != "ok":
            return
        self._hold(run_id, token, lease_ms)
        try:
            if int(fields.get("takeovers", "0")) > MAX_TAKEOVERS:
                self._finish_failed(
                    fn,
                    run_id,
                    token,
                    {
                        "type": "WorkerLost",
                        "message": f"the worker running this run died {MAX_TAKEOVERS + 1} times "
                        "in a row (a poison step?); the run was stopped",
                    },
                )
                return
            memo = {
                k[2:]: StepRecord.from_json(json.loads(v))
                for k, v in fields.items()
                if k.startswith("s:")
            }
            event = json.loads(fields.get("event", "{}"))
            events = json.loads(fields["events"]) if "events" in fields else [event]
            attempt = int(fields.get("att", "0"))
            retrying = [r.attempts for r in memo.values() if r.status == "retrying"]
            inp = PassInput(
                run_id=run_id,
                fn_id=fn.fn_id,
                event=event,
                events=events,
                attempt=max([attempt, *retrying]),
                memo=memo,
                checkpoint=fn.checkpoint,
                policy=fn.policy,
            )
            try:
                outcome: Outcome = run_pass(
                    fn.handler, inp, _Sink(self, run_id, token), is_async=fn.is_async
                )
            except Exception as exc:  # an engine fault: retry the pass, never lose the run
                log.exception("fanout: internal error in a pass of run %s", run_id)
                outcome = Failed(error_info(exc), True)
            self._conclude(fn, run_id, token, attempt, outcome)
        finally:
            self._release(run_id)

    def _conclude(
        self, fn: FunctionDef, run_id: str, token: str, attempt: int, outcome: Outcome
    ) -> None:
        store = self.store
        if isinstance(outcome, Completed):
            store.finish_run(run_id, token, "completed", {"out": dumps(outcome.output)})
        elif isinstance(outcome, Continue):
            seq = store.end_pass(run_id, token, "queued", fields={"takeovers": 0})
            if seq is not None:
                self.enqueue(fn.key, run_id, seq)
                store.drop_claimed([run_id], self._lease_score(run_id))
        elif isinstance(outcome, RetryStep):
            store.end_pass(
                run_id, token, "running", wake=time.time() + outcome.delay, fields={"takeovers": 0}
            )
        elif isinstance(outcome, Failed):
            if outcome.retriable and attempt < fn.retries:
                delay = (
                    outcome.retry_after
                    if outcome.retry_after is not None
                    else fn.policy.delay(attempt + 1)
                )
                store.end_pass(
                    run_id,
                    token,
                    "running",
                    wake=time.time() + delay,
                    fields={"att": attempt + 1, "err": dumps(outcome.error), "takeovers": 0},
                )
            else:
                self._finish_failed(fn, run_id, token, outcome.error)
        elif isinstance(outcome, LeaseLost):
            log.warning("fanout: run %s was taken over by another worker mid-pass", run_id)

    def _finish_failed(
        self, fn: FunctionDef, run_id: str, token: str, error: dict[str, Any]
    ) -> None:
        self.store.finish_run(run_id, token, "failed", {"err": dumps(error)})

    # -- leases ------------------------------------------------------------------------

    def _hold(self, run_id: str, token: str, lease_ms: int) -> None:
        with self._leases_lock:
            self._leases[run_id] = (token, lease_ms)
        if self._heartbeat_pid != os.getpid():
            self._heartbeat_pid = os.getpid()
            threading.Thread(target=self._heartbeat, name="fanout-heartbeat", daemon=True).start()

    def _release(self, run_id: str) -> None:
        with self._leases_lock:
            self._leases.pop(run_id, None)

    def _lease_score(self, run_id: str) -> int:
        with self._leases_lock:
            held = self._leases.get(run_id)
        return held[1] if held else 0

    def _heartbeat(self) -> None:
        pid = os.getpid()
        while self._heartbeat_pid == pid:
            time.sleep(self.lease_s / 3)
            with self._leases_lock:
                held = [(rid, tok) for rid, (tok, _s) in self._leases.items()]
            if not held:
                continue
            try:
                until = int((time.time() + self.lease_s) * 1000)
                self.store.renew_leases(held, until)
                with self._leases_lock:
                    for rid, tok in held:
                        if rid in self._leases:
                            self._leases[rid] = (tok, until)
            except redis.RedisError:
                log.warning("fanout: could not renew leases; will retry", exc_info=True)

    # -- timers --------------------------------------------------------------------------

    def start_scanner(self) -> None:
        """Start the timer thread in this process (once)."""
        if self._scanner is not None and self._scanner.is_alive():
            return
        self._stop.clear()
        self._scanner = threading.Thread(target=self._scan_loop, name="fanout-timers", daemon=True)
        self._scanner.start()

    def stop_scanner(self) -> None:
        self._stop.set()
        if self._scanner is not None:
            self._scanner.join(timeout=5)

    def add_periodic(self, name: str, fn: Callable[[], Any], interval: float) -> None:
        """Run ``fn()`` about every ``interval`` seconds in each worker's timer thread
        (for example the Django outbox sweeper). Errors are logged, never raised."""
        if not any(entry[0] == name for entry in self._periodic):
            self._periodic.append([name, fn, float(interval), 0.0])

    def _run_periodic(self) -> None:
        now = time.monotonic()
        for entry in self._periodic:
            name, fn, interval, last = entry
            if now - last >= interval:
                entry[3] = now
                try:
                    fn()
                except Exception:
                    log.warning("fanout: periodic job %s failed", name, exc_info=True)

    def _scan_loop(self) -> None:
        while not self._stop.is_set():
            try:
                n = self.scan_once()
            except Exception:  # keep the thread alive through Redis or broker outages
                log.warning("fanout: timer scan failed; retrying", exc_info=True)
                n = 0
            self._run_periodic()
            if n == 0:
                self._stop.wait(self.poll_interval)

    def scan_once(self) -> int:
        """Fire due timers: recover expired leases, wake sleeping and retrying runs."""
        store = self.store
        due, rearm = store.claim_due(rearm_s=self.lease_s)
        if not due:
            return 0
        routes = [m for m in due if m.startswith("route:")]
        run_ids = [m for m in due if not m.startswith("route:")]
        with self.app.producer_or_acquire() as producer:
            for member in routes:
                payload = store.route_payload(member[6:])
                if payload:
                    data = json.loads(payload)
                    self._publish_route(
                        data["ids"],
                        parent_run_id=data.get("parent"),
                        target=data.get("target"),
                        batch_id=member[6:],
                        producer=producer,
                    )
            if run_ids:
                pipe = store.r.pipeline(transaction=False)
                for rid in run_ids:
                    pipe.hget(store.run_key(rid), "fk")
                for rid, fk in zip(run_ids, pipe.execute(), strict=True):
                    if fk is None:
                        continue
                    self.enqueue(fk.decode() if isinstance(fk, bytes) else fk, rid, None, producer)
        gone = [m for m in routes if not store.route_payload(m[6:])]
        store.drop_claimed([*run_ids, *gone], rearm)
        return len(due)


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
