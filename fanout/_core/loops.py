"""The event loop each thread runs async handlers and async hooks on.

A sync worker thread runs an ``async def`` handler (or an awaitable a step returned,
or an async middleware hook) to completion on a loop of its own, created once per
thread and reused, so a pass costs no loop set-up.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from .._errors import NonRetriableError

_loops = threading.local()


def thread_loop() -> asyncio.AbstractEventLoop:
    """This thread's event loop for async handlers (created once, reused)."""
    loop: asyncio.AbstractEventLoop | None = getattr(_loops, "loop", None)
    if loop is None or loop.is_closed():
        loop = asyncio.new_event_loop()
        _loops.loop = loop
    return loop


def run_coroutine(coro: Any) -> Any:
    """Run a coroutine to completion from synchronous code."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return thread_loop().run_until_complete(coro)
    coro.close()
    raise NonRetriableError(
        "an async step handler was called from a sync function handler running inside an "
        "event loop; declare the function handler with 'async def'"
    )
