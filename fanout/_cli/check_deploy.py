"""``fanout check-deploy``: would the code in this checkout break the runs in flight?

Exit codes: 0 every run in flight goes on (perhaps with warnings), 1 some run would
fail, 2 bad usage. See ``docs/howto/check-deploy.md``.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from .._core.deploy_replay import RunCheck
from .._ops.deploy_check import DeployCheck, FunctionCheck, check_deploy
from .arguments import positive_arg
from .common import EXIT_USAGE, CliError, find_target, out


def cmd_check_deploy(args: argparse.Namespace) -> int:
    if args.limit < 1:
        raise CliError("--limit must be a positive integer", EXIT_USAGE)
    target = find_target(args)
    wanted = list(args.fn or [])
    checks: list[FunctionCheck] = []
    for client in target.clients:
        mine = None
        if wanted:
            mine = [ref for ref in wanted if _belongs(client.app_id, ref, client.functions)]
            if not mine:
                continue
        checks.extend(check_deploy(client, functions=mine, limit=args.limit).functions)
    if wanted:
        found = {c.fn_id for c in checks} | {c.key for c in checks}
        missing = [ref for ref in wanted if ref not in found]
        if missing:
            raise CliError(f"no function {missing[0]!r} in {target.spec or 'this app'}",
                           EXIT_USAGE)
    report = DeployCheck(checks)
    out(args, report.to_json(), _text(report))
    return report.exit_code


def _belongs(app_id: str, ref: str, functions: dict[str, Any]) -> bool:
    if ":" in ref:
        return ref.split(":", 1)[0] == app_id and ref.split(":", 1)[1] in functions
    return ref in functions


def _text(report: DeployCheck) -> str:
    lines: list[str] = []
    for f in report.functions:
        head = (f"{f.key} (version {f.version}): {len(f.runs)} run(s) in flight, "
                f"{len(f.with_verdict('ok'))} ok, {len(f.warned)} would warn, "
                f"{len(f.failed)} would fail")
        lines.append(head + (" (only the newest were checked: --limit)" if f.truncated else ""))
        for r in f.failed:
            lines.extend(_run_lines("FAIL", r))
        for r in f.warned:
            lines.extend(_run_lines("warn", r))
    total_fail, total_warn = len(report.failed), len(report.warned)
    if not report.functions:
        lines.append("no functions")
    lines.append(("FAIL: " if total_fail else "ok: ") + f"{total_fail} run(s) would fail, "
                 f"{total_warn} would go on with a warning")
    return "\n".join(lines)


def _run_lines(tag: str, r: RunCheck) -> list[str]:
    lines = [f"  {tag}  {r.run_id}  ({r.status})"]
    if r.error is not None:
        lines.append(f"        {r.error.get('type')}: {r.error.get('message')}")
    for w in r.warnings:
        lines.append(f"        [{w.get('kind')}] {w.get('message')}")
    if r.would_run:
        lines.append(f"        would run {r.would_run!r} before the saved step(s) "
                     f"{r.unused!r} (a renamed step runs again under its new id)")
    return lines


def add_check_deploy(add: Callable[[str, Callable[[argparse.Namespace], int], str], Any]) -> None:
    p = add("check-deploy", cmd_check_deploy, "replay the runs in flight against this code "
            "(read-only): exit 1 if a deploy of it would fail some")
    p.add_argument("--fn", action="append", metavar="FN",
                   help="only this function (app:fn or fn; repeat for more)")
    p.add_argument("--limit", type=positive_arg, default=10_000, metavar="N",
                   help="runs read per function, newest first (10000)")
