"""Finding an app's fanout clients the way ``celery -A`` finds a Celery app.

``module`` or ``module:attr``: the module is imported (the current directory is
put on ``sys.path`` first, as celery does).  ``attr`` may name a Celery app or a
:class:`fanout.Fanout` client.  Without it the module's attributes are searched
(``app``, then ``celery``, then any Celery app; a package's ``celery`` submodule
as a last resort), and the app's default modules (``imports``, autodiscovered
tasks) are imported as a worker would, so functions declared elsewhere count.

:class:`Target` is what the CLI and the dashboard steer: the app, its runtime,
its clients, and the operations on runs that are shared by both.
"""

from __future__ import annotations

import importlib
import os
import sys
from dataclasses import dataclass
from typing import Any

from celery import Celery

from .._celery import endings, pausing
from .._celery.runtime import Runtime, get_runtime
from .._client import Fanout
from .._core.event import INVOKE_EVENT, Event, prepare_batch, quoted
from .._core.function import FunctionDef
from .._core.ids import run_id_for
from .._errors import ConfigError
from .._redis.history import History
from .._redis.pause_store import PauseInfo


@dataclass
class Target:
    """A Celery app with its fanout runtime and clients."""

    app: Celery
    runtime: Runtime
    clients: list[Fanout]
    spec: str = ""

    @property
    def redis_url(self) -> str:
        return self.runtime.redis_url

    @property
    def is_memory(self) -> bool:
        return self.redis_url.startswith("memory://")

    @property
    def history(self) -> History:
        return History(self.runtime.store)

    @property
    def broker_url(self) -> str:
        """The URL the app publishes to, its password masked."""
        from kombu.utils.url import maybe_sanitize_url

        return str(maybe_sanitize_url(self.app.conf.broker_write_url or "amqp://localhost//"))

    def triggered_by(self, event_id: str) -> tuple[list[FunctionDef], list[FunctionDef]]:
        """For a stored event: the functions whose trigger names it, and of those, the
        ones whose trigger expression accepts it (the runs the router will start)."""
        (wire,) = self.runtime.store.load_events([event_id])
        if wire is None:
            raise ConfigError(f"no event {quoted(event_id)} (unknown, or past its retention)")
        named: dict[str, FunctionDef] = {}
        for fn, _trig in self.runtime.index.candidates(str(wire.get("name", ""))):
            named.setdefault(fn.key, fn)
        return list(named.values()), list(self.runtime.index.match(wire))

    def event_triggers(self) -> list[str]:
        """Every event trigger declared, as ``name`` or ``name if expression``."""
        shown = {t.event + (f" if {t.expression}" if t.expression else "")
                 for fn in self.runtime.functions.values() for t in fn.event_triggers}
        return sorted(shown)

    def has_run(self, run_id: str) -> bool:
        return self.runtime.store.run_exists(run_id)

    def functions(self) -> list[FunctionDef]:
        return [self.runtime.functions[k] for k in sorted(self.runtime.functions)]

    def function(self, ref: str) -> FunctionDef:
        """A function by key (``app:fn``) or by id when the id is unambiguous."""
        fns = self.runtime.functions
        if ref in fns:
            return fns[ref]
        found = [fn for fn in fns.values() if fn.fn_id == ref]
        if len(found) == 1:
            return found[0]
        if found:
            keys = ", ".join(sorted(fn.key for fn in found))
            raise ConfigError(f"function id {ref!r} is declared by several apps: use one of {keys}")
        known = ", ".join(sorted(fns)) or "none"
        raise ConfigError(f"no function {quoted(ref)} in {self.spec or 'this app'} (functions: {known})")

    def client(self, app_id: str | None = None) -> Fanout:
        for c in self.clients:
            if app_id is None or c.app_id == app_id:
                return c
        return self.clients[0]

    # -- operations ------------------------------------------------------------------

    def send(self, name: str, data: dict[str, Any] | None = None, *, id: str | None = None,
             user: dict[str, Any] | None = None) -> str:
        return self.client().emit(name, data, id=id, user=user)

    def invoke(self, fn_ref: str, data: dict[str, Any] | None = None) -> str:
        """Start a run of a function now; resolved through the shared runtime, so it
        works whichever module declared the function and its client."""
        fn = self.function(fn_ref)
        ev = Event(name=INVOKE_EVENT, data={"fn_id": fn.fn_id, **dict(data or {})})
        (eid,) = self.runtime.publisher.publish(prepare_batch(ev, allow_reserved=True),
                                                target=fn.key)
        return run_id_for(eid, fn.key)

    def cancel(self, run_id: str, reason: str = "cancelled by request") -> str:
        """'cancelled', 'flagged' (stops after the running step), 'ended' or 'missing'."""
        return endings.cancel(self.runtime, run_id, reason)

    def pause(self, fn_key: str, reason: str = "") -> bool:
        """Pause a function; False when it was paused already."""
        return self.runtime.paused.pause(fn_key, reason)

    def resume(self, fn_key: str, *, skip_backlog: bool = False) -> tuple[int, int]:
        """Resume a function: (passes handed back, runs recorded as skipped)."""
        return pausing.resume(self.runtime, fn_key, skip_backlog=skip_backlog)

    def pause_info(self, fn_key: str) -> PauseInfo | None:
        return self.runtime.paused.info(fn_key)

    def replay(self, run_id: str) -> str:
        return self.client(self._app_of(run_id)).replay(run_id)

    def rerun(self, run_id: str, from_step: str) -> str:
        return self.client(self._app_of(run_id)).rerun(run_id, from_step=from_step)

    def _app_of(self, run_id: str) -> str | None:
        app = self.runtime.store.run_field(run_id, "app")
        if app is None:
            raise ConfigError(f"no run {quoted(run_id)} (unknown, or past its retention)")
        return app


