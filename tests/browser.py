"""Fixtures for the dashboard's browser tests: Debian's chromium driven by
Playwright (tests/browser_setup.sh installs both; the tests skip, saying why, only
when that cannot be done), and `fanout dashboard` served in a subprocess."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support import ROOT

LAUNCH_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
               "--disable-component-update", "--disable-sync", "--no-first-run"]


@pytest.fixture(scope="module")
def chromium() -> str:
    try:
        res = subprocess.run(["bash", str(ROOT / "tests" / "browser_setup.sh")],
                             env={**os.environ, "PYTHON": sys.executable},
                             capture_output=True, text=True, timeout=900)
    except subprocess.TimeoutExpired:
        pytest.skip("browser set-up (tests/browser_setup.sh) timed out")
    if res.returncode != 0:
        pytest.skip(f"no headless browser: {res.stderr.strip().splitlines()[-1:]}")
    return res.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def browser(chromium: str) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium, args=LAUNCH_ARGS, headless=True)
        yield b
        b.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("dashboard-screenshots")
    print(f"\ndashboard screenshots: {path}")
    return path


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    ctx = browser.new_context(viewport={"width": 1500, "height": 900})
    pg = ctx.new_page()
    pg.on("dialog", lambda d: d.accept())
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    yield pg
    ctx.close()
    assert errors == [], f"JavaScript errors: {errors}"


def serve_dashboard(module: str, *args: str, env: dict[str, str] | None = None) -> Iterator[str]:
    """Run `fanout dashboard -A module --port 0 [args]`; yield its base URL."""
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    proc = subprocess.Popen([sys.executable, "-m", "fanout._cli", "dashboard", "-A", module,
                             "--port", "0", *args], cwd=ROOT, env=full_env,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()
        m = re.search(r"on (http://127\.0\.0\.1:\d+)/", line)
        assert m, line + (proc.stderr.read() if proc.poll() is not None else "")
        yield m.group(1)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
