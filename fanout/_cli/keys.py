"""``fanout keys``: create, list and revoke the ingest keys of the HTTP endpoint.

A key is printed once, when it is created; Redis keeps only its hash.  An ingest
key sends events through the endpoint and is accepted nowhere else.
"""

from __future__ import annotations

import argparse
import datetime as dt
from collections.abc import Callable
from typing import Any

from .._http.keys import IngestKeys, check_source, hash_key, new_key
from .._ops.render import table


def _keys(args: argparse.Namespace) -> IngestKeys:
    from .commands import _target

    target = _target(args)
    return IngestKeys(target.client())


def cmd_keys_create(args: argparse.Namespace) -> int:
    from .commands import _note, _out

    if args.no_store:
        check_source(args.source)
        key_id, key = new_key()
        _out(args, {"key_id": key_id, "source": args.source, "key": key, "hash": hash_key(key)},
             f"{key}\nhash: {hash_key(key)}")
        _note(f"key for source {args.source!r}, not stored: put the hash in "
              f"IngestKeys(hashes={{{args.source!r}: '<hash>'}}); the key is not shown again")
        return 0
    made = _keys(args).create(args.source, label=args.label)
    _out(args, {"key_id": made.key_id, "source": made.source, "key": made.key}, made.key)
    _note(f"key {made.key_id} for source {made.source!r}: store it now, it is not shown again")
    return 0


def cmd_keys_list(args: argparse.Namespace) -> int:
    from .commands import _out

    keys = _keys(args).list()
    rows = [[k.key_id, k.source, k.label,
             dt.datetime.fromtimestamp(k.created, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")]
            for k in keys]
    _out(args, [k.to_json() for k in keys],
         table(["KEY ID", "SOURCE", "LABEL", "CREATED (UTC)"], rows) if rows else "no keys")
    return 0


def cmd_keys_revoke(args: argparse.Namespace) -> int:
    from .commands import CliError, _out

    done = _keys(args).revoke(args.key_id)
    if not done:
        raise CliError(f"no key {args.key_id!r} (see 'fanout keys list')")
    _out(args, {"revoked": args.key_id}, f"revoked {args.key_id}")
    return 0


def add_keys_commands(add: Callable[[str, Callable[[argparse.Namespace], int], str], Any]) -> None:
    """Register ``fanout keys create|list|revoke`` through the parser's ``add``."""
    p = add("keys", cmd_keys_list, "ingest keys of the HTTP event endpoint: "
            "create SOURCE, list, revoke KEY_ID")
    sub = p.add_subparsers(dest="keys_command", metavar="ACTION", parser_class=type(p))
    from .commands import _common

    c = sub.add_parser("create", help="create a key for SOURCE and print it once")
    _common(c, top=False)
    c.set_defaults(func=cmd_keys_create)
    c.add_argument("source", help="the sending service, e.g. billing")
    c.add_argument("--label", default="", help="a note shown by 'keys list'")
    c.add_argument("--no-store", action="store_true",
                   help="print a key and its hash for configuration; store nothing")
    ls = sub.add_parser("list", help="list the stored keys (never the keys themselves)")
    _common(ls, top=False)
    ls.set_defaults(func=cmd_keys_list)
    r = sub.add_parser("revoke", help="delete a key: requests with it get 401 from now on")
    _common(r, top=False)
    r.set_defaults(func=cmd_keys_revoke)
    r.add_argument("key_id", help="the key's id (from 'keys list') or the key itself")

