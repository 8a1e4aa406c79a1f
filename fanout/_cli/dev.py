"""``fanout dev``: a worker, the beat scheduler and the dashboard in one process.

The worker is Celery's own (a thread pool, in this process) and consumes the
app's queues, including fanout's router queue; beat runs with an in-memory
schedule (no ``celerybeat-schedule`` file); the dashboard serves the same
runtime.  With the embedded default (``memory://`` store and broker) nothing is
installed or left behind; with ``--redis`` the app's own Redis is used.

With ``--reload`` the ``.py`` files under the current directory are polled; when
one changes, the project's modules are imported again and the worker and beat
restart on the new code.  The dashboard, the store and the broker stay up, so
runs in progress carry on (an in-memory store keeps its state).  If the new code
fails to import, the previous worker keeps running and the error is printed.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
import signal
import sys
import threading
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

from .._dashboard import DashboardServer
from .._errors import ConfigError
from .._ops.locate import Target, locate

log = logging.getLogger("fanout")


@contextmanager
def running_beat(app: Any) -> Iterator[Any]:
    """Celery beat in a daemon thread with an in-memory schedule."""
    from celery.beat import Service

    # max_interval: how long beat sleeps between looks, and so how long it takes to stop.
    service = Service(app, scheduler_cls="celery.beat:Scheduler", max_interval=1,
                      remote_control=False)
    thread = threading.Thread(target=service.start, name="fanout-dev-beat", daemon=True)
    thread.start()
    try:
        yield service
    finally:
        service.stop()
        thread.join(timeout=5)


@contextmanager
def worker_services(target: Target, *, concurrency: int = 4,
                    beat: bool = True) -> Iterator[None]:
    """The embedded worker, and beat unless ``beat`` is off, for ``target``'s app."""
    from ..embedded import start_embedded_worker

    # Beat outside: on a reload the old worker stops first, and no longer runs steps
    # while beat winds down.
    with running_beat(target.app) if beat else _nothing():
        with start_embedded_worker(target.app, concurrency=concurrency):
            yield


@contextmanager
def dev_services(target: Target, *, host: str = "127.0.0.1", port: int = 8288,
                 token: str | None = None, concurrency: int = 4,
                 beat: bool = True) -> Iterator[DashboardServer]:
    """Start the three services; yields the running dashboard."""
    dash = DashboardServer(target, host=host, port=port, token=token)  # fails fast on a bad bind
    try:
        with worker_services(target, concurrency=concurrency, beat=beat):
            dash.start()
            yield dash
    finally:
        dash.shutdown()


@contextmanager
def _nothing() -> Iterator[None]:
    yield None


def banner(target: Target, dash: DashboardServer, token: str | None, beat: bool) -> str:
    lines = [
        f"fanout dev: {target.spec}",
        f"  store      {'embedded, in memory' if target.is_memory else target.redis_url}",
        f"  broker     {target.app.conf.broker_url}",
        f"  worker     in this process (threads), beat {'on' if beat else 'off'}",
        f"  dashboard  {dash.url}" + (" (sign in with your token)" if token else ""),
    ]
    return "\n".join(lines) + "\n" + function_list(target)


def function_list(target: Target) -> str:
    fns = target.functions()
    return "".join([f"  functions  {len(fns)}\n", *(f"    {fn.key}\n" for fn in fns)])


# -- reloading -----------------------------------------------------------------------

_SKIP_DIRS = {"__pycache__", "node_modules", "site-packages", "dist-packages"}


class SourceWatcher:
    """Polls the modification times of the ``.py`` files under some directories."""

    def __init__(self, roots: list[Path]) -> None:
        self.roots = roots
        self._seen = self.snapshot()

    def snapshot(self) -> dict[str, int]:
        found: dict[str, int] = {}
        for root in self.roots:
            for folder, dirs, files in os.walk(root):
                # Hidden folders, caches and virtual environments are not the project.
                dirs[:] = [d for d in dirs if not d.startswith(".") and d not in _SKIP_DIRS
                           and not os.path.exists(os.path.join(folder, d, "pyvenv.cfg"))]
                for name in files:
                    if name.endswith(".py"):
                        path = os.path.join(folder, name)
                        try:
                            found[path] = os.stat(path).st_mtime_ns
                        except OSError:  # removed while we walked
                            pass
        return found

    def changes(self) -> list[str]:
        """The files added, removed or modified since the last call."""
        now = self.snapshot()
        changed = sorted(p for p in now.keys() | self._seen.keys()
                         if now.get(p) != self._seen.get(p))
        self._seen = now
        return changed


def _is_project_file(path: str, roots: list[Path]) -> bool:
    if not os.path.isabs(path):  # "<frozen importlib._bootstrap>", "<string>", ...
        return False
    p = Path(path).resolve()
    if _SKIP_DIRS & set(p.parts):
        return False
    return any(p.is_relative_to(r) for r in roots)


