"""The project's one :class:`fanout.Fanout` client, built from ``settings.FANOUT``."""

from __future__ import annotations

import importlib
import logging
import sys
import threading
from types import ModuleType

from celery import Celery
from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import module_has_submodule

from .._client import Fanout
from .._errors import ConfigError
from .conf import FanoutSettings, get_settings

log = logging.getLogger("fanout.django")

_client: Fanout | None = None
_lock = threading.RLock()
discovered: list[str] = []


def _split(path: str) -> tuple[str, str]:
    if ":" in path:
        module, _, attr = path.partition(":")
    else:
        module, _, attr = path.rpartition(".")
    if not module or not attr or not attr.isidentifier():
        raise ImproperlyConfigured(
            f"FANOUT['CELERY_APP'] must look like 'proj.celery:app', not {path!r}"
        )
    return module, attr


def load_celery_app(conf: FanoutSettings) -> Celery:
    """Import ``FANOUT['CELERY_APP']`` and check it is a Celery app."""
    path = conf.celery_app
    module_name, attr = _split(path)
    how = (
        " (the default derived from your settings module; set it explicitly)"
        if conf.celery_app_derived
        else ""
    )
    module: ModuleType | None = sys.modules.get(module_name)
    if module is None:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name and (module_name == exc.name or module_name.startswith(exc.name + ".")):
                raise ImproperlyConfigured(
                    f"FANOUT['CELERY_APP'] is {path!r}{how}, but there is no module {module_name!r}"
                ) from exc
            raise
    app = getattr(module, attr, None)
    if app is None:
        raise ImproperlyConfigured(
            f"FANOUT['CELERY_APP'] is {path!r}{how}, but module {module_name!r} has no attribute "
            f"{attr!r} (if that module calls django.setup(), create the Celery app before it)"
        )
    if not isinstance(app, Celery):
        raise ImproperlyConfigured(
            f"FANOUT['CELERY_APP'] is {path!r}, which is a {type(app).__name__}, not a Celery app"
        )
    return app


def client() -> Fanout:
    """The project's :class:`fanout.Fanout` client, created on first use.

    Use it in ``fanout_functions.py`` (``@client().create_function(...)``), and to
    inspect runs (``client().get_run(...)``).  It is shared by the whole process.
    """
    global _client
    with _lock:
        if _client is None:
            conf = get_settings()
            app = load_celery_app(conf)
            try:
                _client = Fanout(
                    conf.app_id,
                    celery=app,
                    redis_url=conf.redis_url,
                    **dict(conf.client_options),
                )
            except ConfigError as exc:
                raise ImproperlyConfigured(f"settings.FANOUT: {exc}") from exc
            except TypeError as exc:
                if not conf.client_options:
                    raise
                raise ImproperlyConfigured(f"FANOUT['CLIENT_OPTIONS']: {exc}") from exc
        return _client


def autodiscover(module_name: str) -> list[str]:
    """Import ``<app>.<module_name>`` for every installed app that has one."""
    from django.apps import apps

    found: list[str] = []
    for app_config in apps.get_app_configs():
        if module_has_submodule(app_config.module, module_name):
            full = f"{app_config.name}.{module_name}"
            importlib.import_module(full)
            found.append(full)
    with _lock:
        discovered[:] = found
    if found:
        log.debug("fanout: loaded %s", ", ".join(found))
    return found
