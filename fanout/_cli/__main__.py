"""``python -m fanout._cli``: the ``fanout`` command."""

from .commands import main

raise SystemExit(main())
