"""settings.FANOUT parsing: defaults, and errors that name the bad key."""

from __future__ import annotations

import pytest

pytest.importorskip("django", reason="Django is not installed (pip install django)")

from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings

from fanout.django import conf
from fanout.django._project import load_celery_app

BASE = {"APP_ID": "shop", "CELERY_APP": "proj.celery:app"}


def test_defaults() -> None:
    s = conf.parse(BASE)
    assert s.app_id == "shop"
    assert s.redis_url is None
    assert (s.database, s.functions_module, s.sweeper) == ("default", "fanout_functions", True)
    assert (s.sweep_interval, s.sweep_grace, s.sweep_batch) == (5.0, 10.0, 100)
    assert s.backoff(1) == 5.0 and s.backoff(3) == 20.0 and s.backoff(50) == 300.0


def test_celery_app_defaults_to_the_settings_package() -> None:
    s = conf.parse({"APP_ID": "shop"}, settings_module="mysite.settings.prod")
    assert (s.celery_app, s.celery_app_derived) == ("mysite.celery:app", True)
    with pytest.raises(ImproperlyConfigured, match=r"FANOUT\['CELERY_APP'\] is required"):
        conf.parse({"APP_ID": "shop"}, settings_module=None)


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        ({"CELERY_APP": "p.celery:app"}, "APP_ID"),
        ({**BASE, "APP_ID": 3}, "APP_ID"),
        ({**BASE, "CELERY_APP": ""}, "CELERY_APP"),
        ({**BASE, "REDIS_URL": "http://localhost"}, "REDIS_URL"),
        ({**BASE, "DATABASE": "other"}, "DATABASE"),
        ({**BASE, "FUNCTIONS_MODULE": "not a module"}, "FUNCTIONS_MODULE"),
        ({**BASE, "SWEEPER": "yes"}, "SWEEPER"),
        ({**BASE, "SWEEP_INTERVAL": 0}, "SWEEP_INTERVAL"),
        ({**BASE, "SWEEP_GRACE": "10"}, "SWEEP_GRACE"),
        ({**BASE, "SWEEP_GRACE": float("nan")}, "SWEEP_GRACE"),
        ({**BASE, "SWEEP_BATCH": 0}, "SWEEP_BATCH"),
        ({**BASE, "SWEEP_MAX_BACKOFF": True}, "SWEEP_MAX_BACKOFF"),
        ({**BASE, "CLIENT_OPTIONS": {"celery": None}}, "CLIENT_OPTIONS"),
        ({**BASE, "SWEEP_GRCE": 3}, "SWEEP_GRCE"),
    ],
)
def test_bad_values_name_their_key(raw: dict[str, object], key: str) -> None:
    with pytest.raises(ImproperlyConfigured, match=rf"FANOUT\['{key}'\]"):
        conf.parse(raw, databases={"default": {}})


def test_missing_or_wrong_type() -> None:
    with pytest.raises(ImproperlyConfigured, match="settings.FANOUT is not set"):
        conf.parse(None)
    with pytest.raises(ImproperlyConfigured, match="must be a dict"):
        conf.parse(["APP_ID"])


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("tests.django.no_such_module:app", "there is no module 'tests.django.no_such_module'"),
        ("tests.django.testproj.celery:nope", "has no attribute 'nope'"),
        ("tests.django.settings:SECRET_KEY", "is a str, not a Celery app"),
        ("just_a_name", "must look like 'proj.celery:app'"),
    ],
)
def test_celery_app_errors(path: str, message: str) -> None:
    with pytest.raises(ImproperlyConfigured, match=message):
        load_celery_app(conf.parse({**BASE, "CELERY_APP": path}))


def test_dotted_path_and_colon_path_load_the_same_app() -> None:
    a = load_celery_app(conf.parse({**BASE, "CELERY_APP": "tests.django.testproj.celery:app"}))
    b = load_celery_app(conf.parse({**BASE, "CELERY_APP": "tests.django.testproj.celery.app"}))
    assert a is b


def test_override_settings_resets_the_cache() -> None:
    before = conf.get_settings()
    changed = {"APP_ID": "other", "CELERY_APP": before.celery_app, "SWEEP_GRACE": 42}
    with override_settings(FANOUT=changed):
        assert conf.get_settings().sweep_grace == 42
    assert conf.get_settings() == before
