"""Compare fanout across source trees (commits) in one run: workload A (the seed
fan-out) for fanout and for hand-written Celery, at one N, repeated, with the trees
interleaved (T1 T2 T1 T2 ...) so machine drift hits them alike.

    git worktree add /tmp/before <commit>
    .venv/bin/python -m bench.compare_trees --n 10000 --reps 2 \\
        --tree before=/tmp/before --tree after=.

Each repetition of each tree runs that tree's own ``python -m bench --workloads A
--systems fanout,celery --reps 1`` (its own fanout and its own bench code, from its
directory), so a tree is measured as it was. The figure is the fanout ÷ Celery wall
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


def run_tree(path: Path, n: int) -> dict[str, float]:
    out = Path(tempfile.mkdtemp(prefix="fanout-bench-"))
    cmd = [sys.executable, "-m", "bench", "--workloads", "A", "--n", str(n),
           "--systems", "fanout,celery", "--reps", "1", "--out", str(out)]
    res = subprocess.run(cmd, cwd=path, capture_output=True, text=True)
    data: dict[str, Any] = json.loads((out / "latest.json").read_text()) if (
        out / "latest.json").exists() else {"results": []}
    walls = {r["system"]: r["wall_s"] for r in data["results"]
             if r.get("ok") and r.get("workload") == "A" and r.get("n") == n}
    if "fanout" not in walls or "celery" not in walls:
        raise RuntimeError(f"bench in {path} gave no result:\n{res.stdout[-2000:]}\n{res.stderr[-2000:]}")
    return {"fanout_s": walls["fanout"], "celery_s": walls["celery"],
            "ratio": walls["fanout"] / walls["celery"]}


def summary(values: list[float]) -> str:
    return f"{statistics.median(values):.3f} [{min(values):.3f}–{max(values):.3f}]"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.compare_trees", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=10000)
    p.add_argument("--reps", type=int, default=2)
    p.add_argument("--tree", action="append", required=True, metavar="LABEL=PATH")
    args = p.parse_args(argv)
    trees = [(t.split("=", 1)[0], Path(t.split("=", 1)[1]).resolve()) for t in args.tree]
    got: dict[str, list[dict[str, float]]] = {label: [] for label, _ in trees}
    t0 = time.monotonic()
    for rep in range(args.reps):
        order = trees if rep % 2 == 0 else list(reversed(trees))
        for label, path in order:
            r = run_tree(path, args.n)
            got[label].append(r)
            print(f"[compare] rep {rep + 1} {label}: fanout {r['fanout_s']:.1f} s, "
                  f"celery {r['celery_s']:.1f} s, ratio {r['ratio']:.3f}", file=sys.stderr)
    lines = [f"Workload A, N = {args.n}, {args.reps} repetition(s) per tree, interleaved; "
             f"{(time.monotonic() - t0) / 60:.1f} min.", "",
             "| tree | fanout (s) | Celery (s) | fanout ÷ Celery |", "| --- | --- | --- | --- |"]
    for label, path in trees:
        rows = got[label]
        lines.append(f"| {label} (`{path}`) | {summary([r['fanout_s'] for r in rows])} | "
                     f"{summary([r['celery_s'] for r in rows])} | {summary([r['ratio'] for r in rows])} |")
    base = statistics.median(r["ratio"] for r in got[trees[0][0]])
    for label, _ in trees[1:]:
        other = statistics.median(r["ratio"] for r in got[label])
        lines.append(f"\n{label} against {trees[0][0]}: the ratio changes by "
                     f"{(other / base - 1) * 100:+.1f} %.")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
