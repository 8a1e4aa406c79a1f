"""The ``fanout`` command line (console entry point ``fanout._cli:main``) and
``fanout dev``."""

from .commands import main

__all__ = ["main"]
