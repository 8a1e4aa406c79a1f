"""Pure bookkeeping for the scale, cluster and profile benchmarks (no I/O here).

* :func:`key_family` — a Redis key with its ids replaced by placeholders, so keys
  that grow with N group into one family (``fanout:run:{*}``).
* :func:`KNOWN_BOUNDS` / :func:`bound_of` — what keeps each family from growing
  for ever (a TTL, a trim, the retention prune), as fanout's code does it.
* :func:`commandstats_calls` / :func:`shares` — ``INFO commandstats`` to call
  counts, and per-node shares of a total.
* :func:`parse_monitor_line` / :func:`command_keys` — a ``MONITOR`` line to its
  source and arguments, and the keys a command names.
* :func:`fold_stacks` — py-spy's raw (collapsed) output to the cost of each of
  fanout's own functions.
"""

from __future__ import annotations

import re
import statistics
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

# -- key families ----------------------------------------------------------------------

_TAG = re.compile(r"\{[^}]*\}")
_NUM = re.compile(r"(?<=:)\d+(?=:|$)")
_HEX = re.compile(r"(?<=:)[0-9a-f]{16,}(?=:|$)")


def key_family(key: str) -> str:
    """``fanout:run:{01J..}`` -> ``fanout:run:{*}``; numbers and long hex ids -> ``#``."""
    out = _TAG.sub("{*}", key)
    out = _HEX.sub("#", out)
    return _NUM.sub("#", out)


#: Family pattern -> what bounds it, from fanout's code (keyspace.py, store.py,
#: history.py, the Lua scripts). A family not listed is reported as "unknown".
KNOWN_BOUNDS: dict[str, str] = {
    "fanout:run:{*}": "TTL = retention, set when the run ends (finish_run)",
    "fanout:ev:{*}": "TTL = retention, set when the event is stored",
    "fanout:ev:{*}:runs": "TTL = retention (EXPIRE after the run is linked)",
    "fanout:route:{*}": "TTL = retention (router batch payload)",
    "fanout:trace:{*}": "TTL = retention (trace context)",
    "fanout:idx:runs": "one global zset: entries pruned by History.prune "
                       "(hourly per worker) once older than retention and the run hash is gone",
    "fanout:idx:events": "one global zset: entries older than retention removed by "
                         "History.prune (hourly per worker)",
    "fanout:idx:fn:*": "one zset per function: pruned like fanout:idx:runs",
    "fanout:idx:runs:{*}": "on a Redis Cluster, the 16 shards of fanout:idx:runs (by run "
                           "id): pruned like it",
    "fanout:idx:evname:*": "one zset per event name (events): entries older than the "
                           "retention removed by History.prune",
    "fanout:idx:ended": "the ended feed (one zset, scored by the end): entries older than the "
                        "retention removed by History.prune",
    "fanout:idx:st:*": "one zset per terminal status: pruned like fanout:idx:runs",
    "fanout:idx:ver:*": "one zset per version: pruned like fanout:idx:runs",
    "fanout:idx:en:*": "one zset per event name (runs): pruned like fanout:idx:runs",
    "fanout:idx:sa:*": "one zset per search attribute: pruned like fanout:idx:runs",
    "fanout:timers": "the single timer zset of earlier versions: drained, no longer written",
    "fanout:timers:{*}": "16 zsets (48 on a cluster; shards by run id): a member lives while its run is "
                         "queued, leased or sleeping; removed when the run ends",
    "fanout:metrics": "one hash: counters per function and status (bounded by the "
                      "number of functions, not N)",
    "fanout:metrics:roll:*:#": "rollup buckets: TTL per tier",
    "fanout:metrics:roll:last": "one hash: the charted fields at the last roll",
    "fanout:declared": "one hash: a field per set of declared functions; fields no worker "
                       "refreshed for 60 s are deleted",
    "fanout:metrics:evnames": "one set: the event names counted, at most 1,000",
    "fanout:idx:fns": "one set: the functions that have runs",
}


def bound_of(family: str) -> str:
    """What bounds a family, from :data:`KNOWN_BOUNDS` (``*`` outside ``{*}`` is a
    wildcard); "unknown" when fanout's code was not read for it."""
    if family in KNOWN_BOUNDS:
        return KNOWN_BOUNDS[family]
    for pattern, bound in KNOWN_BOUNDS.items():
        rx = re.escape(pattern).replace(r"\{\*\}", "\0").replace(r"\*", ".*")
        if re.fullmatch(rx.replace("\0", r"\{\*\}"), family):
            return bound
    return "unknown"


@dataclass
class Family:
    """Keys of one family: how many, a sample's memory and TTLs, and cardinalities."""

    keys: int = 0
    sampled: int = 0
    sampled_bytes: int = 0
    with_ttl: int = 0
    elements: int = 0  # summed ZCARD/HLEN/SCARD/LLEN of the sampled keys
    types: Counter[str] = field(default_factory=Counter)

    @property
    def est_bytes(self) -> float:
        return self.sampled_bytes / self.sampled * self.keys if self.sampled else 0.0

    @property
    def est_elements(self) -> float:
        return self.elements / self.sampled * self.keys if self.sampled else 0.0


