"""Forking while a background thread is inside Celery: the child must not inherit a
held lock.

Celery and kombu guard lazily computed attributes (``app.amqp`` ...) with one lock
per attribute, shared by all instances, and take it on every access.  A prefork
worker forks a new pool process whenever one dies or is recycled, from the main
process where fanout's timer thread publishes.  These tests fork for real, from a
process whose other thread keeps reading ``app.amqp``; a child that blocks on the
inherited lock is stopped by an alarm and counted.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, nullcontext

import pytest
from celery import Celery

from fanout._celery.forkgate import ForkGate, gate

FORKS = 40


def hung_children(section: Callable[[], AbstractContextManager[object]]) -> int:
    """Fork FORKS times while a thread reads ``app.amqp`` inside ``section()``;
    returns how many children could not read it themselves."""
    app = Celery("forkgate", broker="memory://")
    app.amqp  # noqa: B018 - computed once, read under the attribute's lock from then on
    stop = threading.Event()

    def spin() -> None:
        while not stop.is_set():
            with section():
                app.amqp.router  # noqa: B018

    thread = threading.Thread(target=spin, daemon=True)
    thread.start()
    hung = 0
    try:
        for _ in range(FORKS):
            pid = os.fork()
            if pid == 0:  # the child: one attribute read, bounded by an alarm
                signal.signal(signal.SIGALRM, signal.SIG_DFL)  # not pytest-timeout's
                signal.setitimer(signal.ITIMER_REAL, 0.5)
                app.amqp  # noqa: B018
                os._exit(0)
            _, status = os.waitpid(pid, 0)
            if os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGALRM:
                hung += 1
    finally:
        stop.set()
        thread.join(5)
    return hung


@pytest.fixture(autouse=True)
def _quiet_fork_warning() -> Iterator[None]:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # fork with threads (3.12+)
        yield


def test_without_the_gate_children_inherit_a_held_lock() -> None:
    """The hazard is real: this set-up deadlocks children when nothing prevents it."""
    assert hung_children(nullcontext) > 0


def test_with_the_gate_no_child_blocks() -> None:
    assert hung_children(gate.section) == 0


def test_a_fork_waits_for_open_sections_and_blocks_new_ones() -> None:
    g = ForkGate()
    inside, release = threading.Event(), threading.Event()
    order: list[str] = []

    def worker() -> None:
        with g.section():
            inside.set()
            release.wait(5)
            order.append("section ended")

    t = threading.Thread(target=worker)
    t.start()
    inside.wait(5)
    forker = threading.Thread(target=lambda: (g.before_fork(), order.append("forking")))
    forker.start()
    forker.join(0.2)
    assert forker.is_alive() and g.open_sections == 1  # the fork waits
    release.set()
    forker.join(5)
    t.join(5)
    assert order == ["section ended", "forking"]
    # While forking, a new section waits until the fork is over.
    entered = threading.Event()

    def late() -> None:
        with g.section():
            entered.set()

    t2 = threading.Thread(target=late)
    t2.start()
    assert not entered.wait(0.2)
    g.after_fork_in_parent()
    assert entered.wait(5)
    t2.join(5)


def test_the_child_starts_with_a_fresh_gate() -> None:
    g = ForkGate()
    g.before_fork()
    g.after_fork_in_child()
    with g.section():
        assert g.open_sections == 1
