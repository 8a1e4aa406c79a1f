"""A copier process for tests/scenarios/test_history_pg_killed.py, killed by SIGKILL
at a chosen point of its first batch.

    python -m tests.pg_copier_child REDIS_URL PG_URL BATCH {in-transaction|after-commit|none}

``in-transaction``: dies halfway through writing the batch's rows, before the commit;
``after-commit``: dies after the commit, before the batch leaves the feed; ``none``: copies
until the feed is caught up and prints how many runs it took from it.
"""

from __future__ import annotations

import os
import signal
import sys
from typing import Any

import fanout._postgres.store as pg_store
from fanout._postgres.copier import Copier
from fanout._postgres.store import PgHistory
from fanout._redis.ended_feed import EndedFeed
from fanout._redis.store import Store, connect


def main() -> None:
    redis_url, pg_url, batch, where = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    store = Store(connect(redis_url))
    if where == "in-transaction":
        real = pg_store.row_of
        seen = [0]

        def row_then_die(run_id: str, rec: Any) -> Any:
            seen[0] += 1
            if seen[0] > batch // 2:
                os.kill(os.getpid(), signal.SIGKILL)
            return real(run_id, rec)

        pg_store.row_of = row_then_die  # type: ignore[assignment]
    elif where == "after-commit":
        def die(self: EndedFeed, position: Any) -> None:
            os.kill(os.getpid(), signal.SIGKILL)

        EndedFeed.done = die  # type: ignore[method-assign]
    copier = Copier(lambda: store, PgHistory(pg_url), batch=batch, lease=1.0,
                    owner=f"child-{os.getpid()}")
    print(copier.drain().copied, flush=True)


if __name__ == "__main__":
    main()