def project_modules(roots: list[Path]) -> dict[str, ModuleType]:
    """The imported modules whose source is under ``roots`` (fanout's own excepted)."""
    found = {}
    for name, mod in list(sys.modules.items()):
        if name in ("__main__", "fanout") or name.startswith("fanout."):
            continue
        path = getattr(mod, "__file__", None)
        if isinstance(path, str) and _is_project_file(path, roots):
            found[name] = mod
    return found


def reimport(spec: str, roots: list[Path], changed: list[str]) -> Target:
    """Import the project's modules afresh and locate ``spec`` again.  On failure the
    previous modules are put back and the error is raised."""
    for path in changed:
        if path.endswith(".py"):
            # A file rewritten within the same second and at the same size would
            # otherwise be taken from its stale bytecode.
            try:
                os.remove(importlib.util.cache_from_source(path))
            except (OSError, ValueError, NotImplementedError):
                pass
    old = project_modules(roots)
    for name in old:
        del sys.modules[name]
    importlib.invalidate_caches()
    try:
        return locate(spec)
    except BaseException:
        for name in project_modules(roots):
            sys.modules.pop(name, None)
        sys.modules.update(old)
        raise


def load_error(exc: BaseException, roots: list[Path]) -> str:
    """Why the project failed to import: the error, and the lines of the project's
    own files that led to it."""
    text = f"{type(exc).__name__}: {exc}\n"
    cause = exc.__context__ if isinstance(exc, ConfigError) else exc
    if cause is None:
        return text
    te = traceback.TracebackException.from_exception(cause)
    te.stack = traceback.StackSummary.from_list(
        [f for f in te.stack if _is_project_file(f.filename, roots)])
    return text + "".join(te.format())


def watch_roots(target: Target) -> list[Path]:
    """The current directory (where ``-A`` imports from), and the app module's
    folder when it lies elsewhere."""
    roots = [Path.cwd().resolve()]
    mod = sys.modules.get(target.spec.partition(":")[0])
    path = getattr(mod, "__file__", None)
    if isinstance(path, str):
        folder = Path(path).resolve().parent
        if not any(folder.is_relative_to(r) for r in roots) and "site-packages" not in folder.parts:
            roots.append(folder)
    return roots


def _say(text: str) -> None:
    sys.stderr.write(text if text.endswith("\n") else text + "\n")
    sys.stderr.flush()


def run_dev(target: Target, *, host: str = "127.0.0.1", port: int = 8288,
            token: str | None = None, tokens: str | None = None,
            tokens_file: str | None = None, concurrency: int = 4, beat: bool = True,
            reload: bool = False, poll_interval: float = 0.5,
            on_ready: Callable[[DashboardServer], None] | None = None) -> None:
    """Run until Ctrl-C or SIGTERM; with ``reload``, restart the worker on new code."""
    # A memory:// store without the [embedded] extra fails here, in one line, rather
    # than after "ready" in every thread that touches the store.
    if target.is_memory:
        _ = target.runtime.store  # connecting checks the extra
    stop = threading.Event()

    def on_term(_sig: int, _frame: Any) -> None:
        stop.set()

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, on_term)
    roots = watch_roots(target)
    watcher = SourceWatcher(roots) if reload else None

    def next_change() -> list[str]:
        """Wait for a change to the sources (or for stop: then an empty list)."""
        while not stop.wait(poll_interval):
            if watcher is not None:
                changed = watcher.changes()
                if changed:
                    stop.wait(0.2)  # let an editor finish writing
                    return sorted({*changed, *watcher.changes()})
        return []

    dash = DashboardServer(target, host=host, port=port, token=token,  # fails fast on a bad bind
                           tokens=tokens, tokens_file=tokens_file)
    dash.start()
    try:
        current: Target | None = target
        first = True
        while current is not None and not stop.is_set():
            with worker_services(current, concurrency=concurrency, beat=beat):
                if first:
                    _say(banner(current, dash, token or tokens or tokens_file, beat))
                    if reload:
                        _say("  reload     on: " + ", ".join(str(r) for r in roots))
                    _say("ready. Ctrl-C to stop")
                    if on_ready is not None:
                        on_ready(dash)
                    first = False
                else:
                    _say("fanout dev: reloaded\n" + function_list(current).rstrip("\n"))
                current = None
                changed = next_change()
                while changed:
                    shown = ", ".join(os.path.relpath(p) for p in changed[:5])
                    try:
                        current = reimport(target.spec, roots, changed)
                        _say(f"fanout dev: {shown} changed; restarting the worker")
                        break
                    except Exception as exc:  # noqa: BLE001 - any error in the user's code
                        _say(f"fanout dev: {shown} changed, but the new code failed to load; "
                             "the worker keeps running the previous code:\n"
                             + load_error(exc, roots))
                        changed = next_change()
            if current is not None:
                dash.target = current
    except KeyboardInterrupt:
        pass
    finally:
        _say("fanout dev: stopping")
        dash.shutdown()
