"""The ``fanout`` CLI as a user runs it: ``fanout -A proj ...`` from the directory of a
project laid out as ``proj/__init__.py`` + ``proj/celery.py`` (the client lives in
``proj/celery.py``), against a real ``celery -A proj worker`` subprocess.

Covers which URL each option sets (``--redis`` is fanout's store only, ``--broker``
is Celery's broker, on Redis and on RabbitMQ), what ``send`` says when nothing will
run, and one-line errors with an exit code for bad input to every subcommand.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests import support
from tests.scenarios.test_rabbitmq import Rabbit, rabbit  # noqa: F401  (the fixture)

PROJ_CELERY = '''\
import datetime
import os

from celery import Celery

import fanout

app = Celery("proj")
app.config_from_object("fanout.celeryconfig")
if os.environ.get("PROJ_BROKER_URL"):            # a broker set in the app's own config
    app.conf.broker_url = os.environ["PROJ_BROKER_URL"]
client = fanout.Fanout(app_id="proj", celery=app)


@client.create_function(fn_id="hello", trigger=fanout.TriggerEvent(event="up/hello"))
def hello(ctx: fanout.ContextSync) -> str:
    name = ctx.step.run("a", lambda: ctx.event.data.get("name", "?"))
    return str(ctx.step.run("b", lambda: f"hello {name}"))


@client.create_function(fn_id="hold", trigger=fanout.TriggerEvent(event="up/hold"))
def hold(ctx: fanout.ContextSync) -> str:
    ctx.step.run("first", lambda: 1)
    ctx.step.sleep("nap", "10m")
    return "woke"


@client.create_function(fn_id="picky", trigger=fanout.TriggerEvent(
    event="up/picky", expression="event.data.n > 10"))
def picky(ctx: fanout.ContextSync) -> int:
    return int(ctx.event.data["n"])


@client.create_function(fn_id="approve", trigger=fanout.TriggerEvent(event="up/order"))
def approve(ctx: fanout.ContextSync) -> str:
    got = ctx.step.wait_for_event("approval", event="up/approved", match="data.order",
                                  timeout=datetime.timedelta(minutes=10))
    if got is None:
        return "timed out"
    if got.data.get("ok") is False:
        raise fanout.NonRetriableError("refused")
    return "approved"


@client.create_function(fn_id="fails", trigger=fanout.TriggerEvent(event="up/fail"), retries=0)
def fails(ctx: fanout.ContextSync) -> None:
    ctx.step.run("boom", lambda: 1 / 0)
'''


def _urls(name: str) -> dict[str, str]:
    base = support.base_url()
    broker = support.db_for(f"{__name__}.{name}.broker")
    store = support.db_for(f"{__name__}.{name}.store")
    if store == broker:
        store = broker % 15 + 1
    return {"broker": f"{base}/{broker}", "store": f"{base}/{store}"}


def _clean_env() -> dict[str, str]:
    drop = ("FANOUT_REDIS_URL", "CELERY_BROKER_URL", "FANOUT_APP", "FANOUT_DEBUG",
            "PROJ_BROKER_URL", "PYTHONPATH")
    return {k: v for k, v in os.environ.items() if k not in drop}


class ProjWorker:
    """``celery -A proj worker`` started from the project's directory."""

    def __init__(self, project: Path, env: dict[str, str], log: Path) -> None:
        self.log_path = log
        self._f = open(log, "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "proj", "worker", "--loglevel", "INFO",
             "--concurrency", "2", "--without-gossip", "--without-mingle",
             "--without-heartbeat"],
            cwd=project, env={**_clean_env(), **env}, stdout=self._f, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True,
        )
        deadline = time.monotonic() + 90
        while " ready." not in self.log():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"worker did not start:\n{self.log()[-4000:]}")
            time.sleep(0.1)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        self._f.close()


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    dest = tmp_path_factory.mktemp("cliproj")
    (dest / "proj").mkdir()
    (dest / "proj" / "__init__.py").write_text("")
    (dest / "proj" / "celery.py").write_text(PROJ_CELERY)
    return dest


@pytest.fixture(scope="module")
def urls() -> dict[str, str]:
    found = _urls("redis")
    for url in found.values():
        redis.Redis.from_url(url).flushdb()
    return found


