"""``fanout history backfill``: copy into the PostgreSQL history store the ended runs
Redis holds that the copier does not take (those that ended before the ended feed
existed)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from .._celery.history_copy import history_url
from .arguments import positive_arg
from .common import CliError, find_target, out


def cmd_history(args: argparse.Namespace) -> int:
    from .._postgres.copier import backfill
    from .._postgres.store import PgHistory

    target = find_target(args)
    url = history_url(target.runtime.app)
    if url is None:
        raise CliError("fanout history backfill needs the PostgreSQL history store: set "
                       "fanout_history_url (or Fanout(history_url=...)) in the app")
    pg = PgHistory(url)
    try:
        rep = backfill(target.runtime.store, pg, batch=args.batch)
    finally:
        pg.close()
    out(args, {"copied": rep.copied, "passed_over": rep.missing},
        f"copied {rep.copied} ended run(s) to the history store; passed over "
        f"{rep.missing} (active, or gone from Redis)")
    return 0


def add_history_commands(add: Callable[[str, Callable[[argparse.Namespace], int], str],
                                       Any]) -> None:
    p = add("history", cmd_history,
            "the PostgreSQL history store: 'backfill' copies every ended run Redis holds")
    p.add_argument("action", choices=["backfill"],
                   help="backfill: copy every ended run Redis holds (safe to run again)")
    p.add_argument("--batch", type=positive_arg, default=500, metavar="N",
                   help="runs per transaction (500)")
