"""What every ``fanout`` command shares: its errors, its output, finding the app, and
the options every command takes."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from .._ops.locate import Target, locate
from .arguments import broker_url_arg, redis_url_arg

EXIT_ERROR = 1
EXIT_USAGE = 2


class CliError(Exception):
    """An error reported as one line, with an exit code."""

    def __init__(self, message: str, code: int = EXIT_ERROR) -> None:
        super().__init__(message)
        self.code = code


def out(args: argparse.Namespace, data: Any, text: str) -> None:
    if getattr(args, "json", False):
        sys.stdout.write(json.dumps(data, default=str, ensure_ascii=False) + "\n")
    else:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")


def note(message: str) -> None:
    sys.stderr.write(message + "\n")


# -- loading the app -----------------------------------------------------------------


def find_target(args: argparse.Namespace, *, memory_ok: bool = False) -> Target:
    spec = getattr(args, "app", None) or os.environ.get("FANOUT_APP") or ""
    if not spec:
        raise CliError("no app given: pass -A module[:attr] (as for celery -A) or set FANOUT_APP",
                       EXIT_USAGE)
    # --redis is fanout's store and nothing else; the broker is the app's own, unless
    # --broker names one (Celery reads CELERY_BROKER_URL before its configuration).
    url = getattr(args, "redis", None)
    broker = getattr(args, "broker", None)
    if url:
        os.environ["FANOUT_REDIS_URL"] = url
    if broker:
        os.environ["CELERY_BROKER_URL"] = broker
    target = locate(spec)
    if url and target.redis_url != url:
        raise CliError(f"--redis {url} was given, but app {spec} uses {target.redis_url} "
                       "(it sets its Redis URL itself; make it read FANOUT_REDIS_URL)")
    if broker and target.app.conf.broker_write_url != broker:
        raise CliError(f"--broker {broker} was given, but app {spec} publishes to "
                       f"{target.broker_url} (it sets broker_write_url or "
                       "CELERY_BROKER_WRITE_URL; unset it or pass that URL)")
    if target.is_memory and not memory_ok:
        raise CliError(f"app {spec} keeps its state in memory ({target.redis_url}): only "
                       "'fanout dev' in the same process can see it; pass --redis URL or set "
                       "FANOUT_REDIS_URL")
    return target


def record_action(target: Target, args: argparse.Namespace, action: str, targets: list[str],
                  detail: str = "", **extra: Any) -> None:
    """Put an action taken from the CLI into the audit log (the dashboard's ``/audit``),
    under ``--as`` (default ``$FANOUT_OPERATOR``, else ``cli:<login>@<host>``).  The
    action has happened already: a failure to record it is said, not raised."""
    from .._redis.audit import AuditLog, operator_name

    who = (getattr(args, "operator", None) or "").strip()[:100] or operator_name("cli")
    try:
        AuditLog(target.runtime.store).record(who, "cli", action, targets, detail,
                                              client="cli", extra=extra)
    except Exception as exc:  # noqa: BLE001 - the action stands; say it is not in the log
        note(f"warning: {action} done, but not recorded in the audit log: {exc}")


def add_common_options(p: argparse.ArgumentParser, *, top: bool) -> None:
    d: dict[str, Any] = {} if top else {"default": argparse.SUPPRESS}
    p.add_argument("-A", "--app", metavar="MODULE[:ATTR]", help="the app module, as for celery -A "
                   "(default: $FANOUT_APP)", **d)
    p.add_argument("--redis", metavar="URL", type=redis_url_arg, help="fanout's Redis store (sets FANOUT_REDIS_URL "
                   "before the app is imported; the broker stays the app's)", **d)
    p.add_argument("--broker", metavar="URL", type=broker_url_arg, help="the Celery broker to publish to (sets "
                   "CELERY_BROKER_URL before the app is imported)", **d)
    p.add_argument("--json", action="store_true", help="machine-readable output", **d)
    p.add_argument("--as", dest="operator", metavar="NAME", help="who acts, for the audit log "
                   "of cancel, replay, rerun, pause and resume (default: $FANOUT_OPERATOR, "
                   "else cli:<login>@<host>)", **d)