def _import(name: str) -> Any:
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name and (name == exc.name or name.startswith(exc.name + ".")):
            raise ConfigError(
                f"cannot import app module {name!r}: no module named {exc.name!r} "
                f"(run from the project directory or set PYTHONPATH)"
            ) from None
        raise ConfigError(f"importing {name!r} failed: {exc}") from None
    except ConfigError:
        raise
    except Exception as exc:  # noqa: BLE001 - the user's module raised while importing
        raise ConfigError(f"importing {name!r} failed: {type(exc).__name__}: {exc}") from None


def _find_app(module: Any) -> Celery | None:
    for attr in ("app", "celery"):
        obj = getattr(module, attr, None)
        if isinstance(obj, Celery):
            return obj
    for value in vars(module).values():
        if isinstance(value, Celery):
            return value
    for value in vars(module).values():
        if isinstance(value, Fanout):
            return value.celery
    return None


def locate(spec: str) -> Target:
    """The :class:`Target` for ``-A module[:attr]``; raises ConfigError with one clear line."""
    if not spec or spec.startswith(":"):
        raise ConfigError("no app given: pass -A module[:attr] or set FANOUT_APP")
    mod_name, _, attr = spec.partition(":")
    module = _import(mod_name)
    app: Celery | None = None
    clients: list[Fanout] = []
    if attr:
        obj: Any = module
        for part in attr.split("."):
            if not hasattr(obj, part):
                raise ConfigError(f"module {mod_name!r} has no attribute {attr!r}")
            obj = getattr(obj, part)
        if isinstance(obj, Fanout):
            app, clients = obj.celery, [obj]
        elif isinstance(obj, Celery):
            app = obj
        else:
            raise ConfigError(
                f"{spec} is a {type(obj).__name__}, not a Celery app or a fanout.Fanout client"
            )
    else:
        app = _find_app(module)
        if app is None and not hasattr(module, "__path__"):
            raise ConfigError(f"module {mod_name!r} has no Celery app (looked for 'app', "
                              "'celery' and any celery.Celery attribute)")
        if app is None:
            app = _find_app(_import(f"{mod_name}.celery"))
        if app is None:
            raise ConfigError(f"no Celery app found in {mod_name!r} or {mod_name}.celery")
    try:
        app.loader.import_default_modules()
    except ConfigError:
        raise
    except Exception as exc:  # noqa: BLE001 - the app's own imports failed
        raise ConfigError(f"importing the modules of app {app.main!r} failed: {exc}") from None
    if not clients:
        clients = [v for v in vars(module).values() if isinstance(v, Fanout) and v.celery is app]
    rt = clients[0].runtime if clients else get_runtime(app)
    if rt is None or rt.app is not app:
        raise ConfigError(
            f"the Celery app {app.main!r} in {mod_name!r} has no fanout client: create "
            "fanout.Fanout(app_id, celery=app) in that module or one it imports"
        )
    if not clients:
        # Clients live in modules the app imports: a client on the same runtime acts
        # for them (runs are looked up by key in the shared runtime).
        app_ids = sorted({fn.app_id for fn in rt.functions.values()}) or ["fanout-cli"]
        clients = [Fanout(a, celery=app, redis_url=rt.redis_url) for a in app_ids]
    return Target(app=app, runtime=rt, clients=clients, spec=spec)


__all__ = ["Target", "locate"]
