"""fanout's own log lines keep their fields when LogContext is installed (it gives
every record the same attribute names, which ``extra=`` would refuse)."""

from __future__ import annotations

import logging

import pytest

from fanout._celery.runlog import attempt_failed, run_ended, take_failed
from fanout.middleware import LogContext


def test_failure_lines_carry_their_fields_with_log_context_installed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    LogContext(None, None)  # installs the record factory, as in a worker using it
    error = {"type": "ValueError", "message": "bad"}
    with caplog.at_level(logging.INFO, logger="fanout"):
        attempt_failed("shop:charge", "RUN1", "card", 1, 3, error, 1_800_000_000.0)
        run_ended("shop:charge", "RUN1", "failed", error)
    take_failed()
    warning, final = [r for r in caplog.records if r.name == "fanout.failures"]
    assert warning.fanout_run_id == "RUN1" and warning.fanout_step_id == "card"  # type: ignore[attr-defined]
    assert warning.fanout_attempt == 1 and warning.fanout_app == "shop"  # type: ignore[attr-defined]
    assert final.levelno == logging.ERROR and final.fanout_fn == "charge"  # type: ignore[attr-defined]
    # A record made outside any run has the fields, empty.
    other = logging.getLogger("elsewhere").makeRecord("elsewhere", logging.INFO, "f", 1, "x",
                                                      None, None)
    assert other.fanout_run_id is None  # type: ignore[attr-defined]
