"""Security settings work end to end: a password, TLS (``rediss://``), and pickle refused.

* A private redis-server with ``requirepass``: a worker and a client with the
  password in their URL run a function; a wrong or missing password makes
  ``emit`` raise ``PublishError`` (nothing is silently dropped).
* A private TLS-only redis-server (``--port 0 --tls-port``, self-signed cert made
  with ``openssl``, password too): broker and store both on ``rediss://``; an
  unverifiable certificate fails clearly.  Skipped when redis-server or openssl
  has no TLS.
* A worker whose Celery app is configured for pickle must not start: fanout's
  ConfigError message ends the worker, whether pickle was set before the client
  was created or after it (the ``worker_init`` check).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from celery import Celery

import fanout
from tests.conftest import _free_port, start_redis_server
from tests.support import Worker, run_of, wait_for, wait_run

URL_ENV = "FANOUT_TEST_SEC_URL"
MODE_ENV = "FANOUT_TEST_SEC_MODE"
PICKLE_MESSAGE = "fanout requires JSON-only serialization"


def build(url: str, mode: str = "") -> tuple[Celery, fanout.Fanout]:
    celery_app = Celery("sec")
    celery_app.config_from_object("celeryconfig")
    celery_app.conf.broker_url = url
    if mode == "pickle-early":
        celery_app.conf.update(task_serializer="pickle", accept_content=["json", "pickle"])
    fo = fanout.Fanout("sec", celery=celery_app, redis_url=url, retry_backoff=[0.2])
    if mode == "pickle-late":
        # Configured after the client exists (a settings module loaded later, say):
        # the client's own check has passed; the worker must still refuse.
        celery_app.conf.update(task_serializer="pickle", accept_content=["json", "pickle"])

    @fo.create_function(fn_id="hello", trigger=fanout.TriggerEvent(event="sec/hello"))
    def hello(ctx: fanout.ContextSync) -> str:
        return str(ctx.step.run("greet", lambda: f"hello {ctx.event.data['who']}"))

    return celery_app, fo


if os.environ.get(URL_ENV):
    app, client = build(os.environ[URL_ENV], os.environ.get(MODE_ENV, ""))


def _run_hello(url: str, log_dir: Path, name: str) -> None:
    _, fo = build(url)
    w = Worker(__name__, name=name, env={URL_ENV: url}, log_dir=log_dir)
    try:
        eid = fo.emit("sec/hello", {"who": name})
        run = wait_run(fo, run_of(fo, eid, "hello"), timeout=30)
        assert run.status == "completed", run.error
        assert run.output == f"hello {name}"
    finally:
        w.stop()


# -- password --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def password_redis() -> Iterator[int]:
    proc, port, tmp = start_redis_server()
    redis.Redis(port=port).config_set("requirepass", "s3cret-pw")
    yield port
    proc.terminate()
    proc.wait(timeout=10)
    shutil.rmtree(tmp, ignore_errors=True)


def test_password_url_works(password_redis: int, log_dir: Path) -> None:
    _run_hello(f"redis://:s3cret-pw@127.0.0.1:{password_redis}/0", log_dir, "pw")


@pytest.mark.parametrize("auth", ["", ":wrong@", "default:wrong@"])
def test_wrong_or_missing_password_raises(password_redis: int, auth: str) -> None:
    _, fo = build(f"redis://{auth}127.0.0.1:{password_redis}/0")
    with pytest.raises(fanout.PublishError, match="could not store 1 event"):
        fo.emit("sec/hello", {"who": "nobody"})


# -- TLS -------------------------------------------------------------------------------


def _tls_supported() -> str | None:
    exe = shutil.which("redis-server")
    if exe is None or shutil.which("openssl") is None:
        return "redis-server or openssl is not installed"
    # Without a certificate, a TLS-capable server refuses to start and says so; one
    # built without TLS rejects the directive itself.
    probe = subprocess.run([exe, "--port", "0", "--tls-port", str(_free_port()), "--save", ""],
                           capture_output=True, text=True, timeout=20)
    if "tls-cert-file" in probe.stdout + probe.stderr:
        return None
    return "this redis-server was built without TLS support (no --tls-port)"


@pytest.fixture(scope="module")
def tls_redis() -> Iterator[tuple[int, Path]]:
    reason = _tls_supported()
    if reason:
        pytest.skip(reason)
    tmp = Path(tempfile.mkdtemp(prefix="fanout-tls-"))
    cert, key = tmp / "cert.pem", tmp / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
         "-out", str(cert), "-days", "2", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
        check=True, capture_output=True, timeout=60,
    )
    port = _free_port()
    proc = subprocess.Popen(
        ["redis-server", "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1",
         "--tls-cert-file", str(cert), "--tls-key-file", str(key),
         "--tls-ca-cert-file", str(cert), "--tls-auth-clients", "no",
         "--requirepass", "tls-pw", "--save", "", "--appendonly", "no", "--dir", str(tmp)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    probe = redis.Redis.from_url(_tls_url(port, cert))

    def up() -> bool:
        try:
            return bool(probe.ping())
        except redis.RedisError:
            return False

    try:
        wait_for(up, timeout=20)
        yield port, cert
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        shutil.rmtree(tmp, ignore_errors=True)


def _tls_url(port: int, cert: Path) -> str:
    return (f"rediss://:tls-pw@127.0.0.1:{port}/0"
            f"?ssl_cert_reqs=required&ssl_ca_certs={cert}")


def test_rediss_url_works_for_broker_and_store(tls_redis: tuple[int, Path], log_dir: Path) -> None:
    port, cert = tls_redis
    url = _tls_url(port, cert)
    _run_hello(url, log_dir, "tls")
    # The server has no plain-text port: everything above went over TLS.
    with pytest.raises(redis.ConnectionError):
        redis.Redis(port=port, password="tls-pw", socket_connect_timeout=2).ping()


def test_rediss_with_an_unverifiable_certificate_raises(tls_redis: tuple[int, Path]) -> None:
    port, _cert = tls_redis
    _, fo = build(f"rediss://:tls-pw@127.0.0.1:{port}/0?ssl_cert_reqs=required")
    with pytest.raises(fanout.PublishError, match="CERTIFICATE_VERIFY_FAILED|certificate verify"):
        fo.emit("sec/hello", {"who": "mallory"})


# -- pickle ----------------------------------------------------------------------------


def _start_pickle_worker(mode: str, log_dir: Path) -> str:
    """Start a worker in ``mode``; return its log if it exited, or fail if it came up."""
    env = {
        URL_ENV: f"{os.environ['FANOUT_TEST_REDIS_BASE']}/0",
        MODE_ENV: mode,
        # Celery itself refuses pickle to a root worker; this lets fanout's check speak.
        "C_FORCE_ROOT": "1",
    }
    try:
        w = Worker(__name__, name=mode, env=env, log_dir=log_dir)
    except RuntimeError as exc:
        assert "worker exited early" in str(exc)
        return str(exc)
    w.stop()
    pytest.fail(f"a worker whose app uses pickle ({mode}) started; its log:\n{w.log()[-2000:]}")


def test_pickle_app_refused_when_the_client_is_created(log_dir: Path) -> None:
    log = _start_pickle_worker("pickle-early", log_dir)
    assert PICKLE_MESSAGE in log
    assert "ConfigError" in log


def test_pickle_configured_after_the_client_is_refused_at_worker_start(log_dir: Path) -> None:
    log = _start_pickle_worker("pickle-late", log_dir)
    assert PICKLE_MESSAGE in log
