"""The history store's copier killed mid-batch (SIGKILL, once before its transaction
commits and once after the commit but before the batch leaves the ended feed): the
next copier copies what the feed still holds, and every ended run is in PostgreSQL exactly once."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from tests import pg_support

pg_support.require_postgres()

import fanout  # noqa: E402
from tests.support import ROOT, make_app, redis_for, run_of, url_for, wait_run  # noqa: E402

PG_URL = f"{pg_support.SERVER}/fanout_test_{os.getpid()}_killed"
r = redis_for(__name__)
app, client = make_app(__name__, app_id="hpk")  # no history store: the copiers run here


@client.create_function(fn_id="job", trigger=fanout.TriggerEvent(event="hpk/job"))
def job(ctx: fanout.ContextSync) -> int:
    return int(ctx.event.data["n"])


@pytest.fixture(scope="module", autouse=True)
def _database() -> Iterator[None]:
    with pg_support.private_database(PG_URL):
        yield


def _copier(where: str, batch: int) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tests.pg_copier_child", url_for(__name__), PG_URL, str(batch),
         where], cwd=ROOT, capture_output=True, text=True, timeout=120)


def _rows() -> list[str]:
    return pg_support.run_ids(PG_URL)


def test_a_copier_killed_mid_batch_loses_nothing_and_copies_nothing_twice(worker: Any) -> None:
    ids = client.send_sync([fanout.Event(name="hpk/job", data={"n": n}) for n in range(120)])
    runs = [run_of(client, eid, "job") for eid in ids]
    for rid in runs:
        assert wait_run(client, rid).status == "completed"

    died = _copier("in-transaction", 50)
    assert died.returncode == -9, died.stderr
    assert _rows() == []  # the batch never committed
    assert r.zcard("fanout:idx:ended") == 120  # and no run left the feed

    died = _copier("after-commit", 50)
    assert died.returncode == -9, died.stderr
    assert len(_rows()) == 50  # the first batch committed; it is still in the feed
    assert r.zcard("fanout:idx:ended") == 120

    done = _copier("none", 50)  # waits for the dead copier's lease (1 s) to lapse
    assert done.returncode == 0, done.stderr
    assert int(done.stdout.strip()) == 120  # the committed batch again, then the rest
    rows = _rows()
    assert len(rows) == len(set(rows)) == 120
    assert set(rows) == set(runs)
    again = _copier("none", 50)
    assert int(again.stdout.strip()) == 0  # caught up: nothing left to copy
    assert r.zcard("fanout:idx:ended") == 0