@pytest.fixture(scope="module")
def proj_worker(project: Path, urls: dict[str, str], log_dir: Path) -> Iterator[ProjWorker]:
    w = ProjWorker(project, {"CELERY_BROKER_URL": urls["broker"],
                             "FANOUT_REDIS_URL": urls["store"]}, log_dir / "cliproj-worker.log")
    yield w
    w.stop()


def fanout_cli(project: Path, *args: str, env: dict[str, str] | None = None,
               timeout: float = 120) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).parent / "fanout"
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "fanout"]
    return subprocess.run([*cmd, "-A", "proj", *args], cwd=project, env={**_clean_env(), **(env or {})},
                          capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


def one_line_error(res: subprocess.CompletedProcess[str], code: int, pattern: str) -> None:
    assert res.returncode == code, (res.returncode, res.stdout, res.stderr)
    assert "Traceback" not in res.stderr, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    assert re.search(pattern, lines[0]), lines[0]


# -- which URL each option sets ------------------------------------------------------


def test_redis_option_sets_the_store_only_and_the_broker_stays(
        project: Path, urls: dict[str, str], proj_worker: ProjWorker) -> None:
    """The broker comes from the environment, as for the worker; --redis names the store."""
    res = fanout_cli(project, "--redis", urls["store"], "--json", "send", "up/hello",
                     "--data", '{"name": "Ada"}', "--wait", "60",
                     env={"CELERY_BROKER_URL": urls["broker"]})
    assert res.returncode == 0, res.stdout + res.stderr
    (run,) = json.loads(res.stdout)["runs"]
    assert run["status"] == "completed", run


def test_broker_option_sets_the_broker(
        project: Path, urls: dict[str, str], proj_worker: ProjWorker) -> None:
    res = fanout_cli(project, "--redis", urls["store"], "--broker", urls["broker"], "--json",
                     "send", "up/hello", "--data", '{"name": "Grace"}', "--wait", "60")
    assert res.returncode == 0, res.stdout + res.stderr
    (run,) = json.loads(res.stdout)["runs"]
    assert run["status"] == "completed", run
    # Also after the subcommand, like --redis.
    res = fanout_cli(project, "invoke", "hello", "--redis", urls["store"], "--broker",
                     urls["broker"])
    assert res.returncode == 0, res.stderr


# -- what send says when nothing will run -----------------------------------------------


def test_send_notes_an_event_no_function_is_triggered_by(
        project: Path, urls: dict[str, str], proj_worker: ProjWorker) -> None:
    env = {"CELERY_BROKER_URL": urls["broker"], "FANOUT_REDIS_URL": urls["store"]}
    res = fanout_cli(project, "send", "up/helo", env=env)
    assert res.returncode == 0, res.stderr
    assert re.fullmatch(r"\w+\n", res.stdout), res.stdout       # the event id, still stored
    assert re.search(r"no function is triggered by event 'up/helo' and no run waits for it; "
                     r"declared triggers: up/fail, up/hello, up/hold, up/order, "
                     r"up/picky if event.data.n > 10$", res.stderr.strip()), res.stderr
    waited = fanout_cli(project, "send", "up/helo", "--wait", "30", env=env)
    one_line_error(waited, 1, r"^fanout send: error: event \w+ was stored, but no function is "
                              r"triggered by event 'up/helo' and no run waits for it; declared "
                              r"triggers: up/fail, up/hello")


def test_send_notes_an_event_no_trigger_condition_accepts(
        project: Path, urls: dict[str, str], proj_worker: ProjWorker) -> None:
    env = {"CELERY_BROKER_URL": urls["broker"], "FANOUT_REDIS_URL": urls["store"]}
    res = fanout_cli(project, "send", "up/picky", "--data", '{"n": 1}', env=env)
    assert res.returncode == 0, res.stderr
    assert ("note: no trigger's condition accepts this event: proj:picky if event.data.n > 10"
            in res.stderr), res.stderr
    waited = fanout_cli(project, "send", "up/picky", "--data", '{"n": 2}', "--wait", "30", env=env)
    one_line_error(waited, 1, r"was stored, but no trigger's condition accepts this event")
    ok = fanout_cli(project, "--json", "send", "up/picky", "--data", '{"n": 11}', "--wait", "60",
                    env=env)
    assert ok.returncode == 0 and ok.stderr == "", ok.stderr
    assert [r["status"] for r in json.loads(ok.stdout)["runs"]] == ["completed"]


def test_send_wait_without_a_worker_on_the_broker_fails_with_a_hint(
        project: Path, urls: dict[str, str], proj_worker: ProjWorker) -> None:
    used = {int(u.rsplit("/", 1)[1]) for u in urls.values()}
    db = support.db_for(f"{__name__}.nobody")
    while db in used:
        db = db % 15 + 1
    nobody = f"{support.base_url()}/{db}"  # no worker reads this broker
    redis.Redis.from_url(nobody).flushdb()
    res = fanout_cli(project, "--redis", urls["store"], "--broker", nobody, "send", "up/hello",
                     "--wait", "2")
    one_line_error(res, 1, r"no worker picked up event \w+ within 2 s: is a worker running on "
                           r"broker " + re.escape(nobody) + r"\?")
    redis.Redis.from_url(nobody).flushdb()   # the message nobody read


def test_send_notes_an_id_already_stored(
        project: Path, urls: dict[str, str], proj_worker: ProjWorker) -> None:
    env = {"CELERY_BROKER_URL": urls["broker"], "FANOUT_REDIS_URL": urls["store"]}
    eid = f"order-{uuid.uuid4().hex[:8]}"
    first = fanout_cli(project, "send", "up/hello", "--id", eid, "--data", '{"name": "one"}',
                       "--wait", "60", env=env)
    assert first.returncode == 0 and "already stored" not in first.stderr, first.stderr
    again = fanout_cli(project, "send", "up/hello", "--id", eid, "--data", '{"name": "two"}',
                       env=env)
    assert again.returncode == 0, again.stderr
    assert again.stdout.strip() == eid
    assert (f"event id '{eid}' was already stored: the data given was ignored; the earlier "
            "event stands") in again.stderr, again.stderr
    as_json = json.loads(fanout_cli(project, "--json", "send", "up/hello", "--id", eid,
                                    env=env).stdout)
    assert as_json["event_id"] == eid and "already stored" in as_json["notes"][0]
    shown = json.loads(fanout_cli(project, "--json", "event", eid, env=env).stdout)
    assert shown["data"] == {"name": "one"} and len(shown["runs"]) == 1


# -- one-line errors ----------------------------------------------------------------------


def test_every_subcommand_gives_one_line_errors(
        project: Path, urls: dict[str, str], proj_worker: ProjWorker) -> None:
    env = {"CELERY_BROKER_URL": urls["broker"], "FANOUT_REDIS_URL": urls["store"]}
    sent = json.loads(fanout_cli(project, "--json", "send", "up/hello", "--wait", "60",
                                 env=env).stdout)
    (done,) = sent["runs"]
    rid = done["run_id"]
    cases: list[tuple[list[str], int, str]] = [
        (["send", "up/hello", "--data", "{oops"], 2, r"argument --data: not valid JSON"),
        (["send", "up/hello", "--data", "[1]"], 2, r"--data: must be a JSON object"),
        (["send", "up/hello", "--wait", "-1"], 2, r"--wait: must be a number of seconds above 0"),
        (["send", ""], 2, r"^fanout send: error: invalid event: name: event name is empty"),
        (["send", "up/a\nb"], 2, r"event name contains a newline \(U\+000A\) at position 4"),
        (["send", "fanout/x"], 2, r"reserved for fanout's own events"),
        (["send", "up/" + "n" * 400], 2, r"\.\.\. \(403 characters\): name: event name is 403 "
                                      r"characters long; the limit is 256$"),
        (["send", "up/hello", "--id", "i" * 300], 2, r"event id must be 1 to 256 characters"),
        (["send", "up/hello", "--user", "[1]"], 2, r"--user: must be a JSON object"),
        (["send", "up/hello", "--wait", "soon"], 2, r"--wait: must be a number of seconds"),
        (["invoke", "nope"], 1, r"^fanout invoke: error: no function 'nope' in proj "
                                r"\(functions: proj:approve, proj:fails, proj:hello, proj:hold, "
                                r"proj:picky\)"),
        (["invoke", "hello", "--data", "[1]"], 2, r"--data: must be a JSON object"),
        (["invoke", "hello", "--data", "{oops"], 2, r"argument --data: not valid JSON"),
        (["runs", "--fn", "nope"], 1, r"no function 'nope'"),
        (["runs", "--since", "last tuesday"], 2, r"invalid time 'last tuesday'"),
        (["runs", "--status", "bogus"], 2, r"^fanout runs: error: argument --status: unknown run "
                                           r"status 'bogus': use one of .*, 'active' or 'paused'"),
        (["runs", "--status", "completed,nope"], 2, r"unknown run status 'nope'"),
        (["runs", "--event", "x", "--status", "bogus"], 2, r"unknown run status 'bogus'"),
        (["cancel", "--status", "bogus"], 2, r"unknown run status 'bogus'"),
        (["replay", "--status", "bogus", "--dry-run"], 2, r"unknown run status 'bogus'"),
        (["runs", "--limit", "many"], 2, r"--limit: invalid number 'many'"),
        (["runs", "--event", "NOPE"], 1, r"^fanout runs: error: no event 'NOPE'"),
        (["runs", "--cursor", "zzz"], 2, r"argument --cursor: invalid cursor 'zzz'"),
        (["run", "NOPE"], 1, r"^fanout run: error: no run 'NOPE'"),
        (["functions", "-A", "nosuchproj"], 1, r"cannot import app module 'nosuchproj'"),
        (["replay", "NOPE"], 1, r"^fanout replay: error: NOPE: no run 'NOPE'"),
        (["replay", "NOPE", "--dry-run"], 1, r"^fanout replay: error: NOPE: no run 'NOPE'"),
        (["replay", "--fn", "nope"], 1, r"no function 'nope'"),
        (["replay"], 2, r"replay needs run ids or a filter"),
        (["rerun", "NOPE", "--from-step", "a"], 1, r"^fanout rerun: error: no run 'NOPE'"),
        (["rerun", rid, "--from-step", "zzz"], 1,
         r"has no step 'zzz'; its steps are \['a', 'b'\]"),
        (["cancel", "NOPE"], 1, r"^fanout cancel: error: NOPE: no such run"),
        (["cancel", "--since", "soon"], 2, r"invalid time 'soon'"),
        (["events", "--since", "x"], 2, r"invalid time 'x'"),
        (["events", "--limit", "0"], 2, r"--limit: must be from 1 to 100000"),
        (["events", "--cursor", "zzz"], 2, r"argument --cursor: invalid cursor 'zzz'"),
        (["run", "NOPE", "--key", "not-a-key"], 2, r"argument --key: "),
        (["functions", "--bogus"], 2, r"unrecognized arguments: --bogus"),
        (["nosuchcommand"], 2, r"invalid choice: 'nosuchcommand'"),
        (["rerun", "NOPE"], 2, r"the following arguments are required: --from-step"),
        (["metrics", "--port", "70000"], 2, r"--port: must be from 0 to 65535"),
        (["dashboard", "--port", "x"], 2, r"--port: invalid number 'x'"),
        (["dashboard", "--host", "0.0.0.0"], 2, r"needs an access token"),
        (["dashboard", "--tokens", "alice"], 2, r"tokens"),
        (["dev", "--concurrency", "0"], 2, r"--concurrency: must be from 1 to"),
        (["check-deploy", "--limit", "0"], 2, r"--limit: must be from 1 to"),
        (["ingest", "--max-body", "-1"], 2, r"--max-body: must be from 1 to"),
        (["keys", "create", "bad source!"], 2, r"invalid source 'bad source!'"),
        (["keys", "create", "billing", "--rate", "fast"], 2, r"invalid ingest key rate 'fast'"),
        (["keys", "create", "billing", "--events", "a*b"], 2, r"--events: ingest key events"),
        (["event", "NOPE"], 1, r"^fanout event: error: no event 'NOPE'"),
        (["--redis", "notaurl", "runs"], 2, r"argument --redis: invalid Redis URL 'notaurl'"),
        (["--broker", "nota://url", "send", "up/hello"], 2,
         r"argument --broker: invalid broker URL 'nota://url'"),
    ]
    for args, code, pattern in cases:
        res = fanout_cli(project, *args, env=env)
        try:
            one_line_error(res, code, pattern)
        except AssertionError as exc:
            raise AssertionError(f"fanout -A proj {' '.join(args)}: {exc}") from None
        if code == 1 and args[0] in ("replay", "cancel") and "NOPE" in args:
            assert res.stdout == "", res.stdout   # one id, one line: nothing else printed


# -- the same project on RabbitMQ -----------------------------------------------------------


@pytest.fixture(scope="module")
def amqp_url(rabbit: Rabbit) -> Iterator[str]:  # noqa: F811
    name = f"fanout-cli-{uuid.uuid4().hex[:12]}"
    rabbit.ctl("add_vhost", name)
    rabbit.ctl("set_permissions", "-p", name, rabbit.user, ".*", ".*", ".*")
    try:
        yield rabbit.url(name)
    finally:
        rabbit.ctl("delete_vhost", name)


def test_on_rabbitmq_redis_option_publishes_to_the_apps_broker(
        project: Path, amqp_url: str, log_dir: Path) -> None:
    """The app sets its broker (RabbitMQ) itself; ``--redis`` must not replace it."""
    store = _urls("amqp")["store"]
    redis.Redis.from_url(store).flushdb()
    w = ProjWorker(project, {"PROJ_BROKER_URL": amqp_url, "FANOUT_REDIS_URL": store},
                   log_dir / "cliproj-amqp-worker.log")
    try:
        res = fanout_cli(project, "--redis", store, "--json", "send", "up/hello", "--data",
                         '{"name": "Rabbit"}', "--wait", "60",
                         env={"PROJ_BROKER_URL": amqp_url})
        assert res.returncode == 0, res.stdout + res.stderr
        (run,) = json.loads(res.stdout)["runs"]
        assert run["status"] == "completed", run
        # The same with the broker given on the command line instead.
        res = fanout_cli(project, "--redis", store, "--broker", amqp_url, "--json", "send",
                         "up/hello", "--wait", "60")
        assert res.returncode == 0, res.stdout + res.stderr
        assert [r["status"] for r in json.loads(res.stdout)["runs"]] == ["completed"]
    finally:
        w.stop()
    assert "Traceback" not in w.log(), w.log()[-4000:]


# -- send: what an event resumes, and what --wait's exit code says -----------------------


def _env(urls: dict[str, str]) -> dict[str, str]:
    return {"CELERY_BROKER_URL": urls["broker"], "FANOUT_REDIS_URL": urls["store"]}


def _run_json(project: Path, urls: dict[str, str], run_id: str) -> dict[str, object]:
    res = fanout_cli(project, "--json", "run", run_id, env=_env(urls))
    assert res.returncode == 0, res.stderr
    data: dict[str, object] = json.loads(res.stdout)
    return data


def _waiting_run(project: Path, urls: dict[str, str], order: int) -> str:
    """Start an ``approve`` run for ``order`` and return its id once it waits."""
    from fanout._core.ids import run_id_for

    eid = f"order-{order}-{uuid.uuid4().hex[:8]}"
    res = fanout_cli(project, "send", "up/order", "--id", eid, "--data",
                     json.dumps({"order": order}), env=_env(urls))
    assert res.returncode == 0, res.stderr
    rid = run_id_for(eid, "proj:approve")
    support.wait_for(lambda: fanout_cli(project, "--json", "run", rid, env=_env(urls))
                     .stdout.count('"status": "waiting"') >= 1, timeout=60)
    return rid


def test_send_says_which_waiting_runs_an_event_resumes(
        project: Path, urls: dict[str, str], proj_worker: ProjWorker) -> None:
    rid = _waiting_run(project, urls, 101)
    res = fanout_cli(project, "send", "up/approved", "--data", '{"order": 101}', env=_env(urls))
    assert res.returncode == 0, res.stderr
    assert res.stderr.strip() == (f"note: resumes 1 waiting run: {rid} (proj:approve, step "
                                  "'approval')"), res.stderr
    assert "no function is triggered" not in res.stderr
    support.wait_for(lambda: _run_json(project, urls, rid)["status"] == "completed", timeout=60)

    # With --wait: the event starts nothing, resumes the run, waits for it to end: exit 0.
    rid = _waiting_run(project, urls, 102)
    res = fanout_cli(project, "--json", "send", "up/approved", "--data", '{"order": 102}',
                     "--wait", "60", env=_env(urls))
    assert res.returncode == 0, res.stdout + res.stderr
    out = json.loads(res.stdout)
    assert out["runs"] == [] and [r["run_id"] for r in out["resumed"]] == [rid]
    assert out["resumed"][0]["status"] == "completed"
    assert "note: resumed 1 waiting run" in res.stderr, res.stderr
    text = fanout_cli(project, "send", "up/approved", "--data", '{"order": 999}',
                      "--wait", "5", env=_env(urls))
    one_line_error(text, 1, r"no function is triggered by event 'up/approved' and no run waits "
                            r"for it")


def test_send_wait_exits_1_when_a_run_fails_is_cancelled_or_still_going(
        project: Path, urls: dict[str, str], proj_worker: ProjWorker) -> None:
    from fanout._core.ids import run_id_for

    env = _env(urls)
    # A run that fails: the table on stdout, one line on stderr, exit 1.
    res = fanout_cli(project, "send", "up/fail", "--wait", "60", env=env)
    assert res.returncode == 1, res.stdout + res.stderr
    assert "failed" in res.stdout and "proj:fails" in res.stdout
    one_line_error(res, 1, r"^fanout send: error: 1 run did not complete: \w+ failed$")
    as_json = fanout_cli(project, "--json", "send", "up/fail", "--wait", "60", env=env)
    assert as_json.returncode == 1
    assert [r["status"] for r in json.loads(as_json.stdout)["runs"]] == ["failed"]

    # A resumed run that then fails counts too.
    _waiting_run(project, urls, 103)
    res = fanout_cli(project, "send", "up/approved", "--data", '{"order": 103, "ok": false}',
                     "--wait", "60", env=env)
    assert res.returncode == 1, res.stdout + res.stderr
    assert re.search(r"error: 1 run did not complete: \w+ failed", res.stderr), res.stderr

    # A run still going at the deadline: exit 1, and the command to follow it.
    res = fanout_cli(project, "send", "up/hold", "--wait", "3", env=env)
    one_line_error(res, 1, r"^fanout send: error: 1 run still going after 3 s: fanout run \w+$")

    # A run cancelled while send waits for it.
    eid = f"hold-{uuid.uuid4().hex[:8]}"
    rid = run_id_for(eid, "proj:hold")
    exe = Path(sys.executable).parent / "fanout"
    waiting = subprocess.Popen(
        [str(exe) if exe.exists() else sys.executable, *([] if exe.exists() else ["-m", "fanout"]),
         "-A", "proj", "send", "up/hold", "--id", eid, "--wait", "120"],
        cwd=project, env={**_clean_env(), **env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True)
    try:
        support.wait_for(lambda: fanout_cli(project, "--json", "run", rid, env=env)
                         .stdout.count('"status": "sleeping"') >= 1, timeout=60)
        assert fanout_cli(project, "cancel", rid, env=env).returncode == 0
        stdout, stderr = waiting.communicate(timeout=60)
    finally:
        if waiting.poll() is None:
            waiting.kill()
            waiting.wait()
    assert waiting.returncode == 1, stdout + stderr
    assert stderr.strip().splitlines() == [
        f"fanout send: error: 1 run did not complete: {rid} cancelled"], stderr


def test_functions_shows_paused_functions(
        project: Path, urls: dict[str, str], proj_worker: ProjWorker) -> None:
    env = _env(urls)
    assert fanout_cli(project, "pause", "hold", "--reason", "deploy", env=env).returncode == 0
    try:
        text = fanout_cli(project, "functions", env=env)
        assert text.returncode == 0, text.stderr
        rows = {line.split()[0]: line for line in text.stdout.splitlines()[1:]}
        assert rows["proj:hold"].rstrip().endswith("paused (deploy)"), text.stdout
        assert rows["proj:hello"].rstrip().endswith("active"), text.stdout
        fns = {f["key"]: f for f in json.loads(fanout_cli(project, "--json", "functions",
                                                          env=env).stdout)}
        assert fns["proj:hold"]["paused"] is True and fns["proj:hold"]["pause"]["reason"] == "deploy"
        assert fns["proj:hello"]["paused"] is False and fns["proj:hello"]["pause"] is None
    finally:
        assert fanout_cli(project, "resume", "hold", env=env).returncode == 0
    fns = json.loads(fanout_cli(project, "--json", "functions", env=env).stdout)
    assert not any(f["paused"] for f in fns)


def test_option_values_may_start_with_a_dash(
        project: Path, urls: dict[str, str], proj_worker: ProjWorker) -> None:
    """A Fernet key starts with '-' one time in 64; an event id or a reason may too."""
    import base64

    key = next(k for k in (base64.urlsafe_b64encode(os.urandom(32)).decode()
                           for _ in range(10_000)) if k.startswith("-"))
    env = _env(urls)
    sent = json.loads(fanout_cli(project, "--json", "send", "up/hello", "--wait", "60",
                                 env=env).stdout)
    rid = sent["runs"][0]["run_id"]
    for args in (["run", rid, f"--key={key}"], ["run", rid, "--key", key]):
        res = fanout_cli(project, *args, env=env)
        assert res.returncode == 0, (args, res.stderr)
        assert 'output: "hello ?"' in res.stdout
    eid = f"-dash-{uuid.uuid4().hex[:6]}"
    res = fanout_cli(project, "send", "up/hello", "--id", eid, "--wait", "60", env=env)
    assert res.returncode == 0 and res.stdout.startswith(f"event {eid}\n"), res.stderr
    # An option after a value-taking one is still an option: "--key --json" is an error.
    one_line_error(fanout_cli(project, "run", rid, "--key", "--json", env=env), 2,
                   r"argument --key: expected one argument")


# -- the shipped settings with only FANOUT_REDIS_URL --------------------------------------


def test_only_the_store_url_puts_the_broker_in_the_next_database_and_warns(
        project: Path, urls: dict[str, str], log_dir: Path) -> None:
    used = {int(u.rsplit("/", 1)[1]) for u in urls.values()}   # the module's other worker
    db = support.db_for(f"{__name__}.store-only")
    while {db, db + 1 if db < 15 else db - 1} & used:
        db = db % 15 + 1
    store = f"{support.base_url()}/{db}"
    broker = f"{support.base_url()}/{db + 1 if db < 15 else db - 1}"
    for url in (store, broker):
        redis.Redis.from_url(url).flushdb()
    w = ProjWorker(project, {"FANOUT_REDIS_URL": store}, log_dir / "cliproj-store-only.log")
    try:
        res = fanout_cli(project, "--json", "send", "up/hello", "--wait", "60",
                         env={"FANOUT_REDIS_URL": store})
        assert res.returncode == 0, res.stdout + res.stderr
        assert [r["status"] for r in json.loads(res.stdout)["runs"]] == ["completed"]
    finally:
        w.stop()
    # Celery's queues are in the broker's database, none in the store's.
    store_keys = {k.decode() for k in redis.Redis.from_url(store).keys("*")}
    broker_keys = {k.decode() for k in redis.Redis.from_url(broker).keys("*")}
    assert "_kombu.binding.celery" in broker_keys, broker_keys
    assert not [k for k in store_keys if k.startswith(("_kombu", "celery", "unacked"))], store_keys
    assert any(k.startswith("fanout:") for k in store_keys) and not any(
        k.startswith("fanout:") for k in broker_keys)
    # One WARNING naming both URLs and the deployment guide.
    lines = [ln for ln in w.log().splitlines() if "share one Redis" in ln]
    assert len(lines) == 1, w.log()[-4000:]
    assert "WARNING" in lines[0] and f"({broker})" in lines[0] and f"({store})" in lines[0]
    assert "share one Redis server" in lines[0] and "docs/howto/deployment.md" in lines[0]
    for url in (store, broker):
        redis.Redis.from_url(url).flushdb()
