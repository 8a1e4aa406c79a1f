"""Compare fanout across source trees (commits) in one run: workload A (the seed
fan-out) for fanout and for hand-written Celery, at one N, repeated, with the trees
interleaved (T1 T2 T1 T2 ...) so machine drift hits them alike.

    git worktree add /tmp/before <commit>
    .venv/bin/python -m bench.compare_trees --n 10000 --reps 2 \\
        --tree before=/tmp/before --tree after=. --tree after-nometrics=.@BENCH_METRICS=0

Each repetition of each tree runs that tree's own ``python -m bench --workloads A
--systems fanout,celery --reps 1`` (its own fanout and its own bench code, from its
directory), so a tree is measured as it was; ``@K=V,K2=V2`` after a tree's path sets
environment variables for its runs (the same tree with a setting changed). The figure is the fanout ÷ Celery wall
time ratio of each repetition (paired within the repetition), summarized per tree as
median [min–max], and the change of that ratio between trees.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


def run_tree(path: Path, n: int, env: dict[str, str] | None = None) -> dict[str, float]:
    out = Path(tempfile.mkdtemp(prefix="fanout-bench-"))
    cmd = [sys.executable, "-m", "bench", "--workloads", "A", "--n", str(n),
           "--systems", "fanout,celery", "--reps", "1", "--out", str(out)]
    import os

    res = subprocess.run(cmd, cwd=path, capture_output=True, text=True,
                         env={**os.environ, **(env or {})})
    data: dict[str, Any] = json.loads((out / "latest.json").read_text()) if (
        out / "latest.json").exists() else {"results": []}
    rows = {r["system"]: r for r in data["results"]
            if r.get("ok") and r.get("workload") == "A" and r.get("n") == n}
    if "fanout" not in rows or "celery" not in rows:
        raise RuntimeError(f"bench in {path} gave no result:\n{res.stdout[-2000:]}\n{res.stderr[-2000:]}")
    fo, ce = rows["fanout"], rows["celery"]
    # CPU seconds (workers + redis-server) hold still where wall time does not: on a
    # shared machine a run's wall time is its CPU time over the share of cores it got.
    return {"fanout_s": fo["wall_s"], "celery_s": ce["wall_s"],
            "ratio": fo["wall_s"] / ce["wall_s"],
            "cpu_ratio": fo["cpu_s"] / ce["cpu_s"] if ce.get("cpu_s") else float("nan")}


def summary(values: list[float]) -> str:
    return f"{statistics.median(values):.3f} [{min(values):.3f}–{max(values):.3f}]"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.compare_trees", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=10000)
    p.add_argument("--reps", type=int, default=2)
    p.add_argument("--tree", action="append", required=True, metavar="LABEL=PATH")
    args = p.parse_args(argv)
    trees: list[tuple[str, Path, dict[str, str]]] = []
    for t in args.tree:
        label, _, rest = t.partition("=")
        where, _, env_text = rest.partition("@")
        env = dict(kv.split("=", 1) for kv in env_text.split(",") if kv)
        trees.append((label, Path(where).resolve(), env))
    got: dict[str, list[dict[str, float]]] = {label: [] for label, _, _ in trees}
    t0 = time.monotonic()
    for rep in range(args.reps):
        order = trees if rep % 2 == 0 else list(reversed(trees))
        for label, path, env in order:
            r = run_tree(path, args.n, env)
            got[label].append(r)
            print(f"[compare] rep {rep + 1} {label}: fanout {r['fanout_s']:.1f} s, "
                  f"celery {r['celery_s']:.1f} s, ratio {r['ratio']:.3f}, "
                  f"CPU ratio {r['cpu_ratio']:.3f}", file=sys.stderr)
    lines = [f"Workload A, N = {args.n}, {args.reps} repetition(s) per tree, interleaved; "
             f"{(time.monotonic() - t0) / 60:.1f} min.", "",
             "| tree | fanout (s) | Celery (s) | fanout ÷ Celery | CPU-s fanout ÷ Celery |",
             "| --- | --- | --- | --- | --- |"]
    for label, path, env in trees:
        rows = got[label]
        shown = f"{path}" + (f" with {env}" if env else "")
        lines.append(f"| {label} (`{shown}`) | {summary([r['fanout_s'] for r in rows])} | "
                     f"{summary([r['celery_s'] for r in rows])} | {summary([r['ratio'] for r in rows])} | "
                     f"{summary([r['cpu_ratio'] for r in rows])} |")
    base = statistics.median(r["ratio"] for r in got[trees[0][0]])
    for label, _, _ in trees[1:]:
        other = statistics.median(r["ratio"] for r in got[label])
        lines.append(f"\n{label} against {trees[0][0]}: the ratio changes by "
                     f"{(other / base - 1) * 100:+.1f} %.")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
