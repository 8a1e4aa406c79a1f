"""Actions taken from a terminal or a script are in the audit log, with who did them
and why, beside the dashboard's: ``fanout cancel`` (one run, and in bulk by filter),
``fanout replay``, ``fanout rerun``, ``fanout pause``/``resume`` in subprocesses with
``-A``, and ``client.cancel_runs`` from Python, against a real worker."""

from __future__ import annotations

import getpass
import os
import socket
import subprocess
import sys
import time

import fanout
from fanout._redis.audit import AuditLog
from tests.support import ROOT, make_app, run_of, wait_for, wait_run

app, client = make_app(__name__, app_id="audcli")
MOD = __name__


@client.create_function(fn_id="nap", trigger=fanout.TriggerEvent(event="aud/nap"))
def nap(ctx: fanout.ContextSync) -> str:
    ctx.step.run("first", lambda: 1)
    ctx.step.sleep("nap", "10m")
    return "woke"


@client.create_function(fn_id="hello", trigger=fanout.TriggerEvent(event="aud/hello"))
def hello(ctx: fanout.ContextSync) -> str:
    a = ctx.step.run("a", lambda: "hel")
    return str(ctx.step.run("b", lambda: a + "lo"))


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    full.pop("FANOUT_OPERATOR", None)
    full.update(env or {})
    res = subprocess.run([sys.executable, "-m", "fanout._cli", "-A", MOD, *args], cwd=ROOT,
                         env=full, capture_output=True, text=True, timeout=90)
    assert res.returncode == 0, (res.stdout, res.stderr)
    return res


def audit() -> AuditLog:
    return AuditLog(client._rt.store)


def sleeping(n: int) -> list[str]:
    ids = [run_of(client, client.emit("aud/nap", {"i": i}), "nap") for i in range(n)]
    wait_for(lambda: all(getattr(client.get_run(r), "status", None) == "sleeping"
                         for r in ids), 60)
    return ids


def test_a_cancel_names_who_and_why(worker: object) -> None:
    (rid,) = sleeping(1)
    cli("cancel", rid, "--as", "alice", "--reason", "bad deploy")
    (rec,) = audit().about(rid)
    assert (rec.who, rec.role, rec.action, rec.client) == ("alice", "cli", "cancel", "cli")
    assert "bad deploy" in rec.detail and rec.targets == (rid,)


def test_bulk_cancel_by_filter_and_replay_record_every_run(worker: object) -> None:
    since = time.time() - 1
    ids = sleeping(3)
    res = cli("cancel", "--fn", "nap", "--since", str(since), "--reason", "drain",
              env={"FANOUT_OPERATOR": "ops-bot"})
    assert "cancel: 3 of 3 run(s)" in res.stdout
    # The job, asked by ops-bot for a reason; its batch names every run it cancelled.
    done_rec, batch, asked = audit().recent(3)
    assert (asked.who, asked.action, asked.role) == ("ops-bot", "bulk cancel", "cli")
    assert asked.extra["total"] == 3 and "drain" in asked.detail
    assert (batch.who, batch.action) == ("ops-bot", "bulk cancel batch")
    assert set(batch.targets) == {f"bulk:{asked.extra['job']}", *ids}
    assert (done_rec.action, done_rec.extra["done"]) == ("bulk cancel done", 3)
    assert all(audit().about(r)[0] == batch for r in ids)
    # A replay names the runs it replayed and the runs it started.
    done = wait_run(client, run_of(client, client.emit("aud/hello"), "hello"))
    res = cli("replay", done.run_id)
    new_id = res.stdout.split("-> ")[1].split()[0]
    rec = audit().about(done.run_id)[0]
    assert rec.action == "replay" and rec.targets == (done.run_id, new_id)
    assert rec.who == f"cli:{getpass.getuser()}@{socket.gethostname()}"
    assert audit().about(new_id)[0] == rec


def test_rerun_pause_and_resume_are_recorded(worker: object) -> None:
    done = wait_run(client, run_of(client, client.emit("aud/hello"), "hello"))
    new_id = cli("rerun", done.run_id, "--from-step", "b", "--as", "bo").stdout.strip()
    rec = audit().about(new_id)[0]
    assert (rec.who, rec.action, rec.detail) == ("bo", "rerun", "from step b")
    cli("pause", "hello", "--reason", "vendor down", "--as", "bo")
    cli("resume", "audcli:hello", "--as", "bo")
    resume, pause = audit().about("audcli:hello")[:2]
    assert (pause.action, pause.detail) == ("pause", "vendor down")
    assert resume.action == "resume" and resume.who == "bo"


def test_cancel_runs_from_python_is_recorded(worker: object) -> None:
    ids = sleeping(2)
    assert client.cancel_runs("nap", reason="migrating", by="carol") == 2
    rec = audit().recent(1)[0]
    assert (rec.who, rec.role, rec.action) == ("carol", "python", "bulk cancel")
    assert set(rec.targets) == {"audcli:nap", *ids} and "migrating" in rec.detail
    assert all(client.get_run(r).status == "cancelled" for r in ids)  # type: ignore[union-attr]
