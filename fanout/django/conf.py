"""The ``FANOUT`` setting: parsed once, checked key by key.

Every problem raises :class:`django.core.exceptions.ImproperlyConfigured`
naming the offending key, e.g. ``FANOUT['SWEEP_GRACE'] must be ...``.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from django.core.exceptions import ImproperlyConfigured

SETTING = "FANOUT"

#: What ``FANOUT["CLIENT_OPTIONS"]`` may pass on to :class:`fanout.Fanout`.
CLIENT_OPTION_NAMES = frozenset(
    {"retry_backoff", "checkpoint", "pass_budget", "recovery_timeout", "retention",
     "max_event_bytes"}
)

_REDIS_SCHEMES = ("redis://", "rediss://", "unix://", "memory://")


@dataclass(frozen=True)
class FanoutSettings:
    """The parsed ``FANOUT`` setting (see docs/howto/django.md for each key)."""

    app_id: str
    celery_app: str
    celery_app_derived: bool = False
    redis_url: str | None = None
    database: str = "default"
    functions_module: str | None = "fanout_functions"
    sweeper: bool = True
    sweep_interval: float = 5.0
    sweep_grace: float = 10.0
    sweep_batch: int = 100
    sweep_max_backoff: float = 300.0
    client_options: Mapping[str, Any] = field(default_factory=dict)

    def backoff(self, attempts: int) -> float:
        """Seconds to wait before the next publish after ``attempts`` failed ones."""
        step = max(self.sweep_interval, 1.0) * 2.0 ** min(max(attempts, 1) - 1, 30)
        return float(min(self.sweep_max_backoff, step))


def _key(name: str) -> str:
    return f"{SETTING}[{name!r}]"


def _number(raw: Mapping[str, Any], name: str, default: float, *, low: float, high: float) -> float:
    value = raw.get(name, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ImproperlyConfigured(f"{_key(name)} must be a number of seconds, not {value!r}")
    if not low <= value <= high:
        raise ImproperlyConfigured(
            f"{_key(name)} must be between {low:g} and {high:g} seconds, not {value!r}"
        )
    return float(value)


def _derive_celery_app(settings_module: str | None) -> str | None:
    """``proj.settings`` (or ``proj.settings.prod``) -> ``proj.celery:app``."""
    if not settings_module or "." not in settings_module:
        return None
    return settings_module.split(".", 1)[0] + ".celery:app"


def parse(raw: Any, *, settings_module: str | None = None, databases: Any = None) -> FanoutSettings:
    """Check the ``FANOUT`` dict; ``settings_module`` gives the ``CELERY_APP`` default."""
    if raw is None:
        raise ImproperlyConfigured(
            f"settings.{SETTING} is not set: add FANOUT = {{'APP_ID': 'my-app', "
            "'CELERY_APP': 'proj.celery:app'}} to use fanout.django"
        )
    if not isinstance(raw, Mapping):
        raise ImproperlyConfigured(f"settings.{SETTING} must be a dict, not {type(raw).__name__}")
    known = {f.upper() for f in FanoutSettings.__dataclass_fields__} - {"CELERY_APP_DERIVED"}
    unknown = sorted(str(k) for k in raw if k not in known)
    if unknown:
        raise ImproperlyConfigured(
            f"unknown key {_key(unknown[0])} in settings.{SETTING}; known keys: "
            + ", ".join(sorted(known))
        )

    app_id = raw.get("APP_ID")
    if not isinstance(app_id, str) or not app_id.strip():
        raise ImproperlyConfigured(
            f"{_key('APP_ID')} is required: a short name for this project, e.g. 'shop' "
            f"(got {app_id!r})"
        )

    celery_app = raw.get("CELERY_APP")
    derived = False
    if celery_app is None:
        celery_app = _derive_celery_app(settings_module)
        derived = True
        if celery_app is None:
            raise ImproperlyConfigured(
                f"{_key('CELERY_APP')} is required: the import path of your Celery app, "
                "e.g. 'proj.celery:app'"
            )
    if (
        not isinstance(celery_app, str)
        or not celery_app.strip()
        or celery_app != celery_app.strip()
    ):
        raise ImproperlyConfigured(
            f"{_key('CELERY_APP')} must be an import path like 'proj.celery:app', "
            f"not {celery_app!r}"
        )

    redis_url = raw.get("REDIS_URL")
    if redis_url is not None and (
        not isinstance(redis_url, str) or not redis_url.startswith(_REDIS_SCHEMES)
    ):
        raise ImproperlyConfigured(
            f"{_key('REDIS_URL')} must be a redis://, rediss://, unix:// or memory:// URL, "
            f"not {redis_url!r}"
        )

    database = raw.get("DATABASE", "default")
    if not isinstance(database, str) or not database:
        raise ImproperlyConfigured(f"{_key('DATABASE')} must be a database alias, not {database!r}")
    if isinstance(databases, Mapping) and database not in databases:
        raise ImproperlyConfigured(
            f"{_key('DATABASE')} is {database!r}, which is not in settings.DATABASES "
            f"({', '.join(map(repr, databases)) or 'none'})"
        )

    module = raw.get("FUNCTIONS_MODULE", "fanout_functions")
    if module is not None and (not isinstance(module, str) or not module.isidentifier()):
        raise ImproperlyConfigured(
            f"{_key('FUNCTIONS_MODULE')} must be a module name like 'fanout_functions' "
            f"(or None to turn discovery off), not {module!r}"
        )

    sweeper = raw.get("SWEEPER", True)
    if not isinstance(sweeper, bool):
        raise ImproperlyConfigured(f"{_key('SWEEPER')} must be True or False, not {sweeper!r}")

    batch = raw.get("SWEEP_BATCH", 100)
    if isinstance(batch, bool) or not isinstance(batch, int) or not 1 <= batch <= 5000:
        raise ImproperlyConfigured(
            f"{_key('SWEEP_BATCH')} must be an integer from 1 to 5000, not {batch!r}"
        )

    options = raw.get("CLIENT_OPTIONS", {})
    if not isinstance(options, Mapping):
        raise ImproperlyConfigured(f"{_key('CLIENT_OPTIONS')} must be a dict, not {options!r}")
    bad = sorted(str(k) for k in options if k not in CLIENT_OPTION_NAMES)
    if bad:
        raise ImproperlyConfigured(
            f"{_key('CLIENT_OPTIONS')} has an unknown option {bad[0]!r}; allowed: "
            + ", ".join(sorted(CLIENT_OPTION_NAMES))
        )

    return FanoutSettings(
        app_id=app_id,
        celery_app=celery_app,
        celery_app_derived=derived,
        redis_url=redis_url,
        database=database,
        functions_module=module or None,
        sweeper=sweeper,
        sweep_interval=_number(raw, "SWEEP_INTERVAL", 5.0, low=0.1, high=3600),
        sweep_grace=_number(raw, "SWEEP_GRACE", 10.0, low=0, high=86400),
        sweep_batch=batch,
        sweep_max_backoff=_number(raw, "SWEEP_MAX_BACKOFF", 300.0, low=1, high=86400),
        client_options=dict(options),
    )


_cached: FanoutSettings | None = None
_lock = threading.Lock()


def get_settings() -> FanoutSettings:
    """The project's parsed ``FANOUT`` setting (cached; reset when a test overrides it)."""
    global _cached
    with _lock:
        if _cached is None:
            from django.conf import settings

            _cached = parse(
                getattr(settings, SETTING, None),
                settings_module=getattr(settings, "SETTINGS_MODULE", None),
                databases=getattr(settings, "DATABASES", None),
            )
        return _cached


def _reset(*, setting: str = "", **_: Any) -> None:
    global _cached
    if setting in (SETTING, "DATABASES"):
        with _lock:
            _cached = None


def connect_reset_signal() -> Callable[..., None]:
    """Forget the cached settings when ``override_settings(FANOUT=...)`` changes them."""
    from django.core.signals import setting_changed

    setting_changed.connect(_reset, dispatch_uid="fanout.django.conf.reset")
    return _reset
