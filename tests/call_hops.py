"""How many times the call path from ``send_sync`` to a saved step enters
``fanout/_celery/runtime.py``, for any source tree.

    .venv/bin/python -m tests.call_hops [TREE]

Runs a one-step function on the embedded worker (memory store, worker threads in
this process) with a profiler on every thread, from ``client.send_sync`` until the
first call that writes a step record (``Store.save_step``, ``end_pass`` or
``finish_run``).  A *hop* is a call from code outside ``runtime.py`` into a function
defined there; reads of the ``Runtime.store`` property are counted apart (state,
not a detour), as are the getters of it the runtime hands to the objects it holds.
Prints the hops in the order they happened.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

RUNTIME = str(Path("_celery") / "runtime.py")
STORE = (str(Path("_redis") / "store.py"), str(Path("_redis") / "run_passes.py"))
WRITES = {"save_step", "end_pass", "finish_run"}


def measure() -> tuple[list[str], int]:
    import fanout
    import fanout.testing

    app = fanout.testing.embedded_celery(f"hops-{uuid.uuid4().hex[:6]}")
    client = fanout.Fanout("hops", celery=app, redis_url=f"memory://hops-{uuid.uuid4().hex}")

    @client.create_function(fn_id="one", trigger=fanout.TriggerEvent(event="hops/one"))
    def one(ctx: Any) -> int:
        return int(ctx.step.run("only", lambda: 1))

    hops: list[str] = []
    reads = [0]
    done = threading.Event()
    lock = threading.Lock()

    def profile(frame: Any, event: str, _arg: Any) -> None:
        if event != "call" or done.is_set():
            return
        code = frame.f_code
        where = code.co_filename
        if where.endswith(RUNTIME):
            caller = frame.f_back
            if caller is not None and caller.f_code.co_filename.endswith(RUNTIME):
                return
            with lock:
                if code.co_name in ("store", "<lambda>"):  # the property, or a getter of it
                    reads[0] += 1
                else:
                    hops.append(getattr(code, "co_qualname", code.co_name))
        elif where.endswith(STORE) and code.co_name in WRITES:  # the run transitions
            done.set()

    with fanout.testing.worker(app, concurrency=1):
        threading.setprofile(profile)
        sys.setprofile(profile)
        try:
            client.send_sync(fanout.Event(name="hops/one", id=uuid.uuid4().hex))
            deadline = time.monotonic() + 30
            while not done.is_set() and time.monotonic() < deadline:
                time.sleep(0.01)
        finally:
            sys.setprofile(None)
            threading.setprofile(None)  # type: ignore[arg-type]
    if not done.is_set():
        raise RuntimeError("no step was saved within 30 s")
    return hops, reads[0]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.call_hops", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("tree", nargs="?", default=".", help="the source tree holding fanout")
    args = p.parse_args(argv)
    sys.path.insert(0, str(Path(args.tree).resolve()))
    hops, reads = measure()
    print(f"{len(hops)} hop(s) into runtime.py from send_sync to a saved step "
          f"(and {reads} read(s) of Runtime.store):")
    for name in hops:
        print(f"  {name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
