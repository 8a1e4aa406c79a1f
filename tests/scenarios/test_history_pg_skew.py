"""A run ended by a worker whose clock is ten minutes behind is copied to the history
store all the same: its end is scored in the ended feed before runs the copier took
long ago, and the copier takes whatever the feed holds, whatever its score."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests import pg_support

pg_support.require_postgres()

import fanout  # noqa: E402
from fanout._postgres.copier import Copier  # noqa: E402
from fanout._postgres.store import PgHistory  # noqa: E402
from tests.support import Worker, make_app, redis_for, run_of, wait_run  # noqa: E402

PG_URL = f"{pg_support.SERVER}/fanout_test_{os.getpid()}_skew"
BEHIND = float(os.environ.get("FANOUT_TEST_CLOCK_BEHIND") or 0)
r = redis_for(__name__)
app, client = make_app(__name__, app_id="hps")  # no history store: the copier runs here

if BEHIND:  # in the late worker: the store's clock (a run's end time) runs behind
    import fanout._redis.run_passes as _run_passes
    import fanout._redis.store as _redis_store

    class _LateClock:
        def __getattr__(self, name: str) -> Any:
            return getattr(time, name)

        @staticmethod
        def time() -> float:
            return time.time() - BEHIND

    # The run transitions (finish_run writes the end time) and the rest of the store.
    _redis_store.time = _run_passes.time = _LateClock()  # type: ignore[assignment]


@client.create_function(fn_id="job", trigger=fanout.TriggerEvent(event="hps/job"))
def job(ctx: fanout.ContextSync) -> int:
    return int(ctx.event.data["n"])


@pytest.fixture(scope="module", autouse=True)
def _database() -> Iterator[None]:
    with pg_support.private_database(PG_URL):
        yield


def _run(worker_name: str, log_dir: Path, ns: range, env: dict[str, str]) -> list[str]:
    w = Worker(__name__, name=worker_name, log_dir=log_dir, env=env)
    try:
        ids = client.send_sync([fanout.Event(name="hps/job", data={"n": n}) for n in ns])
        runs = [run_of(client, eid, "job") for eid in ids]
        for rid in runs:
            assert wait_run(client, rid).status == "completed"
        return runs
    finally:
        w.stop()


def test_a_run_ended_on_a_late_clock_is_copied(clean_db: Any, log_dir: Path) -> None:
    copier = Copier(lambda: client.runtime.store, PgHistory(PG_URL), lease=1.0)
    try:
        on_time = _run("on-time", log_dir, range(5), {})
        assert copier.drain().copied == 5
        assert sorted(pg_support.run_ids(PG_URL)) == sorted(on_time)

        late = _run("late", log_dir, range(5, 10), {"FANOUT_TEST_CLOCK_BEHIND": "600"})
        scores = [r.zscore("fanout:idx:ended", rid) for rid in late]
        # Ended on the late clock: scored ten minutes before the runs already copied.
        assert all(s is not None and s < (time.time() - 500) * 1000 for s in scores)
        assert copier.drain().copied == 5
        rows = pg_support.run_ids(PG_URL)
        assert len(rows) == len(set(rows)) == 10
        assert set(rows) == set(on_time) | set(late)
        assert r.zcard("fanout:idx:ended") == 0
    finally:
        copier.stop()
