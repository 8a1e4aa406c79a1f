"""The bookkeeping of ``bench --scale``, ``--cluster`` and ``--profile`` (pure)."""

from __future__ import annotations

from bench import accounting as acc


def test_key_family_groups_ids_and_keeps_names() -> None:
    assert acc.key_family("fanout:run:{01JABC}") == "fanout:run:{*}"
    assert acc.key_family("fanout:ev:{e-1}:runs") == "fanout:ev:{*}:runs"
    assert acc.key_family("fanout:metrics:roll:m:28000000") == "fanout:metrics:roll:m:#"
    assert acc.key_family("fanout:timers") == "fanout:timers"
    assert acc.key_family("fanout:idx:fn:bench:item") == "fanout:idx:fn:bench:item"
    assert acc.key_family("x:" + "ab12" * 8) == "x:#"


def test_bound_of_matches_wildcards_but_not_hash_tags() -> None:
    assert acc.bound_of("fanout:run:{*}").startswith("TTL")
    assert "pruned" in acc.bound_of("fanout:idx:fn:bench:item")
    assert acc.bound_of("fanout:metrics:roll:h:#").startswith("rollup")
    assert acc.bound_of("fanout:runx:{*}") == "unknown"
    assert acc.bound_of("bench:done") == "unknown"


def test_growth_keeps_families_that_grow_with_n() -> None:
    before = {"fanout:timers": acc.Family(keys=1, sampled=1, sampled_bytes=100, elements=5)}
    after = {
        "fanout:timers": acc.Family(keys=1, sampled=1, sampled_bytes=120, elements=6),
        "fanout:run:{*}": acc.Family(keys=1000, sampled=10, sampled_bytes=20_000),
        "fanout:idx:runs": acc.Family(keys=1, sampled=1, sampled_bytes=90_000, elements=1000),
    }
    rows = acc.growth(before, after, n=1000)
    assert [r[0] for r in rows] == ["fanout:run:{*}", "fanout:idx:runs"]  # bytes, largest first
    _, keys_per_run, _, bytes_per_run = rows[0]
    assert (keys_per_run, bytes_per_run) == (1.0, 2000.0)
    assert rows[1][1:3] == (0.001, 1.0)  # one new key, one element per run


def test_commandstats_calls_and_delta() -> None:
    info = {"cmdstat_evalsha": {"calls": 10, "usec": 5}, "cmdstat_info": {"calls": 3},
            "errorstat_ERR": {"count": 1}, "cmdstat_get": "calls=7,usec=1"}
    calls = acc.commandstats_calls(info)
    assert calls == {"evalsha": 10, "info": 3, "get": 7}
    later = {"evalsha": 25, "info": 5, "get": 7, "zadd": 4}
    assert acc.delta(calls, later, {"info": 2}) == {"evalsha": 15, "zadd": 4}


def test_busiest_node_against_the_fair_share() -> None:
    name, share, factor = acc.busiest_vs_fair({"a": 43, "b": 28.5, "c": 28.5})
    assert name == "a"
    assert round(share, 2) == 0.43
    assert round(factor, 2) == 1.29


def test_parse_monitor_line_unquotes_arguments() -> None:
    line = r'1700000000.123456 [0 127.0.0.1:5555] "EVALSHA" "ab" "2" "fanout:run:{r1}" "fanout:timers" "a \"q\" b" "\x00\n"'
    src, args = acc.parse_monitor_line(line)  # type: ignore[misc]
    assert src == "client"
    assert args == ["EVALSHA", "ab", "2", "fanout:run:{r1}", "fanout:timers", 'a "q" b', "\x00\n"]
    assert acc.command_keys(args) == ["fanout:run:{r1}", "fanout:timers"]
    lua = acc.parse_monitor_line('1700000000.1 [0 lua] "ZADD" "fanout:timers" "1" "r1"')
    assert lua == ("lua", ["ZADD", "fanout:timers", "1", "r1"])
    assert acc.parse_monitor_line("OK") is None


def test_command_keys_and_key_counts() -> None:
    assert acc.command_keys(["PING"]) == []
    assert acc.command_keys(["DEL", "a", "b"]) == ["a", "b"]
    assert acc.command_keys(["MSET", "a", "1", "b", "2"]) == ["a", "b"]
    assert acc.command_keys(["HGET", "h", "f"]) == ["h"]
    counts = acc.key_counts([["EVAL", "src", "2", "k", "k"], ["GET", "k"], ["INFO"]])
    assert counts == {"k": 2}
    # A run script on a cluster: a shard named after the run key is not a key of its own.
    run, shard = "p:run:{r1}", "p:timers:{T3.7}"
    assert acc.command_keys(["EVALSHA", "ab", "4", run, run, "p:ev:{r1}:runs", run + shard]) \
        == [run, "p:ev:{r1}:runs"]


def test_fold_stacks_attributes_samples_to_fanout_functions() -> None:
    raw = [
        "<module> (celery/bin/worker.py:10);pass_ (/w/fanout/_celery/tasks.py:88);"
        "begin_pass (/w/fanout/_redis/store.py:300);read_response (/v/redis/connection.py:5) 30",
        "<module> (celery/bin/worker.py:10);pass_ (/w/fanout/_celery/tasks.py:88);"
        "publish (/v/kombu/messaging.py:170) 20",
        "<module> (celery/bin/worker.py:10);trace_task (/v/celery/app/trace.py:400) 10",
        "",
    ]
    p = acc.fold_stacks(raw)
    assert p.samples == 60
    assert p.inclusive["fanout._celery.tasks.pass_"] == 50
    assert p.inclusive["fanout._redis.store.begin_pass"] == 30
    assert p.innermost == {"fanout._redis.store.begin_pass": 30, "fanout._celery.tasks.pass_": 20}
    assert p.leaf["redis-py (socket wait, parse)"] == 30
    assert p.leaf["kombu (publish, ack)"] == 20
    assert p.leaf["celery (task tracing)"] == 10
    assert p.innermost_leaf["fanout._celery.tasks.pass_"] == {"kombu (publish, ack)": 20}


def test_fold_stacks_counts_a_recursive_function_once_per_stack() -> None:
    p = acc.fold_stacks(["f (/a/fanout/x.py:1);f (/a/fanout/x.py:2);g (/a/fanout/x.py:3) 4"])
    assert p.inclusive == {"fanout.x.f": 4, "fanout.x.g": 4}


def test_spread() -> None:
    s = acc.spread([3, 1, 2])
    assert s == {"median": 2.0, "min": 1.0, "max": 3.0}
    assert acc.fmt_spread(s, 0) == "2 [1–3]"
