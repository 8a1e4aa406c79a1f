"""What the run scripts cost inside Redis, with the store's metrics counting on and off.

Each script of a three-step run in default mode (``create_run``, ``begin_pass``,
``end_pass`` with one step record, ``finish_run`` with the last one) is called N
times on a fresh run hash, from a private redis-server, and timed by Redis itself
(the ``usec`` of ``EVALSHA`` in ``INFO commandstats``, so the client, the network
and the set-up commands are not in the figure). The rounds alternate on, off, on,
off ...; the figures are medians over the rounds, in microseconds per call, and
the cost per run counts what a three-step run calls in default mode: one
``create_run`` and three passes (three ``begin_pass``, two ``end_pass``; the last
step's pass also finishes the run with ``finish_run``).

    .venv/bin/python -m bench.script_cost [--n 3000] [--rounds 6]

Run it from any source tree to compare trees: it imports ``fanout`` from the
current directory.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from typing import Any

from bench.harness import RedisServer
from fanout._redis.store import Store

PER_RUN = {"create_run": 1, "begin_pass": 3, "end_pass": 2, "finish_run": 1}


def _calls(store: Store) -> dict[str, tuple[Callable[[str], None], Callable[[str], Any]]]:
    """(set-up, call) per script, each given a fresh run id."""
    r, sc = store.r, store.scripts
    now = time.time()
    base = {"st": "queued", "fn": "item", "app": "bench", "fk": "bench:item", "ev": "[]",
            "event": json.dumps({"name": "bench/item", "data": {"i": 1}}),
            "c": repr(now - 1), "seq": "0", "att": "0", "qa": repr(now - 0.002)}
    held = {**base, "st": "running", "lease": "tok", "lu": "9e9"}
    rec = json.dumps({"id": "s1", "k": "run", "st": "completed", "n": 1, "seq": 0, "out": 1,
                      "t0": now, "t1": now + 0.001})
    flat = [x for kv in base.items() for x in kv]

    def nothing(_rid: str) -> None:
        return None

    def put(fields: dict[str, str]) -> Callable[[str], None]:
        return lambda rid: r.hset(store.run_key(rid), mapping=fields) and None

    return {
        "create_run": (nothing, lambda rid: sc.run("create_run", store.run_keys(rid), flat)),
        "begin_pass": (put(base), lambda rid: sc.run(
            "begin_pass", [store.run_key(rid)],
            ["tok", repr(time.time()), repr(time.time() + 60), 0])),
        "end_pass": (put(held), lambda rid: sc.run(
            "end_pass", store.run_keys(rid), ["tok", "queued", "0", "", "s:s1", rec])),
        "finish_run": (put(held), lambda rid: sc.run(
            "finish_run", store.run_keys(rid),
            ["tok", "completed", repr(time.time()), 600, "out", "1", "s:s2", rec])),
    }


#: What each call must answer, or the figure would time a refusal.
EXPECTED: dict[str, Callable[[Any], bool]] = {
    "create_run": lambda res: res is None,
    "begin_pass": lambda res: bool(res) and res[0] == b"ok",
    "end_pass": lambda res: bool(res) and int(res[0]) == 1,
    "finish_run": lambda res: bool(res) and int(res[0]) == 1,
}


def _evalsha_usec(server: RedisServer) -> int:
    return int(server.client.info("commandstats").get("cmdstat_evalsha", {}).get("usec", 0))


def measure(server: RedisServer, metrics: bool, n: int, tag: str) -> dict[str, float]:
    store = Store(server.client, prefix=f"cost{tag}", metrics=metrics)
    out = {}
    for name, (setup, call) in _calls(store).items():
        setup(f"warm-{name}")
        if not EXPECTED[name](call(f"warm-{name}")):
            raise RuntimeError(f"{name} refused the set-up run")
        total = 0
        for i in range(n):
            rid = f"{name}-{i}"
            setup(rid)
            before = _evalsha_usec(server)
            res = call(rid)
            total += _evalsha_usec(server) - before
            if not EXPECTED[name](res):
                raise RuntimeError(f"{name} answered {res!r}: the measurement would be wrong")
        out[name] = total / n
    out["per_run"] = sum(out[k] * m for k, m in PER_RUN.items())
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.script_cost", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=3000, help="calls per script and round")
    p.add_argument("--rounds", type=int, default=6, help="rounds (on and off alternate)")
    args = p.parse_args(argv)
    server = RedisServer()
    try:
        got: dict[bool, list[dict[str, float]]] = {True: [], False: []}
        for k in range(args.rounds):
            for metrics in ((True, False) if k % 2 == 0 else (False, True)):
                got[metrics].append(measure(server, metrics, args.n, f"{k}{int(metrics)}"))
        names = [*PER_RUN, "per_run"]
        print(f"Redis {server.version()}, {args.n} calls per script, {args.rounds} rounds each "
              "(µs inside Redis per call, median [min–max])\n")
        print("| script | counting on | counting off | difference |")
        print("| --- | --- | --- | --- |")
        for name in names:
            on = [g[name] for g in got[True]]
            off = [g[name] for g in got[False]]
            diff = [a - b for a, b in zip(on, off, strict=True)]
            weights = ", ".join(f"×{m}" for m in PER_RUN.values())
            label = f"per run ({weights})" if name == "per_run" else f"`{name}`"
            print(f"| {label} | {_fmt(on)} | {_fmt(off)} | {_fmt(diff)} |")
    finally:
        server.stop()
    return 0


def _fmt(values: list[float]) -> str:
    return f"{statistics.median(values):.1f} [{min(values):.1f}–{max(values):.1f}]"


if __name__ == "__main__":
    raise SystemExit(main())
