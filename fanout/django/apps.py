"""The app config: checks ``settings.FANOUT``, loads ``fanout_functions`` modules and
registers the outbox sweeper with the workers' timer thread."""

from __future__ import annotations

from django.apps import AppConfig


class FanoutConfig(AppConfig):
    name = "fanout.django"
    label = "fanout"
    verbose_name = "fanout"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from . import sweeper
        from ._project import autodiscover, client
        from .conf import connect_reset_signal, get_settings

        connect_reset_signal()
        conf = get_settings()
        if conf.functions_module:
            autodiscover(conf.functions_module)
        if conf.sweeper:
            # Every process registers it; only a worker's main process (where the
            # timer thread starts on worker_ready) ever runs it.
            sweeper.install(client().runtime, conf)
