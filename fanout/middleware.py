"""Middleware that ship with fanout (the hook model is in :class:`fanout.Middleware`).

- :class:`LogContext` puts the app, function, run id, step id and attempt on every
  log record made while a pass runs (``record.fanout_run_id`` and friends, ready for
  a JSON formatter or a ``%(fanout_run_id)s`` format string).
- :func:`error_reporter` builds a middleware that hands each failed step attempt,
  and each failed pass, to a callable of yours (Sentry's ``capture_exception``, a
  metrics counter, a test's list).

Encryption at rest is in :mod:`fanout.encryption`.
"""

from __future__ import annotations

import contextvars
import logging
import threading
from collections.abc import Callable, Mapping
from typing import Any

from ._core.engine import current_step
from ._core.middleware import Middleware, PassRequest, TransformOutputResult

__all__ = ["LOG_FIELDS", "LogContext", "error_reporter"]

#: The attributes :class:`LogContext` adds to each log record made inside a run
#: (``None`` outside one; the step id is ``None`` between steps).
LOG_FIELDS = ("fanout_app", "fanout_fn", "fanout_run_id", "fanout_step_id", "fanout_attempt")

_run: contextvars.ContextVar[tuple[str, str, str, int] | None] = contextvars.ContextVar(
    "fanout_log_context", default=None
)
_installed = False
_install_lock = threading.Lock()


def _install_factory() -> None:
    """Wrap the logging record factory once per process (it reads a context var, so
    it costs nothing outside runs and works in threads, prefork and async code)."""
    global _installed
    with _install_lock:
        if _installed:
            return
        previous = logging.getLogRecordFactory()

        def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
            record = previous(*args, **kwargs)
            ctx = _run.get()
            if ctx is None:
                values: tuple[Any, ...] = (None, None, None, None, None)
            else:
                app, fn, run_id, attempt = ctx
                values = (app, fn, run_id, current_step.get(), attempt)
            for name, value in zip(LOG_FIELDS, values, strict=True):
                setattr(record, name, value)
            return record

        logging.setLogRecordFactory(factory)
        _installed = True


class LogContext(Middleware):
    """Every log record made during a pass carries the run it belongs to."""

    def __init__(self, client: Any, raw_request: Any) -> None:
        super().__init__(client, raw_request)
        _install_factory()
        self._token: contextvars.Token[Any] | None = None

    def transform_input(self, ctx: Any, function: Any, steps: Mapping[str, Any]) -> None:
        req = self.raw_request
        if isinstance(req, PassRequest):
            app = getattr(function, "app_id", None) or getattr(self.client, "app_id", "")
            self._token = _run.set((str(app), req.fn_id, req.run_id, req.attempt))

    def before_response(self) -> None:
        if self._token is not None:
            try:
                _run.reset(self._token)
            except ValueError:  # set in another context (an async handler's task)
                _run.set(None)
            self._token = None


Reporter = Callable[[BaseException, dict[str, Any]], Any]


def error_reporter(report: Reporter, *, name: str = "ErrorReporter") -> type[Middleware]:
    """A middleware class that calls ``report(exc, info)`` for each failed step
    attempt and each failed pass; ``info`` has ``app``, ``function``, ``run_id``,
    ``step_id`` (``None`` for the function's own code) and ``attempt``.  A reporter
    that raises is logged and ignored: reporting never fails a run.

    ``middleware=[error_reporter(lambda exc, info: sentry_sdk.capture_exception(exc))]``
    """
    if not callable(report):
        raise TypeError("error_reporter(report): report must be a callable (exc, info)")
    log = logging.getLogger("fanout")

    class _Reporter(Middleware):
        def transform_output(self, result: TransformOutputResult) -> None:
            if result.error is None:
                return
            req = self.raw_request
            info = {
                "app": getattr(self.client, "app_id", None),
                "function": getattr(req, "fn_id", None),
                "run_id": getattr(req, "run_id", None),
                "step_id": result.step.id if result.step is not None else None,
                "attempt": getattr(req, "attempt", None),
            }
            try:
                report(result.error, info)
            except Exception:  # noqa: BLE001 - a reporter must not fail the run
                log.warning("fanout: error reporter %s raised", name, exc_info=True)

    _Reporter.__name__ = _Reporter.__qualname__ = name
    return _Reporter
