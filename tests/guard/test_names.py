"""Guard rails: names that live outside the code stay as they are.

Public import paths, pickle paths of errors and of the beat schedule, Celery task
and queue names, logger names, the console entry point and the Lua script hashes.
A restructure of the package must leave every one of them unchanged.
"""

from __future__ import annotations

import hashlib
import importlib
import os
import pickle
import re
from pathlib import Path

import pytest
from celery import Celery

import fanout
import fanout.django
import fanout.embedded
import fanout.metrics
import fanout.testing
import fanout.tracing

ROOT = Path(__file__).resolve().parents[2]

# The context and step names are inngest-py's: Context / Step / Group for an async def
# handler, ContextSync / StepSync / GroupSync for a def one.
PUBLIC_ALL = [
    "Batch", "BulkJob", "BulkQuery", "Cancel", "Concurrency", "ConfigError", "Context", "ContextSync", "Debounce",
    "DecryptionError", "DeployCheck", "Event", "EventError", "ExpressionError", "Fanout",
    "FanoutError",
    "Group", "GroupSync", "InvokeError", "Middleware", "MiddlewareError", "MiddlewareSync",
    "NestedStepError", "NonDeterminismError", "NonRetriableError", "ParallelMode",
    "Priority", "PublishError", "PydanticSerializer", "RateLimit", "RetryAfterError",
    "RunInfo", "SendEventsResult", "Singleton", "Step", "StepError", "StepInfo", "StepSync",
    "Throttle", "Timeouts", "TransformOutputResult", "TriggerCron", "TriggerEvent",
    "__version__", "check_deploy",
]

# Names replaced in a release: each still resolves, with a DeprecationWarning naming
# what to write instead, for at least one minor release (then it moves out of here).
DEPRECATED = {"AsyncContext": "fanout.Context"}

PUBLIC_MODULES = {
    "fanout.testing": ["RunResult", "embedded_celery", "run_function", "run_function_async",
                       "run_of", "wait_run", "worker"],
    "fanout.tracing": ["instrument", "is_instrumented", "uninstrument"],
    "fanout.embedded": ["embedded_celery", "memory_redis", "start_embedded_worker"],
    "fanout.django": ["client", "emit", "send", "sweep"],
    "fanout.http": ["AsgiIngestApp", "Grant", "IngestApp", "IngestKeys", "KeyInfo", "KeyLimits",
                    "NewKey", "Server", "Webhook", "asgi_app", "hash_key", "ingest_app", "serve", "sign"],
    "fanout.django.ingest": ["ingest_view"],
    "fanout.metrics": ["MetricsSnapshot", "collector", "generate", "instrument_otel", "register", "snapshot",
                       "wsgi_app"],
}


def _public(mod: object) -> list[str]:
    names = getattr(mod, "__all__", None)
    if names is None:
        names = [n for n in vars(mod) if not n.startswith("_")]
    return sorted(names)


def test_top_level_all() -> None:
    assert fanout.__all__ == PUBLIC_ALL
    for name in PUBLIC_ALL:
        assert hasattr(fanout, name), name


@pytest.mark.parametrize("name", sorted(DEPRECATED))
def test_deprecated_names_warn_and_resolve(name: str) -> None:
    assert name not in fanout.__all__
    new = DEPRECATED[name]
    with pytest.warns(DeprecationWarning, match=re.escape(new)):
        value = getattr(fanout, name)
    assert value is getattr(fanout, new.removeprefix("fanout."))
    with pytest.raises(AttributeError, match="no attribute 'NoSuchName'"):
        fanout.NoSuchName  # noqa: B018


def test_public_submodules() -> None:
    for modname, names in PUBLIC_MODULES.items():
        mod = importlib.import_module(modname)
        for n in names:
            assert callable(getattr(mod, n)), f"{modname}.{n}"
    for modname in ("fanout.testing", "fanout.django", "fanout.http", "fanout.django.ingest",
                    "fanout.metrics"):
        assert _public(importlib.import_module(modname)) == PUBLIC_MODULES[modname]


ERRORS = [
    fanout.FanoutError("boom"),
    fanout.ConfigError("bad config"),
    fanout.EventError("bad event"),
    fanout.ExpressionError("bad expr"),
    fanout.PublishError("no broker"),
    fanout.NonRetriableError("stop"),
    fanout.InvokeError("child failed"),
    fanout.RetryAfterError("later", 30),
    fanout.NestedStepError("nested"),
    fanout.NonDeterminismError("changed"),
]


