"""The package version, read from the installed distribution's metadata.

The version is written in one place, ``pyproject.toml``; ``fanout.__version__`` and
``fanout --version`` report what ``pip`` installed (docs/releasing.md).
"""

from importlib.metadata import PackageNotFoundError, version

DISTRIBUTION = "celery-fanout"

try:
    __version__ = version(DISTRIBUTION)
except PackageNotFoundError:  # a source tree put on sys.path without installing it
    __version__ = "0+unknown"
