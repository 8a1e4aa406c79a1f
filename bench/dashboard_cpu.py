"""The dashboard's CPU with one tab open: `fanout dashboard` in a subprocess, one
headless Chromium tab on a live page for ``--seconds`` (60), and the dashboard
process's CPU time (user + system, from /proc) over that window, as a share of one
core. Pages: the overview, the runs list and a waiting run's page; each once with
nothing happening ("idle") and once with one event a second starting a run
("busy", a worker running them).

    .venv/bin/python -m bench.dashboard_cpu [--seconds 60]

Needs Chromium and Playwright (tests/browser_setup.sh). Not a test: a measurement.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from bench._redis import bench_redis
from bench.http_load import HERE, _env

APP = '''
import os
from celery import Celery
import fanout

app = Celery("cpuapp")
app.config_from_object("fanout.celeryconfig")
client = fanout.Fanout("cpu", celery=app, redis_url=os.environ["FANOUT_REDIS_URL"])


@client.create_function(fn_id="order", trigger=fanout.TriggerEvent(event="cpu/order"))
def order(ctx):
    ctx.step.run("a", lambda: 1)
    return ctx.step.run("b", lambda: ctx.event.data.get("n", 0))


@client.create_function(fn_id="approval", trigger=fanout.TriggerEvent(event="cpu/request"))
def approval(ctx):
    return ctx.step.wait_for_event("ok", event="cpu/ok", match="data.id", timeout="1h")
'''


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def chromium() -> str:
    out = subprocess.run(["bash", str(HERE / "tests" / "browser_setup.sh")],
                         env={**os.environ, "PYTHON": sys.executable}, capture_output=True,
                         text=True, timeout=900, check=True)
    return out.stdout.strip().splitlines()[-1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=60.0)
    args = ap.parse_args()
    from playwright.sync_api import sync_playwright

    from tests.browser import LAUNCH_ARGS

    exe = chromium()
    with bench_redis() as url, tempfile.TemporaryDirectory() as appdir:
        Path(appdir, "cpuapp.py").write_text(APP)
        env = _env(HERE, appdir, url)
        worker = subprocess.Popen([sys.executable, "-m", "celery", "-A", "cpuapp", "worker",
                                   "-P", "threads", "-c", "4", "--without-gossip",
                                   "--without-mingle", "-l", "WARNING"], cwd=appdir, env=env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        dash = subprocess.Popen([sys.executable, "-m", "fanout._cli", "dashboard", "-A", "cpuapp",
                                 "--port", "0"], cwd=appdir, env=env, stderr=subprocess.PIPE,
                                text=True)
        try:
            assert dash.stderr is not None
            m = re.search(r"on (http://127\.0\.0\.1:\d+)/", dash.stderr.readline())
            assert m
            base = m.group(1)
            sys.path.insert(0, appdir)
            os.environ.update({k: env[k] for k in ("FANOUT_REDIS_URL", "CELERY_BROKER_URL")})
            import importlib

            import fanout
            import fanout.celeryconfig

            importlib.reload(fanout.celeryconfig)
            import cpuapp  # type: ignore[import-not-found]

            c = cpuapp.client
            c.send_sync([fanout.Event(name="cpu/order", data={"n": i}) for i in range(200)])
            (wait_eid,) = c.send_sync(fanout.Event(name="cpu/request", data={"id": "x"}))
            deadline = time.time() + 120
            while time.time() < deadline and len(c.list_runs(fn_id="order", status="completed",
                                                             limit=1000)) < 200:
                time.sleep(0.5)
            time.sleep(2)
            from fanout._core.ids import run_id_for

            waiting = run_id_for(wait_eid, "cpu:approval")
            pages = [("overview", "/overview"), ("runs list", "/runs"),
                     ("waiting run", f"/runs/{waiting}")]
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=exe, args=LAUNCH_ARGS, headless=True)
                for label, path in pages:
                    for mode in ("idle", "busy"):
                        stop = threading.Event()

                        def trickle(stop: threading.Event = stop) -> None:
                            n = 0
                            while not stop.wait(1.0):
                                c.emit("cpu/order", {"n": n})
                                n += 1

                        ctx = browser.new_context()
                        page = ctx.new_page()
                        page.goto(base + path)
                        page.wait_for_timeout(3000)  # settle: first render, assets
                        t = threading.Thread(target=trickle) if mode == "busy" else None
                        if t:
                            t.start()
                        before, t0 = cpu_seconds(dash.pid), time.monotonic()
                        page.wait_for_timeout(args.seconds * 1000)
                        used, wall = cpu_seconds(dash.pid) - before, time.monotonic() - t0
                        stop.set()
                        if t:
                            t.join()
                        ctx.close()
                        print(f"{label:12} {mode:5} {used:6.2f} s CPU in {wall:5.1f} s = "
                              f"{100 * used / wall:5.2f} % of a core", flush=True)
                        time.sleep(2)
                browser.close()
        finally:
            dash.terminate()
            dash.wait(timeout=20)
            worker.terminate()
            worker.wait(timeout=30)


if __name__ == "__main__":
    main()
