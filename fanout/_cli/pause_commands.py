"""``fanout pause FN`` and ``fanout resume FN``."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from .common import CliError, find_target, record_action


def cmd_pause(args: argparse.Namespace) -> int:
    target = find_target(args)
    fn = target.function(args.fn)
    created = target.pause(fn.key, args.reason or "")
    if created:
        record_action(target, args, "pause", [fn.key], args.reason or "")
    print(f"{fn.key} paused: its events still create runs, which wait for "
          f"'fanout resume {fn.key}'" if created else f"{fn.key} was paused already")
    return 0


def cmd_resume(args: argparse.Namespace) -> int:
    target = find_target(args)
    fn = target.function(args.fn)
    if target.pause_info(fn.key) is None:
        raise CliError(f"{fn.key} is not paused")
    resumed, skipped = target.resume(fn.key, skip_backlog=args.skip_backlog)
    record_action(target, args, "resume", [fn.key],
                  f"{resumed} pass(es) resumed, {skipped} skipped")
    print(f"{fn.key} resumed: {resumed} waiting pass(es) handed to the workers"
          + (f", {skipped} run(s) that never started recorded as skipped" if skipped else ""))
    return 0


def add_pause_commands(add: Callable[[str, Callable[[argparse.Namespace], int], str], Any]) -> None:
    p = add("pause", cmd_pause, "pause a function: its runs wait (nothing is lost) until resume")
    p.add_argument("fn", help="the function (app:fn, or fn when unambiguous)")
    p.add_argument("--reason", default="", help="a note kept with the pause")
    p = add("resume", cmd_resume, "resume a paused function: what waited runs, oldest first")
    p.add_argument("fn", help="the function (app:fn, or fn when unambiguous)")
    p.add_argument("--skip-backlog", action="store_true",
                   help="record the runs that never started as skipped instead of running them")
