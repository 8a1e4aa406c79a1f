"""The backlog series: runs in flight at the end of each bucket, walked back from the
cumulative counters kept at the last roll (pure: no Redis)."""

from __future__ import annotations

from fanout._ops.timeseries import FnSeries, Point, _backlogs, in_flight


def test_in_flight_is_started_minus_every_ended_status() -> None:
    counts = {"c|runs_started|a|f": 10, "c|runs_ended|a|f|completed": 6,
              "c|runs_ended|a|f|failed": 1, "c|runs_started|a|g": 2, "c|step_failures|a|f": 9,
              "h|run_duration|a|f|0.5": 3}
    assert in_flight(counts) == {"a:f": 3, "a:g": 2}


def test_walks_back_bucket_by_bucket_and_leaves_unrolled_buckets_empty() -> None:
    s = FnSeries("a:f", [Point(0, started=2), Point(60, started=3, completed=1),
                         Point(120, started=1, failed=2), Point(180)])
    _backlogs({"a:f": s}, {"c|runs_started|a|f": 6, "c|runs_ended|a|f|completed": 1,
                           "c|runs_ended|a|f|failed": 2}, rolled_until=180)
    assert [p.backlog for p in s.points] == [2, 4, 3, None]
    assert s.backlog_now == 3 and s.peak_backlog == 4