@pytest.mark.parametrize("err", ERRORS, ids=lambda e: type(e).__name__)
def test_error_pickle_round_trip(err: Exception) -> None:
    data = pickle.dumps(err)
    assert b"fanout._errors" in data
    back = pickle.loads(data)
    assert type(back) is type(err)
    assert str(back) == str(err)
    assert type(err).__module__ == "fanout._errors"


def test_step_error_pickle_round_trip() -> None:
    err = fanout.StepError("charge", "ValueError", "card declined")
    back = pickle.loads(pickle.dumps(err))
    assert type(back) is fanout.StepError and str(back) == str(err)
    assert type(err).__module__ == "fanout._errors"


def test_beat_schedule_pickle_path() -> None:
    from fanout._core.schedule import CronSchedule
    from fanout._cron import BeatSchedule

    sched = BeatSchedule([CronSchedule.parse("*/5 * * * *")], max_interval=10)
    data = pickle.dumps(sched)
    assert b"fanout._cron" in data and b"_revive" in data
    back = pickle.loads(data)
    assert back == sched
    assert importlib.import_module("fanout._cron").BeatSchedule is type(back)


def _app() -> tuple[Celery, fanout.Fanout]:
    app = Celery("guard-names", broker="memory://", backend=None)
    app.conf.update(task_serializer="json", result_serializer="json", accept_content=["json"])
    client = fanout.Fanout("guard", celery=app, redis_url="memory://guard-names")

    @client.create_function(fn_id="tick", trigger=fanout.TriggerCron(cron="* * * * *"))
    def tick(ctx: fanout.ContextSync) -> None:
        return None

    return app, client


def test_celery_task_and_queue_names() -> None:
    app, _client = _app()
    names = sorted(n for n in app.tasks if n.startswith("fanout"))
    assert names == ["fanout.bulk", "fanout.cron", "fanout.route", "fanout.step"]
    queues = {q.name: (q.exchange.name, q.exchange.type, q.routing_key)
              for q in app.conf.task_queues or []}
    assert queues["fanout.events"] == ("fanout.events", "direct", "fanout.route")


def test_logger_names() -> None:
    found = set()
    for path in (ROOT / "fanout").rglob("*.py"):
        found |= set(re.findall(r"getLogger\(\s*\"([^\"]+)\"", path.read_text("utf-8")))
    assert found == {"fanout", "fanout.run", "fanout.runs", "fanout.failures", "fanout.dashboard",
                     "fanout.django", "fanout.http", "fanout.versioning"}


def test_console_entry_point() -> None:
    text = (ROOT / "pyproject.toml").read_text()
    scripts = text.split("[project.scripts]", 1)[1].split("\n[", 1)[0]
    target = re.search(r'^fanout\s*=\s*"([^"]+)"', scripts, re.M).group(1)  # type: ignore[union-attr]
    modname, func = target.split(":")
    assert callable(getattr(importlib.import_module(modname), func))
    assert target == "fanout._cli:main"


def _script_hashes() -> dict[str, str]:
    """The SHA1 of each script's code: its lines without the comment lines, so a
    comment may change freely (the store drops them too before loading a script)."""
    from fanout._redis.scripts import is_comment

    out = {}
    lua_dir = next(p for p in (ROOT / "fanout").rglob("*.lua")).parent
    for path in sorted(lua_dir.glob("*.lua")):
        code = "".join(line for line in path.read_text("utf-8").splitlines(keepends=True)
                       if not is_comment(line))
        out[path.stem] = hashlib.sha1(code.encode()).hexdigest()
    return out


def test_the_script_hashes_ignore_comments(tmp_path: Path) -> None:
    from fanout._redis.scripts import is_comment

    assert is_comment("-- a note\n") and is_comment("  -- indented\n")
    assert not is_comment("--#include _metrics\n")
    assert not is_comment("local x = 1 -- trailing\n")


def test_lua_script_hashes() -> None:
    """A deliberate change to a script is recorded with ``FANOUT_WRITE_TRACE=1``."""
    if os.environ.get("FANOUT_WRITE_TRACE"):
        (Path(__file__).parent / "lua_sha1.txt").write_text(
            "".join(f"{name} {sha}\n" for name, sha in _script_hashes().items()))
    expected = dict(
        line.split() for line in (Path(__file__).parent / "lua_sha1.txt").read_text().splitlines()
        if line.strip()
    )
    assert _script_hashes() == expected
