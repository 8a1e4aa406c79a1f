"""Concurrent clients against the dashboard and the ingest endpoint, on loopback.

Starts a private Redis, runs a worker long enough to leave some runs to list, then,
for each source tree given (this one, and ``--before PATH``: a checkout of an
older commit), serves ``fanout dashboard`` and ``fanout ingest`` from that tree in
subprocesses and sends them ``--clients`` concurrent clients (threads in this
process; a new connection per request, as browsers and senders behind NAT often
do). Each client stops after ``--requests`` requests or ``--seconds``; the trees
alternate A B A B for ``--rounds``. Reports per target: requests, errors by kind,
p50, p99 and max latency, requests per second.

    .venv/bin/python -m bench.http_load --before /tmp/fanout-before --rounds 2

Not a test: run it in a quiet window (the machine's other load shows in the tail).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from bench._redis import bench_redis

HERE = Path(__file__).resolve().parents[1]

APP = '''
import os
from celery import Celery
import fanout

app = Celery("loadapp")
app.config_from_object("fanout.celeryconfig")
client = fanout.Fanout("load", celery=app, redis_url=os.environ["FANOUT_REDIS_URL"])


@client.create_function(fn_id="order", trigger=fanout.TriggerEvent(event="load/order"))
def order(ctx):
    return ctx.step.run("total", lambda: ctx.event.data.get("n", 0))
'''


def _port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _env(tree: Path, appdir: str, url: str) -> dict[str, str]:
    broker = url.rsplit("/", 1)[0] + "/1"  # the broker in its own database
    return {**os.environ, "PYTHONPATH": f"{tree}{os.pathsep}{appdir}", "FANOUT_REDIS_URL": url,
            "CELERY_BROKER_URL": broker}


def seed(appdir: str, url: str, runs: int) -> str:
    """Leave ``runs`` completed runs in the store; return a fresh ingest key."""
    env = _env(HERE, appdir, url)
    worker = subprocess.Popen([sys.executable, "-m", "celery", "-A", "loadapp", "worker", "-P",
                               "threads", "-c", "4", "--without-gossip", "--without-mingle", "-l", "WARNING"],
                              cwd=appdir, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    code = f'''
import time, loadapp, fanout
from fanout.http import IngestKeys
c = loadapp.client
c.send_sync([fanout.Event(name="load/order", data={{"n": i}}) for i in range({runs})])
deadline = time.time() + 120
while time.time() < deadline and len(c.list_runs(status="completed", limit=1000)) < {runs}:
    time.sleep(0.5)
print(IngestKeys(c).create("load").key)
'''
    try:
        out = subprocess.run([sys.executable, "-c", code], cwd=appdir, env=env, check=True,
                             capture_output=True, text=True, timeout=300)
    finally:
        worker.terminate()
        worker.wait(timeout=30)
    return out.stdout.strip().splitlines()[-1]


class Served:
    def __init__(self, tree: Path, appdir: str, url: str) -> None:
        env = _env(tree, appdir, url)
        self.dash_port, self.ingest_port = _port(), _port()
        self.procs = [
            subprocess.Popen([sys.executable, "-m", "fanout._cli", "dashboard", "-A", "loadapp",
                              "--port", str(self.dash_port)], cwd=appdir, env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL),
            subprocess.Popen([sys.executable, "-m", "fanout._cli", "ingest", "-A", "loadapp",
                              "--port", str(self.ingest_port)], cwd=appdir, env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL),
        ]
        for port in (self.dash_port, self.ingest_port):
            deadline = time.time() + 60
            while True:
                try:
                    c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                    c.request("GET", "/healthz")
                    c.getresponse().read()
                    c.close()
                    break
                except OSError:
                    if time.time() > deadline:
                        raise
                    time.sleep(0.2)

    def stop(self) -> None:
        for p in self.procs:
            p.terminate()
            p.wait(timeout=20)


def load(port: int, method: str, path: str, body: bytes | None, headers: dict[str, str],
         clients: int, requests: int, seconds: float) -> dict[str, Any]:
    lat: list[float] = []
    errors: Counter[str] = Counter()
    lock = threading.Lock()
    start = threading.Barrier(clients)
    stop_at = [0.0]

    def client() -> None:
        mine: list[float] = []
        bad: Counter[str] = Counter()
        start.wait()
        for _ in range(requests):
            if time.monotonic() > stop_at[0]:
                break
            t0 = time.perf_counter()
            try:
                c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                c.request(method, path, body=body, headers=headers)
                resp = c.getresponse()
                resp.read()
                c.close()
                if resp.status >= 400:
                    bad[f"HTTP {resp.status}"] += 1
                    continue
            except Exception as exc:  # noqa: BLE001 - counted by kind
                bad[type(exc).__name__] += 1
                continue
            mine.append(time.perf_counter() - t0)
        with lock:
            lat.extend(mine)
            errors.update(bad)

    stop_at[0] = time.monotonic() + seconds + 5
    threads = [threading.Thread(target=client) for _ in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    lat.sort()

    def q(p: float) -> float:
        return lat[min(len(lat) - 1, int(p * len(lat)))] * 1000 if lat else float("nan")

    return {"ok": len(lat), "errors": dict(errors), "p50_ms": q(0.5), "p99_ms": q(0.99),
            "max_ms": lat[-1] * 1000 if lat else float("nan"), "rps": len(lat) / wall}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--before", type=Path, help="an older checkout to compare with")
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--requests", type=int, default=50, help="per client (50)")
    ap.add_argument("--seconds", type=float, default=60.0, help="at most, per target (60)")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--runs", type=int, default=300, help="runs left in the store to list")
    args = ap.parse_args()
    trees = [("after", HERE)] + ([("before", args.before.resolve())] if args.before else [])
    results: dict[str, list[dict[str, Any]]] = {}
    with bench_redis() as url, tempfile.TemporaryDirectory() as appdir:
        Path(appdir, "loadapp.py").write_text(APP)
        key = seed(appdir, url, args.runs)
        body = json.dumps({"name": "load/ping", "data": {"x": 1}}).encode()
        targets = [("dashboard GET /runs", "dash_port", "GET", "/runs", None, {}),
                   ("ingest POST /events", "ingest_port", "POST", "/events", body,
                    {"Content-Type": "application/json", "Authorization": f"Bearer {key}"})]
        for rnd in range(args.rounds):
            for name, tree in (trees if rnd % 2 == 0 else trees[::-1]):
                served = Served(tree, appdir, url)
                try:
                    for label, port_attr, method, path, b, h in targets:
                        r = load(getattr(served, port_attr), method, path, b, h, args.clients,
                                 args.requests, args.seconds)
                        results.setdefault(f"{name:6}  {label}", []).append(r)
                        print(f"round {rnd + 1} {name:6} {label:22} ok {r['ok']:5} errors "
                              f"{r['errors'] or 0}  p50 {r['p50_ms']:7.1f} ms  p99 "
                              f"{r['p99_ms']:7.1f} ms  max {r['max_ms']:7.1f} ms  "
                              f"{r['rps']:6.1f} req/s", flush=True)
                finally:
                    served.stop()
    print(f"\n{args.clients} clients, {args.requests} requests each, {args.rounds} rounds "
          "(median of the rounds; range in brackets)")
    for label, rs in sorted(results.items()):
        def agg(k: str, rs: list[dict[str, Any]] = rs) -> str:
            vals = [r[k] for r in rs]
            return f"{statistics.median(vals):7.1f} [{min(vals):.1f}-{max(vals):.1f}]"
        errs: Counter[str] = Counter()
        for r in rs:
            errs.update(r["errors"])
        print(f"{label:30} p50 {agg('p50_ms')} ms  p99 {agg('p99_ms')} ms  "
              f"req/s {agg('rps')}  errors {dict(errs) or 0}")


if __name__ == "__main__":
    main()
