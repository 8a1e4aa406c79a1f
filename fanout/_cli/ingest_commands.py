"""``fanout keys``: create, list and revoke the ingest keys of the HTTP endpoint;
``fanout ingest``: serve that endpoint.

A key is printed once, when it is created; Redis keeps only its hash.  An ingest
key sends events through the endpoint and is accepted nowhere else.
"""

from __future__ import annotations

import argparse
import datetime as dt
from collections.abc import Callable
from typing import Any

from .._core.event import quoted
from .._errors import ConfigError
from .._http.ingest_keys import IngestKeys, KeyLimits, check_source, hash_key, new_key
from .._ops.render import table
from .arguments import port_arg, positive_arg
from .common import CliError, add_common_options, find_target, note, out


def _checked(check: Callable[[str], object]) -> Callable[[str], str]:
    def parse(text: str) -> str:
        try:
            check(text)
        except ConfigError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
        return text

    return parse


_source_arg = _checked(check_source)
_pattern_arg = _checked(lambda p: KeyLimits(events=(p,)))
_rate_arg = _checked(lambda r: KeyLimits(rate=r))


def _keys(args: argparse.Namespace) -> IngestKeys:
    return IngestKeys(find_target(args).client())


def cmd_keys_create(args: argparse.Namespace) -> int:
    if args.no_store:
        check_source(args.source)
        key_id, key = new_key()
        out(args, {"key_id": key_id, "source": args.source, "key": key, "hash": hash_key(key)},
             f"{key}\nhash: {hash_key(key)}")
        note(f"key for source {args.source!r}, not stored: put the hash in "
              f"IngestKeys(hashes={{{args.source!r}: '<hash>'}}); the key is not shown again")
        return 0
    made = _keys(args).create(args.source, label=args.label, events=args.events or (),
                              rate=args.rate)
    out(args, {"key_id": made.key_id, "source": made.source, "key": made.key}, made.key)
    note(f"key {made.key_id} for source {made.source!r}: store it now, it is not shown again")
    return 0


def cmd_keys_list(args: argparse.Namespace) -> int:
    keys = _keys(args).list()
    rows = [[k.key_id, k.source, k.label,
             dt.datetime.fromtimestamp(k.created, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S"),
             k.limits.describe()]
            for k in keys]
    out(args, [k.to_json() for k in keys],
         table(["KEY ID", "SOURCE", "LABEL", "CREATED (UTC)", "LIMITS"], rows)
         if rows else "no keys")
    return 0


def cmd_keys_revoke(args: argparse.Namespace) -> int:
    done = _keys(args).revoke(args.key_id)
    if not done:
        raise CliError(f"no key {quoted(args.key_id)} (see 'fanout keys list')")
    out(args, {"revoked": args.key_id}, f"revoked {args.key_id}")
    return 0


def cmd_ingest(args: argparse.Namespace) -> int:
    from .._http.endpoint import Ingest, IngestApp
    from .._http.wsgi_server import Server

    client = find_target(args).client()
    app = IngestApp(Ingest(client, keys=IngestKeys(client), max_body=args.max_body))
    server = Server(app, args.host, args.port)
    note(f"fanout ingest: POST events to {server.url}/events with 'Authorization: Bearer "
          "<key>' (keys: 'fanout keys create SOURCE'); Ctrl-C stops")
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        note("fanout ingest: listening beyond this machine; put a TLS proxy in front")
    try:
        server.serve_forever()
    finally:
        server.close()
    return 0


def add_keys_commands(add: Callable[[str, Callable[[argparse.Namespace], int], str], Any]) -> None:
    """Register ``fanout keys create|list|revoke`` through the parser's ``add``."""
    p = add("keys", cmd_keys_list, "ingest keys of the HTTP event endpoint: "
            "create SOURCE, list, revoke KEY_ID")
    sub = p.add_subparsers(dest="keys_command", metavar="ACTION", parser_class=type(p))
    c = sub.add_parser("create", help="create a key for SOURCE and print it once")
    add_common_options(c, top=False)
    c.set_defaults(func=cmd_keys_create)
    c.add_argument("source", type=_source_arg, help="the sending service, e.g. billing")
    c.add_argument("--label", default="", help="a note shown by 'keys list'")
    c.add_argument("--events", action="append", metavar="PATTERN", type=_pattern_arg,
                   help="only events matching PATTERN (app/*, as in triggers); repeat for more")
    c.add_argument("--rate", metavar="N/s|N/m", type=_rate_arg, help="at most N events per second or minute, "
                   "counted in Redis across endpoint processes")
    c.add_argument("--no-store", action="store_true",
                   help="print a key and its hash for configuration; store nothing")
    ls = sub.add_parser("list", help="list the stored keys (never the keys themselves)")
    add_common_options(ls, top=False)
    ls.set_defaults(func=cmd_keys_list)
    r = sub.add_parser("revoke", help="delete a key: requests with it get 401 from now on")
    add_common_options(r, top=False)
    r.set_defaults(func=cmd_keys_revoke)
    r.add_argument("key_id", help="the key's id (from 'keys list') or the key itself")
    p = add("ingest", cmd_ingest, "serve the HTTP event endpoint (keys kept in Redis)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (127.0.0.1)")
    p.add_argument("--port", type=port_arg, default=8290, help="port (8290)")
    p.add_argument("--max-body", type=positive_arg, default=1024 * 1024, metavar="BYTES",
                   help="largest body accepted (1 MiB)")