def growth(before: Mapping[str, Family], after: Mapping[str, Family], n: int,
           min_share: float = 0.01) -> list[tuple[str, float, float, float]]:
    """Families that grew with N: (family, keys per run, elements per run, bytes per run),
    largest bytes first. A family grows with N when its keys or its elements grew by at
    least ``min_share`` of N."""
    out = []
    for fam, a in after.items():
        b = before.get(fam, Family())
        dk, de = a.keys - b.keys, a.est_elements - b.est_elements
        db = a.est_bytes - b.est_bytes
        if dk >= min_share * n or de >= min_share * n:
            out.append((fam, dk / n, de / n, db / n))
    return sorted(out, key=lambda t: -t[3])


# -- commandstats and shares -------------------------------------------------------------


def commandstats_calls(info: Mapping[str, object]) -> dict[str, int]:
    """``INFO commandstats`` (as redis-py parses it) -> {command: calls}."""
    out: dict[str, int] = {}
    for k, v in info.items():
        if not k.startswith("cmdstat_"):
            continue
        calls = v.get("calls") if isinstance(v, Mapping) else None
        if calls is None and isinstance(v, str):  # "calls=3,usec=..." unparsed
            calls = dict(p.split("=", 1) for p in v.split(","))["calls"]
        out[k.removeprefix("cmdstat_")] = int(str(calls))
    return out


def delta(before: Mapping[str, int], after: Mapping[str, int],
          own: Mapping[str, int] | None = None) -> dict[str, int]:
    """Calls between two snapshots minus our own (e.g. the INFO that took ``after``)."""
    out = {k: after.get(k, 0) - before.get(k, 0) for k in set(before) | set(after)}
    for k, v in (own or {}).items():
        out[k] = out.get(k, 0) - v
    return {k: v for k, v in out.items() if v > 0}


def shares(totals: Mapping[str, float]) -> dict[str, float]:
    """Each part's share of the sum (0..1)."""
    s = sum(totals.values())
    return {k: (v / s if s else 0.0) for k, v in totals.items()}


def busiest_vs_fair(totals: Mapping[str, float]) -> tuple[str, float, float]:
    """(busiest part, its share, its share ÷ the fair share 1/len)."""
    sh = shares(totals)
    name = max(sh, key=lambda k: sh[k])
    return name, sh[name], sh[name] * len(sh)


# -- MONITOR ---------------------------------------------------------------------------

_MON = re.compile(r'^(?P<ts>\d+\.\d+) \[(?P<db>\d+) (?P<src>[^\]]+)\] (?P<args>.*)$')
_ESC = {"n": "\n", "r": "\r", "t": "\t", "a": "\a", "b": "\b", '"': '"', "\\": "\\"}


def _unquote_args(s: str) -> list[str]:
    args: list[str] = []
    i = 0
    while i < len(s):
        if s[i] == " ":
            i += 1
            continue
        if s[i] != '"':
            raise ValueError(f"bad MONITOR argument at {i}: {s[i:i + 20]!r}")
        i += 1
        buf = []
        while s[i] != '"':
            if s[i] == "\\":
                nxt = s[i + 1]
                if nxt == "x":
                    buf.append(chr(int(s[i + 2:i + 4], 16)))
                    i += 4
                    continue
                buf.append(_ESC.get(nxt, nxt))
                i += 2
                continue
            buf.append(s[i])
            i += 1
        args.append("".join(buf))
        i += 1
    return args


def parse_monitor_line(line: str) -> tuple[str, list[str]] | None:
    """``1700.1 [0 127.0.0.1:5000] "SET" "k" "v"`` -> ("client", ["SET", "k", "v"]);
    a command run by a script gives ("lua", [...]). None for anything else (OK)."""
    m = _MON.match(line)
    if not m:
        return None
    src = "lua" if m["src"] == "lua" else "client"
    return src, _unquote_args(m["args"])


_NO_KEY = {"ping", "info", "cluster", "multi", "exec", "script", "select", "client",
           "hello", "auth", "readonly", "command", "time", "config", "monitor", "echo",
           "dbsize", "flushdb", "flushall", "memory", "scan", "publish", "subscribe",
           "psubscribe", "unsubscribe", "punsubscribe", "watch", "unwatch", "asking"}
_ALL_KEYS = {"del", "unlink", "exists", "mget", "touch"}


