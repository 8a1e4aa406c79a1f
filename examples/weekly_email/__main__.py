"""Run the seed workflow end to end and print what happened.

With no ``FANOUT_REDIS_URL`` it runs embedded: an in-process broker, worker and
in-memory Redis-compatible store.  With ``FANOUT_REDIS_URL`` set it keeps its
state in that Redis and uses ``CELERY_BROKER_URL``, else the next database of the
same server, as the broker, with a worker in this process.
"""

from __future__ import annotations

import os
import sys
import time

from examples.weekly_email.app import app, client, load_users
from fanout.embedded import start_embedded_worker


def main() -> int:
    where = os.environ.get("FANOUT_REDIS_URL") or "embedded (in-process broker, worker and store)"
    print(f"fanout example: weekly activity emails -- using {where}")
    with start_embedded_worker(app):
        run_id = client.invoke(load_users)
        print(f"invoked weekly-activity-load-users (its cron is '0 12 * * 5'): run {run_id}")
        deadline = time.monotonic() + 60
        loader = client.get_run(run_id)
        while time.monotonic() < deadline and not (loader and loader.done):
            time.sleep(0.05)
            loader = client.get_run(run_id)
        if loader is None or loader.status != "completed":
            print(f"loader did not complete: {loader}")
            return 1
        sent = loader.steps[-1].output
        children = []
        while time.monotonic() < deadline:
            children = [r for e in sent for r in client.list_runs(event_id=e)]
            if len(children) == len(sent) and all(r.done for r in children):
                break
            time.sleep(0.05)
    print(f"\nrun {loader.run_id}  {loader.fn_id}  {loader.status}  output={loader.output}")
    for s in loader.steps:
        print(f"    step {s.step_id:<24} {s.status:<10} attempts={s.attempts}")
    print(f"\n{len(children)} runs started by its events:")
    for r in sorted(children, key=lambda r: r.output or "" and r.run_id):
        print(f"run {r.run_id}  {r.fn_id}  {r.status}  parent={r.parent_run_id}")
        for s in r.steps:
            print(f"    step {s.step_id:<24} {s.status:<10} output={s.output}")
    ok = len(children) == len(sent) and all(r.status == "completed" for r in children)
    print("\nall runs completed" if ok else "\nsome runs did not complete")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
