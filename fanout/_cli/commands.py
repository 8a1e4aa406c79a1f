"""The ``fanout`` command: inspect and steer runs, run the dashboard, run dev mode.

Every command finds the app like ``celery -A`` does (``-A module[:attr]`` or
``FANOUT_APP``).  Errors are one line on stderr and a non-zero exit: 1 for a
failed operation, 2 for bad usage.  ``--json`` prints machine-readable output.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from .._celery.history_copy import history_url as history_url_setting
from .._core.event import quoted
from .._core.run_record import FK, ST
from .._errors import FanoutError
from .._ops.locate import Target
from .._ops.paused_runs import list_runs, paused_functions, run_shown, show_paused
from .._ops.render import decrypted, events_table, run_json, runs_table, table, timeline
from .._redis.history import MAX_LIMIT, iso
from .._version import __version__
from . import bulk_commands
from .arguments import (
    cursor_arg,
    join_dash_values,
    json_arg,
    key_arg,
    limit_arg,
    port_arg,
    positive_arg,
    seconds_arg,
    status_arg,
    time_arg,
    wanted_statuses,
)
from .check_deploy import add_check_deploy
from .common import (
    EXIT_ERROR,
    EXIT_USAGE,
    CliError,
    add_common_options,
    find_target,
    note,
    out,
    record_action,
)
from .history_commands import add_history_commands
from .ingest_commands import add_keys_commands
from .pause_commands import add_pause_commands
from .send_command import cmd_send


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


# -- commands --------------------------------------------------------------------------


def cmd_functions(args: argparse.Namespace) -> int:
    target = find_target(args, memory_ok=True)
    fns = target.functions()
    # A memory:// store lives in another process: nothing there is paused for this one.
    keys = set() if target.is_memory else paused_functions(target.runtime.store)
    paused = {fn.key: target.pause_info(fn.key) if fn.key in keys else None for fn in fns}
    rows, shown = [], []
    for fn in fns:
        d = fn.describe()
        trig = ", ".join(t["event"] + (f" if {t['expression']}" if t.get("expression") else "")
                         if "event" in t else f"cron {t['cron']}" for t in d["triggers"])
        info = paused[fn.key]
        state = "active" if info is None else "paused" + (f" ({info.reason})" if info.reason
                                                          else "")
        rows.append([fn.key, fn.name, trig, str(fn.retries), state])
        shown.append({**d, "key": fn.key, "paused": info is not None,
                      "pause": None if info is None else {
                          "since": iso(info.since), "reason": info.reason,
                          "waiting_passes": info.parked}})
    out(args, shown, table(["FUNCTION", "NAME", "TRIGGERS", "RETRIES", "STATE"], rows)
        if rows else "no functions")
    return 0


def cmd_invoke(args: argparse.Namespace) -> int:
    run_id = find_target(args).invoke(args.function, args.data)
    out(args, {"run_id": run_id}, run_id)
    return 0


def cmd_runs(args: argparse.Namespace) -> int:
    target = find_target(args)
    history = target.history
    if args.event:
        if history.event(args.event) is None:
            raise CliError(f"no event {quoted(args.event)} (unknown, or past its retention)")
        runs = show_paused(history.runs_of_event(args.event),
                           paused_functions(target.runtime.store))
        wanted = wanted_statuses(args.status)
        if wanted:
            runs = [r for r in runs if r.status in wanted]
        if args.version:
            runs = [r for r in runs if args.version in r.versions]
        if args.event_name:
            runs = [r for r, ok in zip(runs, history.started_by(
                [r.run_id for r in runs], args.event_name), strict=True) if ok]
        out(args, {"runs": [r.to_json() for r in runs], "next_cursor": None},
             runs_table(runs) if runs else "no runs")
        return 0
    fn_key = target.function(args.fn).key if args.fn else None
    pg_url = history_url_setting(target.runtime.app)
    if pg_url is not None:
        return _runs_pg(target, args, fn_key, pg_url)
    if args.search:
        return _search(target, args, fn_key)
    page = list_runs(history, paused_functions(target.runtime.store), status=args.status,
                     fn_key=fn_key, since=args.since, until=args.until,
                     limit=min(args.limit, MAX_LIMIT), cursor=args.cursor, version=args.version,
                     event_name=args.event_name or None)
    out(args, {"runs": [r.to_json() for r in page.items], "next_cursor": page.next_cursor,
               "prev_cursor": page.prev_cursor, "total": page.total,
               "complete": page.complete},
        runs_table(page.items) if page.items else _no_runs(args))
    if not args.json and page.items:
        note(f"{page.total} run(s) match" + (f"; more: add --cursor {page.next_cursor}"
                                            if page.next_cursor else "")
             + (f"; newer: --cursor '{page.prev_cursor}'" if page.prev_cursor else ""))
    return 0


def _runs_pg(target: Target, args: argparse.Namespace, fn_key: str | None, url: str) -> int:
    """``fanout runs`` with the history store: ended runs from PostgreSQL, active ones
    from Redis; ``--search`` is any JSON path over the event data or output, exact."""
    from .._postgres.combined import combined_runs
    from .._postgres.store import PgHistory, parse_search

    try:
        search = parse_search([args.search]) if args.search else None
    except FanoutError as exc:
        raise CliError(str(exc), EXIT_USAGE) from None
    wanted = [s.strip() for s in (args.status or "").split(",") if s.strip()]
    asked = ",".join(dict.fromkeys("queued" if s == "paused" else s for s in wanted)) or None
    pg = PgHistory(url)
    try:
        page = combined_runs(target.runtime.store, pg, fn_key=fn_key, status=asked,
                             since=args.since, until=args.until, version=args.version,
                             event_name=args.event_name, search=search, cursor=args.cursor,
                             limit=min(args.limit, MAX_LIMIT))
    finally:
        pg.close()
    items = show_paused(page.items, paused_functions(target.runtime.store))
    if wanted and "active" not in wanted:  # queued asked for paused: keep what was asked
        items = [r for r in items if r.status in wanted]
    out(args, {"runs": [r.to_json() for r in items], "next_cursor": page.next_cursor,
               "prev_cursor": page.prev_cursor, "total": page.total, "complete": True,
               "source": "postgres+redis"},
        runs_table(items) if items else _no_runs(args))
    if not args.json and items:
        note(f"{page.total} run(s) match" + (f"; more: add --cursor {page.next_cursor}"
                                            if page.next_cursor else "")
             + (f"; newer: --cursor '{page.prev_cursor}'" if page.prev_cursor else ""))
    return 0


def _no_runs(args: argparse.Namespace) -> str:
    """The line a listing with no runs prints: which filters matched nothing."""
    given = [f"--{name.replace('_', '-')} {value}" for name in
             ("fn", "status", "version", "event_name", "search", "cursor")
             if (value := getattr(args, name, None))]
    given += [f"--{name} {iso(value)}" for name in ("since", "until")
              if (value := getattr(args, name, None)) is not None]
    return "no runs match " + " ".join(given) if given else "no runs"


def _search(target: Target, args: argparse.Namespace, fn_key: str | None) -> int:
    """``--search path=value``: exact when the function (or, without --fn, a function)
    declares the path as a search attribute; otherwise a look through the runs newest
    first that says how far it got and how to go on."""
    from .._ops.stats import DataQuery, search_runs

    if (args.status or args.version or args.event_name or args.since is not None
            or args.until is not None):
        raise CliError("--search combines with --fn, --limit and --cursor only", EXIT_USAGE)
    try:
        query = DataQuery.parse(args.search)
    except FanoutError as exc:
        raise CliError(str(exc), EXIT_USAGE) from None
    fns = [fn for fn in target.functions() if fn_key is None or fn.key == fn_key]
    indexed = any(query.attribute in fn.search for fn in fns)
    found = search_runs(target.history, query, fn_key=fn_key, limit=min(args.limit, MAX_LIMIT),
                        budget=args.look, cursor=args.cursor, indexed=indexed)
    items = show_paused(found.items, paused_functions(target.runtime.store))
    out(args, {"runs": [r.to_json() for r in items], "next_cursor": found.next_cursor,
               "looked": found.looked, "total": found.total, "exact": found.exact,
               "complete": found.complete},
        runs_table(items) if items else _no_runs(args))
    if not args.json:
        if found.exact:
            note(f"{found.total} run(s) match (search attribute {query.attribute}: exact)"
                 + (f"; more: add --cursor {found.next_cursor}" if found.next_cursor else ""))
        elif found.next_cursor:
            note(f"looked at {found.looked} of {found.total} runs, continue with "
                 f"--cursor {found.next_cursor}")
        else:
            note(f"looked at every run ({found.total})")
    return 0


def cmd_reindex(args: argparse.Namespace) -> int:
    n = find_target(args).history.reindex(force=args.force)
    if n is None:
        out(args, {"indexed": None}, "nothing to do: the runs were indexed before, or another "
            "process is indexing them now (--force indexes them again)")
    else:
        out(args, {"indexed": n}, f"indexed {n} run(s)")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    target = find_target(args)
    store = target.runtime.store
    fields = store.run_fields(args.run_id)
    url = None if fields.get(ST) else history_url_setting(target.runtime.app)
    if url is not None:  # past Redis's retention: the history store's copy
        from .._postgres.copies import fields_from

        fields = fields_from(url, args.run_id)
    info = store.run_info(args.run_id, fields)
    if info is None:
        raise CliError(f"no run {quoted(args.run_id)} (unknown, or past its retention)")
    info = run_shown(info, fields.get(FK, ""), paused_functions(store))
    key = args.key or os.environ.get("FANOUT_ENCRYPTION_KEY")
    if key:
        info = decrypted(info, key)
    out(args, run_json(info, fields), timeline(info, fields))
    return 0


def cmd_events(args: argparse.Namespace) -> int:
    history = find_target(args).history
    page = history.events(name=args.name, since=args.since, until=args.until,
                          limit=min(args.limit, MAX_LIMIT), cursor=args.cursor)
    out(args, {"events": [e.to_json() for e in page.items], "next_cursor": page.next_cursor},
         events_table(page.items) if page.items else "no events")
    if not args.follow:
        return 0
    last = max((e.ts or 0 for e in page.items), default=time.time())
    try:
        while True:
            time.sleep(1.0)
            new = history.events(name=args.name, since=last, after_exclusive=True, limit=200)
            for ev in reversed(new.items):
                out(args, ev.to_json(), events_table([ev]).splitlines()[1])
                last = max(last, ev.ts or last)
    except KeyboardInterrupt:
        return 0


def cmd_event(args: argparse.Namespace) -> int:
    history = find_target(args).history
    ev = history.event(args.event_id)
    if ev is None:
        raise CliError(f"no event {quoted(args.event_id)} (unknown, or past its retention)")
    runs = history.runs_of_event(args.event_id)
    text = (f"event {ev.event_id}  {ev.name}\n  data {json.dumps(ev.data, default=str)}\n\n"
            + (runs_table(runs) if runs else "no runs"))
    out(args, {**ev.to_json(), "runs": [r.to_json() for r in runs]}, text)
    return 0


def _bulk(target: Target, args: argparse.Namespace, ids: list[str], verb: str,
          act: Callable[[str], tuple[bool, str]]) -> int:
    """Cancel or replay the runs named on the command line, from this process (with
    filters instead, a bulk job on the workers: bulk_commands.py)."""
    if args.dry_run:
        missing = [rid for rid in ids if not target.has_run(rid)]
        if missing:
            raise CliError(f"{missing[0]}: no run {quoted(missing[0])} (unknown, or past its "
                           "retention)")
        out(args, {"would": verb, "count": len(ids), "run_ids": ids},
            f"would {verb} {len(ids)} run(s)" + "".join(f"\n{r}" for r in ids))
        return 0
    results: list[dict[str, Any]] = []
    failures: list[str] = []
    for rid in ids:
        try:
            ok, detail = act(rid)
        except FanoutError as exc:
            ok, detail = False, str(exc)
        results.append({"run_id": rid, "ok": ok, "result": detail})
        if not ok:
            failures.append(f"{rid}: {detail}")
    if failures and len(ids) == 1:
        raise CliError(failures[0])   # one run named, one line
    lines = [f"{r['run_id']} {r['result']}" for r in results]
    summary = f"{verb}: {len(ids) - len(failures)} of {len(ids)} run(s)"
    done = [r["run_id"] for r in results if r["ok"]]
    # A replay's result is "-> <new run id>": the new runs are targets too.
    started = [r["result"][3:] for r in results if r["ok"] and r["result"].startswith("-> ")]
    reason = getattr(args, "reason", "") or ""
    record_action(target, args, verb, [*done, *started],
                  f"{summary}: {reason}" if reason else summary, selected=len(ids))
    out(args, {"results": results}, "\n".join([*lines, summary]))
    if failures:
        raise CliError(failures[0])
    return 0


def cmd_cancel(args: argparse.Namespace) -> int:
    target = find_target(args)
    if not args.run_ids:  # filters: a bulk job on the workers (bulk_commands.py)
        return bulk_commands.submit(target, args, "cancel")
    messages = {"cancelled": "cancelled", "flagged": "cancelling (stops after its running step)",
                "ended": "had already ended", "missing": "no such run"}

    def act(rid: str) -> tuple[bool, str]:
        head = target.cancel(rid, args.reason)
        return head in ("cancelled", "flagged"), messages.get(head, head)

    return _bulk(target, args, list(args.run_ids), "cancel", act)


def cmd_replay(args: argparse.Namespace) -> int:
    target = find_target(args)
    if not args.run_ids:  # filters: the latest run of each event, once, in a bulk job
        return bulk_commands.submit(target, args, "replay")
    return _bulk(target, args, list(args.run_ids), "replay",
                 lambda rid: (True, f"-> {target.replay(rid)}"))


def cmd_rerun(args: argparse.Namespace) -> int:
    target = find_target(args)
    new_id = target.rerun(args.run_id, args.from_step)
    record_action(target, args, "rerun", [args.run_id, new_id], f"from step {args.from_step}")
    out(args, {"run_id": new_id, "rerun_of": args.run_id, "from_step": args.from_step}, new_id)
    return 0


def cmd_prune(args: argparse.Namespace) -> int:
    rep = find_target(args).history.prune()
    out(args, rep.__dict__, f"removed {rep.runs_removed} run and {rep.events_removed} event "
         f"index entries (checked {rep.keys_checked} old runs)")
    return 0


def cmd_metrics(args: argparse.Namespace) -> int:
    from .._ops.prometheus import serve

    rt = find_target(args).runtime
    if args.once:
        from .._ops.prometheus import registry_for, render

        sys.stdout.write(render(registry_for(lambda: rt.store)).decode())
        return 0
    server = serve(lambda: rt.store, host=args.host, port=args.port)
    note(f"fanout metrics on {server.url}/metrics (Ctrl-C to stop)")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


def _check_access(args: argparse.Namespace) -> None:
    """Bad tokens, or another address than loopback without one, are usage errors."""
    from .._dashboard.app import is_loopback
    from .._dashboard.server import tokens_from

    try:
        tokens = tokens_from(args.token or None, args.tokens or None, args.tokens_file or None)
    except FanoutError as exc:
        raise CliError(str(exc), EXIT_USAGE) from None
    if not tokens and not is_loopback(args.host):
        raise CliError(f"--host {args.host} would make the dashboard reachable from other "
                       "machines: it needs an access token there (--token or "
                       "FANOUT_DASHBOARD_TOKEN, or named tokens with --tokens or "
                       "FANOUT_DASHBOARD_TOKENS), or bind to 127.0.0.1", EXIT_USAGE)


def cmd_dashboard(args: argparse.Namespace) -> int:
    from .._dashboard import serve

    _check_access(args)
    target = find_target(args)
    serve(target, host=args.host, port=args.port, token=args.token or None,
          tokens=args.tokens or None, tokens_file=args.tokens_file or None)
    return 0


def cmd_dev(args: argparse.Namespace) -> int:
    from .dev import run_dev

    _check_access(args)
    target = find_target(args, memory_ok=True)
    run_dev(target, host=args.host, port=args.port, token=args.token or None,
            tokens=args.tokens or None, tokens_file=args.tokens_file or None,
            concurrency=args.concurrency, beat=not args.no_beat, reload=args.reload)
    return 0


# -- parser ------------------------------------------------------------------------------


def _run_filters(p: argparse.ArgumentParser, limit: int) -> None:
    p.add_argument("--fn", metavar="FUNCTION", help="function id or app:fn key")
    p.add_argument("--status", type=status_arg,
                   help="status, comma-separated statuses, 'active' or 'paused'")
    p.add_argument("--since", type=time_arg, metavar="T",
                   help="created at or after T: 15m, 2h, 7d (ago), epoch or ISO 8601")
    p.add_argument("--until", type=time_arg, metavar="T", help="created at or before T")
    p.add_argument("--limit", type=limit_arg, default=limit, help=f"at most N runs ({limit})")


def _dashboard_opts(p: argparse.ArgumentParser, port: int) -> None:
    p.add_argument("--host", default="127.0.0.1", help="address to bind (127.0.0.1); any "
                   "other address requires --token")
    p.add_argument("--port", type=port_arg, default=port, help=f"port ({port})")
    p.add_argument("--token", default=os.environ.get("FANOUT_DASHBOARD_TOKEN", ""),
                   help="one operator token, named 'token' ($FANOUT_DASHBOARD_TOKEN)")
    p.add_argument("--tokens", default=os.environ.get("FANOUT_DASHBOARD_TOKENS", ""),
                   metavar="NAME:ROLE:TOKEN,...",
                   help="named tokens, role operator or read-only; TOKEN may be "
                   "sha256:<hex> ($FANOUT_DASHBOARD_TOKENS)")
    p.add_argument("--tokens-file", default=os.environ.get("FANOUT_DASHBOARD_TOKENS_FILE", ""),
                   metavar="PATH", help="a file of NAME:ROLE:TOKEN lines "
                   "($FANOUT_DASHBOARD_TOKENS_FILE)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="fanout", description="Inspect and steer fanout runs.")
    parser.add_argument("--version", action="version", version=f"fanout {__version__}",
                        help="print the installed version (celery-fanout) and exit")
    add_common_options(parser, top=True)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    def add(name: str, func: Callable[[argparse.Namespace], int], help: str) -> Any:
        p = sub.add_parser(name, help=help, description=help)
        add_common_options(p, top=False)
        p.set_defaults(func=func)
        return p

    add("functions", cmd_functions, "list the app's functions and their triggers")
    p = add("send", cmd_send, "send an event")
    p.add_argument("name", help="event name")
    p.add_argument("--data", type=json_arg, default={}, metavar="JSON", help="event data object")
    p.add_argument("--user", type=json_arg, default=None, metavar="JSON")
    p.add_argument("--id", default=None, help="event id (idempotency key)")
    p.add_argument("--wait", type=seconds_arg, default=0.0, metavar="SECONDS",
                   help="wait up to SECONDS for the runs it starts, and list them")
    p = add("invoke", cmd_invoke, "start a run of a function now")
    p.add_argument("function", help="function id or app:fn key")
    p.add_argument("--data", type=json_arg, default={}, metavar="JSON")
    p = add("runs", cmd_runs, "list runs, newest first")
    _run_filters(p, 20)
    p.add_argument("--event", metavar="EVENT_ID", help="the runs this event started")
    p.add_argument("--cursor", type=cursor_arg, help="continue a previous listing")
    p.add_argument("--version", metavar="V", help="runs created on function version V, or "
                   "with a pass that ran on it")
    p.add_argument("--search", metavar="PATH=VALUE", help="runs whose event data or output "
                   "has VALUE at PATH (data.user_id=42, output.order_id=7): exact for a "
                   "declared search attribute, else a look through the runs")
    p.add_argument("--event-name", metavar="NAME", help="runs started by an event of this "
                   "name (a batch run: by any of its events)")
    p.add_argument("--look", type=limit_arg, default=2000, metavar="N",
                   help="with --search on an undeclared path: look at most N runs (2000)")
    p = add("run", cmd_run, "show a run: its steps as a timeline, output and error")
    p.add_argument("run_id")
    p.add_argument("--key", metavar="KEY", type=key_arg, help="decrypt encrypted values with this key "
                   "(default: $FANOUT_ENCRYPTION_KEY); without it they show as encrypted")
    p = add("events", cmd_events, "list events, newest first")
    p.add_argument("--name", help="only events with this name")
    p.add_argument("--since", type=time_arg, metavar="T")
    p.add_argument("--until", type=time_arg, metavar="T")
    p.add_argument("--limit", type=limit_arg, default=20)
    p.add_argument("--cursor", type=cursor_arg, help="continue a previous listing")
    p.add_argument("-f", "--follow", action="store_true", help="keep printing new events")
    p = add("event", cmd_event, "show an event and the runs it started")
    p.add_argument("event_id")
    for name, func, help, limit in (
        ("cancel", cmd_cancel, "cancel runs (by id, or all that match the filters, in a "
         "bulk job on the workers; default status: active)", 1000),
        ("replay", cmd_replay, "start new runs for the same events as the matching runs "
         "(with filters: a bulk job on the workers, the latest run of each event, never a "
         "replay unless --include-replays)", 1000),
    ):
        p = add(name, func, help)
        p.add_argument("run_ids", nargs="*", metavar="RUN_ID")
        _run_filters(p, limit)
        p.add_argument("--dry-run", action="store_true", help="count and list the runs, "
                       "change nothing (with filters: the exact count, and at most --limit "
                       "run ids)")
        bulk_commands.add_bulk_options(p)
        if name == "replay":
            p.add_argument("--include-replays", action="store_true",
                           help="with filters, also replay runs that are replays or reruns")
            p.add_argument("--reason", default="", help="why, for the audit log")
        if name == "cancel":
            p.add_argument("--reason", default="cancelled from the fanout CLI")
    p = add("rerun", cmd_rerun, "start a new run reusing the steps before --from-step")
    p.add_argument("run_id")
    p.add_argument("--from-step", required=True, metavar="STEP")
    add("prune", cmd_prune, "remove history index entries past the retention")
    p = add("reindex", cmd_reindex, "index the runs created before the status, version, "
            "event-name and search indexes (once; workers do it at start)")
    p.add_argument("--force", action="store_true", help="index every run again")
    p = add("metrics", cmd_metrics, "serve Prometheus metrics of the whole fleet (needs the "
            "'metrics' extra)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (127.0.0.1)")
    p.add_argument("--port", type=port_arg, default=9808, help="port (9808)")
    p.add_argument("--once", action="store_true", help="print one scrape and exit")
    p = add("dashboard", cmd_dashboard, "serve the web dashboard")
    _dashboard_opts(p, 8289)
    p = add("dev", cmd_dev, "worker, beat scheduler and dashboard in one process")
    _dashboard_opts(p, 8288)
    p.add_argument("--concurrency", type=positive_arg, default=4, help="worker threads (4)")
    p.add_argument("--no-beat", action="store_true", help="do not run the beat scheduler")
    p.add_argument("--reload", action="store_true",
                   help="restart the worker when a .py file under the current directory changes")
    add_keys_commands(add)
    add_pause_commands(add)
    add_history_commands(add)
    bulk_commands.add_job_commands(add)
    add_check_deploy(add)
    return parser


def _option_strings(parser: argparse.ArgumentParser) -> set[str]:
    found: set[str] = set()
    for action in parser._actions:
        found.update(action.option_strings)
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                found |= _option_strings(sub)
    return found


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(join_dash_values(sys.argv[1:] if argv is None else argv,
                                              _option_strings(parser)))
    if not getattr(args, "func", None):
        parser.print_usage(sys.stderr)
        sys.stderr.write("fanout: error: a command is required (see 'fanout --help')\n")
        return EXIT_USAGE
    try:
        return int(args.func(args))
    except CliError as exc:
        note(f"fanout {args.command}: error: {exc}")
        return exc.code
    except FanoutError as exc:
        note(f"fanout {args.command}: error: {exc}")
        return EXIT_ERROR
    except KeyboardInterrupt:
        note("fanout: interrupted")
        return 130
    except BrokenPipeError:
        return 0
    except Exception as exc:  # noqa: BLE001 - one clear line, never a traceback
        if os.environ.get("FANOUT_DEBUG"):
            raise
        note(f"fanout {args.command}: error: {_describe(exc)}")
        return EXIT_ERROR


def _describe(exc: BaseException) -> str:
    from .._redis.store import StoreError, StoreUnreachable

    if isinstance(exc, StoreUnreachable):
        return f"cannot reach Redis: {exc}"
    if isinstance(exc, StoreError):
        return f"Redis error: {exc}"
    if isinstance(exc, OSError) and exc.errno is not None:
        return f"{exc.strerror or exc}"
    return f"{type(exc).__name__}: {exc} (set FANOUT_DEBUG=1 for the traceback)"