def command_keys(args: list[str]) -> list[str]:
    """The keys a command names (its first key for most; every declared key of an
    EVAL/EVALSHA/FCALL; every argument of DEL, EXISTS, MGET...). A declared key that
    is the first one again, or the first one followed by another key's name (how a run
    script on a Redis Cluster names a shard on its node, fanout/_redis/node_shards.py),
    is a name, not a key: the script's own command on that shard is counted for it."""
    if not args:
        return []
    cmd = args[0].lower()
    if cmd in _NO_KEY:
        return []
    if cmd in ("eval", "evalsha", "eval_ro", "evalsha_ro", "fcall", "fcall_ro"):
        n = int(args[2]) if len(args) > 2 else 0
        declared = args[3:3 + n]
        first = declared[:1]
        return first + [k for k in declared[1:] if not first or not (
            k == first[0] or (k.startswith(first[0]) and "{" in k[len(first[0]):]))]
    if cmd in _ALL_KEYS:
        return args[1:]
    if cmd == "mset":
        return args[1::2]
    return args[1:2]


def key_counts(commands: Iterable[list[str]]) -> Counter[str]:
    """Commands per key: each command counts once for each distinct key it names."""
    c: Counter[str] = Counter()
    for args in commands:
        for k in set(command_keys(args)):
            c[k] += 1
    return c


# -- py-spy ----------------------------------------------------------------------------

_FRAME = re.compile(r"^(?P<fn>.+?) \((?P<file>[^:()]+)(?::(?P<line>\d+))?\)$")


def frame_parts(frame: str) -> tuple[str, str]:
    """``pass_ (fanout/_celery/tasks.py:88)`` -> ("pass_", "fanout/_celery/tasks.py")."""
    m = _FRAME.match(frame.strip())
    if not m:
        return frame.strip(), ""
    return m["fn"], m["file"]


def _module(path: str) -> str | None:
    """``/x/y/fanout/_redis/store.py`` -> ``fanout._redis.store``; None outside fanout."""
    parts = path.replace("\\", "/").split("/")
    if "fanout" not in parts:
        return None
    i = len(parts) - 1 - parts[::-1].index("fanout")
    mod = parts[i:]
    if not mod[-1].endswith(".py"):
        return None
    mod[-1] = mod[-1][:-3]
    if mod[-1] == "__init__":
        mod = mod[:-1]
    return ".".join(mod)


#: Where a sample's leaf is, by the leaf frame's file: the category of the time.
LEAF_CATEGORIES = (
    ("redis/", "redis-py (socket wait, parse)"),
    ("kombu/", "kombu (publish, ack)"),
    ("amqp/", "kombu (publish, ack)"),
    ("celery/", "celery (task tracing)"),
    ("billiard/", "billiard (pool IPC)"),
    ("json/", "json"),
    ("socket.py", "socket"),
    ("selectors.py", "socket"),
    ("logging/", "logging"),
    ("fanout/", "fanout (own Python)"),
)


def leaf_category(frame: str) -> str:
    _, path = frame_parts(frame)
    for needle, name in LEAF_CATEGORIES:
        if needle in path:
            return name
    return "other"


@dataclass
class Profile:
    samples: int = 0
    #: fanout function -> samples in which it is on the stack (inclusive, once per stack)
    inclusive: Counter[str] = field(default_factory=Counter)
    #: innermost fanout function -> samples (what fanout code was running or waiting on)
    innermost: Counter[str] = field(default_factory=Counter)
    #: category of the leaf frame -> samples
    leaf: Counter[str] = field(default_factory=Counter)
    #: innermost fanout function -> leaf category -> samples
    innermost_leaf: dict[str, Counter[str]] = field(default_factory=dict)


def fold_stacks(lines: Iterable[str], profile: Profile | None = None) -> Profile:
    """Add py-spy ``--format raw`` lines (``root;...;leaf COUNT``, root first) to a
    profile. Frames outside fanout count toward the leaf categories only."""
    p = profile or Profile()
    for line in lines:
        line = line.rstrip("\n")
        if not line.strip():
            continue
        stack_text, _, count_text = line.rpartition(" ")
        try:
            count = int(count_text)
        except ValueError:
            continue
        frames = stack_text.split(";")
        p.samples += count
        seen: set[str] = set()
        inner = None
        for fr in frames:
            fn, path = frame_parts(fr)
            mod = _module(path)
            if mod is None:
                continue
            name = f"{mod}.{fn}"
            inner = name
            if name not in seen:
                seen.add(name)
                p.inclusive[name] += count
        cat = leaf_category(frames[-1])
        p.leaf[cat] += count
        if inner is not None:
            p.innermost[inner] += count
            p.innermost_leaf.setdefault(inner, Counter())[cat] += count
    return p


# -- spread ----------------------------------------------------------------------------


def spread(values: Iterable[float]) -> dict[str, float]:
    vals = [float(v) for v in values]
    if not vals:
        return {"median": float("nan"), "min": float("nan"), "max": float("nan")}
    return {"median": statistics.median(vals), "min": min(vals), "max": max(vals)}


def fmt_spread(s: Mapping[str, float], digits: int = 1, unit: str = "") -> str:
    return f"{s['median']:,.{digits}f}{unit} [{s['min']:,.{digits}f}–{s['max']:,.{digits}f}]"
