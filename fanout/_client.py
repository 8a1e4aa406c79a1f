"""``fanout.Fanout``: the client users create next to their Celery app."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
from collections.abc import Callable, Coroutine, Iterable, Mapping, Sequence
from typing import Any, Protocol, TypeVar, overload

from celery import Celery

from ._bulk_client import BulkMethods
from ._celery import admission, endings, pausing
from ._celery.history_copy import history_url as history_url_setting
from ._celery.install import check_serializers, runtime_for
from ._celery.runtime import Runtime
from ._core.context import Context, ContextSync
from ._core.event import (
    INVOKE_EVENT,
    MAX_EVENT_BYTES,
    Event,
    check_max_event_bytes,
    prepare_batch,
)
from ._core.flow import (
    SYSTEM_FAILED,
    Batch,
    Cancel,
    Concurrency,
    Debounce,
    Priority,
    RateLimit,
    Singleton,
    Throttle,
    Timeouts,
    as_timestamp,
    check_on_failure,
)
from ._core.function import (
    DEFAULT_PASS_BUDGET,
    FunctionDef,
    build_function,
    check_backoff,
    check_id,
    check_pass_budget,
)
from ._core.ids import new_token, run_id_for
from ._core.middleware import MiddlewareFactory, SendEventsResult
from ._core.middleware import Stack as MiddlewareStack
from ._core.middleware import validate as validate_middleware
from ._core.run_record import (
    EVENT,
    FK,
    FROM_STEP,
    REPLAY_OF,
    ST,
    VERSIONS,
    step_records,
)
from ._core.search import check_search
from ._core.triggers import TriggerCron, TriggerEvent
from ._core.types import check_serializer, dumping, output_codec
from ._core.versions import MAX_VERSION_HISTORY, versions_of
from ._errors import ConfigError, EventError
from ._history_client import HistoryMethods
from ._redis.audit import AuditLog, operator_name

F = TypeVar("F", bound=Callable[..., Any])
AF = TypeVar("AF", bound=Callable[[Context], Coroutine[Any, Any, Any]])
SF = TypeVar("SF", bound=Callable[[ContextSync], Any])


class FunctionDecorator(Protocol):
    """What ``create_function`` returns.  For a type checker it pairs the handler's
    kind with its context, as inngest-py does: ``async def f(ctx: fanout.Context)``
    (step tools return coroutines to await) or ``def f(ctx: fanout.ContextSync)``
    (they return values); a ``def`` handler taking ``fanout.Context`` does not
    type-check.  The handler is returned unchanged."""

    @overload
    def __call__(self, handler: AF) -> AF: ...
    @overload
    def __call__(self, handler: SF) -> SF: ...

DEFAULT_REDIS_URL = "redis://localhost:6379/0"


def resolve_redis_url(celery: Celery, redis_url: str | None) -> str:
    """The argument, else ``celery.conf.fanout_redis_url``, else ``FANOUT_REDIS_URL``."""
    url = (
        redis_url
        or celery.conf.get("fanout_redis_url")
        or os.environ.get("FANOUT_REDIS_URL")
        or DEFAULT_REDIS_URL
    )
    schemes = ("redis://", "rediss://", "unix://", "memory://", "redis+cluster://",
               "rediss+cluster://")
    if not isinstance(url, str) or not url.startswith(schemes):
        raise ConfigError(
            f"invalid Redis URL {url!r}: expected redis://, rediss://, unix://, "
            "redis+cluster:// or memory://"
        )
    return url


def _replay_id(run_id: str, kind: str) -> str:
    from ._core.ids import _digest_id

    return _digest_id(kind, run_id, new_token())


class Fanout(BulkMethods, HistoryMethods):
    """Durable, event-driven functions on a Celery app.

    Creating the client registers fanout's tasks on ``celery``; importing the
    module that creates it is all a worker needs.

    ``max_event_bytes`` limits one event's serialized size (default 2 MiB), for
    ``send``, ``emit`` and ``ctx.step.send_event``.  ``recovery_timeout`` and
    ``retention`` are seconds (they are fanout's own settings).
    ``pass_budget`` (seconds, default 0.05) is how long one ``fanout.step`` task may
    go on to a run's next steps before it hands the run back to the broker; 0 runs
    one task per step (``docs/concepts/execution-model.md``).
    ``route_in_sender`` (default True): a send of at most 50 events is routed in the
    sending process (its runs created, their first passes published) when that
    process declares exactly the functions the live workers declare; otherwise, and
    with False, every send goes through the router task (``docs/concepts/events.md``).
    """

    def __init__(
        self,
        app_id: str,
        *,
        celery: Celery,
        redis_url: str | None = None,
        retry_backoff: Iterable[float] | None = None,
        checkpoint: bool = False,
        pass_budget: float = DEFAULT_PASS_BUDGET,
        recovery_timeout: float = 60.0,
        retention: float = 7 * 86400,
        logger: logging.Logger | logging.LoggerAdapter[Any] | None = None,
        max_event_bytes: int = MAX_EVENT_BYTES,
        strict_order: bool = False,
        middleware: Sequence[MiddlewareFactory] | None = None,
        serializer: Any = None,
        history_url: str | None = None,
        route_in_sender: bool = True,
    ) -> None:
        self.app_id = check_id("app_id", app_id)
        self._logger: logging.Logger | logging.LoggerAdapter[Any] | None = None
        if logger is not None:
            self.set_logger(logger)
        if not isinstance(celery, Celery):
            raise ConfigError(f"celery must be a celery.Celery app, not {type(celery).__name__}")
        check_serializers(celery)
        if not (isinstance(recovery_timeout, (int, float)) and 1 <= recovery_timeout <= 86400):
            raise ConfigError("recovery_timeout must be between 1 and 86400 seconds")
        if not (isinstance(retention, (int, float)) and retention >= 3600):
            raise ConfigError("retention must be at least 3600 seconds")
        self.max_event_bytes = check_max_event_bytes(max_event_bytes)
        self.celery = celery
        self.redis_url = resolve_redis_url(celery, redis_url)
        if history_url is not None:
            # The PostgreSQL history store: the workers' copier and list_runs read it.
            celery.conf.fanout_history_url = history_url
        history_url_setting(celery)  # a clear error now for a bad URL
        self._pg: Any = None
        self._pg_lock = threading.Lock()
        self._backoff = check_backoff(retry_backoff)
        self._checkpoint = bool(checkpoint)
        self._pass_budget = check_pass_budget(pass_budget)
        if not isinstance(strict_order, bool):
            raise ConfigError(f"strict_order must be True or False, not {strict_order!r}")
        self._strict_order = strict_order
        if not isinstance(route_in_sender, bool):
            raise ConfigError(f"route_in_sender must be True or False, not {route_in_sender!r}")
        self._rt: Runtime = runtime_for(
            celery, self.redis_url, recovery_timeout=recovery_timeout, retention=retention
        )
        sender = self._rt.publisher.sender
        if sender is not None and not route_in_sender:
            # One switch per Celery app: any client on it turning it off turns it off.
            sender.enabled = False
        self.functions: dict[str, FunctionDef] = {}
        self.middleware = validate_middleware(middleware, "Fanout(middleware=...)")
        #: How typed outputs (``output_type=``) are stored: pydantic unless given.
        self.serializer = check_serializer(serializer)

    def set_logger(self, logger: logging.Logger | logging.LoggerAdapter[Any]) -> None:
        """The logger behind ``ctx.logger`` in this client's functions (by default the
        ``fanout.run`` logger). It stays silent while a pass replays memoized steps."""
        if not isinstance(logger, (logging.Logger, logging.LoggerAdapter)):
            raise ConfigError(
                f"set_logger takes a logging.Logger or logging.LoggerAdapter, not "
                f"{type(logger).__name__}; wrap another logging library with "
                "logging.LoggerAdapter or route it through the standard logging module"
            )
        self._logger = logger

    def __repr__(self) -> str:
        return f"<fanout.Fanout app_id={self.app_id!r} functions={len(self.functions)}>"

    # -- declaring -------------------------------------------------------------------

    def create_function(
        self,
        *,
        fn_id: str,
        trigger: TriggerEvent | TriggerCron | list[TriggerEvent | TriggerCron],
        name: str | None = None,
        retries: int = 4,
        backoff: Iterable[float] | None = None,
        checkpoint: bool | None = None,
        pass_budget: float | None = None,
        concurrency: Concurrency | list[Concurrency] | None = None,
        singleton: Singleton | None = None,
        throttle: Throttle | None = None,
        rate_limit: RateLimit | None = None,
        debounce: Debounce | None = None,
        batch_events: Batch | None = None,
        priority: Priority | None = None,
        idempotency: str | None = None,
        cancel: Cancel | list[Cancel] | None = None,
        timeouts: Timeouts | None = None,
        on_failure: Callable[..., Any] | None = None,
        version: str | None = None,
        patches: Iterable[str] | None = None,
        strict_order: bool | None = None,
        middleware: Sequence[MiddlewareFactory] | None = None,
        output_type: Any = None,
        search: Sequence[str] | None = None,
    ) -> FunctionDecorator:
        """Declare a function; options are checked here and a bad one raises ConfigError.

        Flow control (``docs/concepts/flow-control.md``): ``concurrency``,
        ``singleton``, ``throttle``, ``rate_limit``, ``debounce``, ``batch_events``,
        ``priority``, ``idempotency`` (a CEL key: one run per key per 24 h),
        ``cancel`` (events that cancel a run), ``timeouts`` and ``on_failure`` (a
        handler run with ``ctx.event.data`` = ``error``, ``event``, ``run_id``,
        ``function_id`` when a run of this function fails). ``output_type`` (a pydantic
        model, a dataclass, ``list[Model]``...) stores the handler's return value as
        JSON through pydantic.

        The decorated handler is returned as it is (it still calls like the handler),
        with ``.id`` set to the fully-qualified id ``"<app_id>-<fn_id>"``, as
        inngest-py's ``Function.id``.
        Versioning (``docs/concepts/versioning.md``): ``version`` names the code (default:
        a fingerprint of the handler's source), ``patches`` declares the markers the
        handler asks ``ctx.patched`` about, ``strict_order`` (default: the client's) fails
        a run in flight whose steps changed order instead of logging a warning.
        ``search`` (``["data.user_id", "output.order_id"]``) names the event data or
        output fields to find runs by: ``list_runs(search={"data.user_id": 42})``.
        """
        search_ = check_search(fn_id, search)
        if strict_order is not None and not isinstance(strict_order, bool):
            raise ConfigError(f"strict_order must be True, False or None, not {strict_order!r}")
        flow = dict(
            concurrency=concurrency, singleton=singleton, throttle=throttle,
            rate_limit=rate_limit, debounce=debounce, batch_events=batch_events,
            priority=priority, idempotency=idempotency, cancel=cancel, timeouts=timeouts,
        )
        backoff_ = self._backoff if backoff is None else backoff
        checkpoint_ = self._checkpoint if checkpoint is None else checkpoint
        budget = (self._pass_budget if pass_budget is None
                  else check_pass_budget(pass_budget, f"function {fn_id!r}: "))
        strict_ = self._strict_order if strict_order is None else strict_order
        middleware_ = self.middleware + validate_middleware(
            middleware, f"create_function(fn_id={fn_id!r}, middleware=...)")
        # output_type: the handler's return value is stored as JSON through pydantic.
        dump_output, _load = output_codec(output_type, f"function {fn_id!r}", self.serializer)

        def decorator(handler: F) -> F:
            fn = build_function(
                app_id=self.app_id,
                fn_id=fn_id,
                trigger=trigger,
                name=name,
                retries=retries,
                backoff=backoff_,
                checkpoint=checkpoint_,
                handler=dumping(handler, dump_output),
                flow=flow,
                version=version,
                patches=patches,
                strict_order=strict_,
                search=search_,
                pass_budget=budget,
            )
            fn.max_event_bytes = self.max_event_bytes
            fn.middleware, fn.client = middleware_, self
            companion = None
            if on_failure is not None:
                companion = self._failure_handler(fn, on_failure, retries, backoff_, checkpoint_)
                companion.pass_budget = fn.pass_budget
                companion.max_event_bytes = self.max_event_bytes
            fn.logger_of = lambda: self._logger
            self._rt.add_function(fn)
            self.functions[fn.fn_id] = fn
            if companion is not None:
                companion.middleware, companion.client = middleware_, self
                companion.logger_of = fn.logger_of
                self._rt.add_function(companion)
                self.functions[companion.fn_id] = companion
            handler.fanout_function = fn  # type: ignore[attr-defined]
            handler.id = fn.id  # type: ignore[attr-defined]  # inngest-py's Function.id
            return handler

        return decorator

    def _failure_handler(
        self, fn: FunctionDef, handler: Callable[..., Any], retries: int, backoff: Any,
        checkpoint: bool,
    ) -> FunctionDef:
        """The companion function ``<fn_id>-failure``, triggered by this function's
        ``fanout/function.failed`` events."""
        check_on_failure(fn.fn_id, handler)
        fid = f"{fn.fn_id}-failure"
        if len(fid) > 128:
            raise ConfigError(
                f"function {fn.fn_id!r}: on_failure adds a function '<fn_id>-failure', and that "
                "id would be longer than 128 characters; use a shorter fn_id"
            )
        for key in (fn.key, f"{self.app_id}:{fid}"):
            if key in self._rt.functions:
                raise ConfigError(f"function {key.split(':', 1)[1]!r} is already declared "
                                  f"in app {self.app_id!r}")
        expr = f'event.data.app_id == "{self.app_id}" && event.data.fn_id == "{fn.fn_id}"'
        companion = build_function(
            app_id=self.app_id, fn_id=fid, trigger=TriggerEvent(event=SYSTEM_FAILED, expression=expr),
            name=f"{fn.name} (on failure)", retries=retries, backoff=backoff,
            checkpoint=checkpoint, handler=handler, strict_order=fn.strict_order,
        )
        companion.failure_of = fn.key
        return companion

    # -- sending ----------------------------------------------------------------------

    def send_sync(self, events: Event | Iterable[Event]) -> list[str]:
        """Validate, store and publish events; returns their ids. Raises on any failure."""
        prepared = prepare_batch(events, max_bytes=self.max_event_bytes)
        if not self.middleware:
            return self._rt.publisher.publish(prepared)
        return self._send_with_middleware(prepared)

    async def send(self, events: Event | Iterable[Event]) -> list[str]:
        """The async form of :meth:`send_sync`."""
        prepared = prepare_batch(events, max_bytes=self.max_event_bytes)
        if not self.middleware:
            return await asyncio.to_thread(self._rt.publisher.publish, prepared)
        return await asyncio.to_thread(self._send_with_middleware, prepared)

    def _send_with_middleware(self, prepared: list[tuple[Event, str]]) -> list[str]:
        """``before_send_events`` / ``after_send_events`` of the client's middleware."""
        stack = MiddlewareStack.build(self.middleware, self, None)
        events = [ev for ev, _text in prepared]
        stack.call("before_send_events", events)
        try:
            ids = self._rt.publisher.publish(prepare_batch(events, max_bytes=self.max_event_bytes))
        except Exception as exc:
            stack.call("after_send_events", SendEventsResult([], exc), reverse=True)
            raise
        stack.call("after_send_events", SendEventsResult(ids), reverse=True)
        return ids

    def emit(
        self,
        name: str,
        data: Mapping[str, Any] | None = None,
        *,
        id: str | None = None,
        user: Mapping[str, Any] | None = None,
    ) -> str:
        """Send one event and return its id: the one-line call for a view."""
        # Anything but a mapping goes to Event as given, which names the problem
        # (EventError), rather than failing in dict() with a TypeError.
        ev = Event(name=name,
                   data=dict(data) if isinstance(data, Mapping) else {} if data is None else data,
                   id=id, user=(dict(user) or None) if isinstance(user, Mapping) else user)
        return self.send_sync(ev)[0]

    def invoke(self, function: Callable[..., Any] | str, data: Mapping[str, Any] | None = None) -> str:
        """Start a run of ``function`` now (whatever its triggers); returns the run id."""
        fn = self._function(function)
        if data is not None and not isinstance(data, Mapping):
            raise EventError(f"invoke data must be a JSON object (a dict), not "
                             f"{type(data).__name__}")
        ev = Event(name=INVOKE_EVENT, data={"fn_id": fn.fn_id, **dict(data or {})})
        prepared = prepare_batch(ev, allow_reserved=True, max_bytes=self.max_event_bytes)
        (eid,) = self._rt.publisher.publish(prepared, target=fn.key)
        return run_id_for(eid, fn.key)

    def _function(self, function: Callable[..., Any] | str) -> FunctionDef:
        if isinstance(function, str):
            fn = self.functions.get(function)
        else:
            fn = getattr(function, "fanout_function", None)
        if not isinstance(fn, FunctionDef) or fn.app_id != self.app_id:
            raise ConfigError(f"{function!r} is not a function declared on this client")
        return fn

    def pause(self, function: Callable[..., Any] | str, reason: str = "") -> bool:
        """Pause a function: its events still create runs and its cron ticks are still
        recorded, but no pass of it runs (a running step finishes) until :meth:`resume`.
        The state lives in Redis and survives worker and Redis restarts (with AOF).
        Returns False when it was paused already."""
        return self._rt.paused.pause(self._function(function).key, reason)

    def resume(self, function: Callable[..., Any] | str, *, skip_backlog: bool = False) -> int:
        """Resume a paused function: what waited continues oldest first, under its flow
        control. ``skip_backlog=True`` records the runs that never started as skipped
        (status ``skipped``) instead; runs already under way continue. Returns how many
        passes were handed back to the workers."""
        resumed, _skipped = pausing.resume(self._rt, self._function(function).key,
                                           skip_backlog=skip_backlog)
        return resumed

    def is_paused(self, function: Callable[..., Any] | str) -> bool:
        return self._rt.paused.info(self._function(function).key) is not None

    def cancel(self, run_id: str, reason: str = "cancelled by request") -> bool:
        """Cancel a run. It stops between steps: a step already running finishes.

        Returns False when the run is unknown or already ended.
        """
        return endings.cancel(self._rt, run_id, reason) in ("cancelled", "flagged")

    def cancel_runs(
        self,
        fn_id: Callable[..., Any] | str,
        *,
        started_after: Any = None,
        started_before: Any = None,
        if_exp: str | None = None,
        reason: str = "cancelled by cancel_runs",
        by: str | None = None,
    ) -> int:
        """Cancel the unfinished runs of a function; returns how many were cancelled.

        ``started_after`` / ``started_before`` (aware datetimes or epoch seconds)
        bound when the runs were created; ``if_exp`` is CEL over their ``event``.
        Each run stops between steps, as with :meth:`cancel`. The action goes into
        the audit log (the dashboard's ``/audit``) under ``by`` (default
        ``python:<user>@<host>``) with ``reason``.
        """
        fn = self._function(fn_id)
        after = as_timestamp(started_after, "started_after")
        before = as_timestamp(started_before, "started_before")
        done = endings.cancel_runs(self._rt, fn, after=after, before=before, if_exp=if_exp,
                                   reason=reason)
        AuditLog(self._rt.store).record(
            by or operator_name("python"), "python", "bulk cancel", [fn.key, *done],
            f"{len(done)} run(s) of {fn.key}: {reason}", client="python",
            extra={"selected": len(done)})
        return len(done)

    def replay(self, run_id: str) -> str:
        """Start a new run of the same function for the same event; returns its id."""
        fields, fn = self._run_and_function(run_id)
        new_id = _replay_id(run_id, "replay")
        event = json.loads(fields.get(EVENT, "{}"))
        admission.start_run(self._rt, fn, event, run_id=new_id, extra_fields={REPLAY_OF: run_id})
        return new_id

    def rerun(self, run_id: str, *, from_step: str) -> str:
        """Start a new run that reuses the memoized outputs of the steps before ``from_step``."""
        fields, fn = self._run_and_function(run_id)
        memo = step_records(fields)
        if from_step not in memo:
            raise ConfigError(
                f"run {run_id} has no step {from_step!r}; its steps are "
                f"{sorted(memo, key=lambda s: (memo[s].seq, s))!r}"
            )
        cut = memo[from_step].seq
        keep = [r for r in memo.values() if r.seq < cut and r.status == "completed"]
        new_id = _replay_id(run_id, f"rerun:{from_step}")
        event = json.loads(fields.get(EVENT, "{}"))
        extra = {REPLAY_OF: run_id, FROM_STEP: from_step}
        # The reused steps were saved by the original run's code: when that is not this
        # code, the new run begins as one that crossed a deploy (docs/concepts/versioning.md).
        seen = versions_of(fields)
        if keep and seen and seen[-1] != fn.version:
            extra[VERSIONS] = json.dumps([*seen, fn.version][-MAX_VERSION_HISTORY:])
        admission.start_run(self._rt, fn, event, run_id=new_id, steps=keep, extra_fields=extra)
        return new_id

    def _run_and_function(self, run_id: str) -> tuple[dict[str, str], FunctionDef]:
        fields = self._rt.store.run_fields(run_id)
        if not fields.get(ST):
            raise ConfigError(f"no run {run_id!r} (unknown, or past its retention)")
        fn = self._rt.functions.get(fields.get(FK, ""))
        if fn is None:
            raise ConfigError(f"run {run_id} belongs to {fields.get(FK)!r}, not declared here")
        return fields, fn

    # -- inspecting ---------------------------------------------------------------------

    def check_stuck_runs(self, *, min_age: float = 0.0, limit: int = 5000) -> list[str]:
        """Fail the runs that nothing will move (no task, lease or timer), among the
        newest ``limit``; returns their ids. A run is failed when it was seen stuck
        by an earlier call at least ``min_age`` seconds before and has not moved since.
        A queued or running run that lacks only its timer (a write lost in a Redis
        failover) is offered again instead of failed. Workers do this every minute;
        call it from a script or a test to check now."""
        return endings.check_stuck(self._rt, min_age=min_age, limit=limit)

    @property
    def runtime(self) -> Runtime:
        return self._rt


__all__ = ["Context", "ContextSync", "EventError", "Fanout"]
