"""Concurrency slots: the keys of a function's constraints, giving slots back, and
waking the runs that wait for one.

A pass (or parallel branch) of a function with ``concurrency`` holds a slot in each
constraint while it executes (taking them is flow control's gate at a pass,
``gates.py``); when one is full the run goes back to ``queued`` without holding a
worker and joins the key's waiting list (ordered by waiting time minus priority).
A release hands the slot to the first waiter, reserved for it for one lease time,
and enqueues it.  A slot carries the pass's lease time, so the slot of a worker that
died expires with its lease; a waiter also checks again on its own every
:func:`fallback_s`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .._core.flow_math import concurrency_bucket
from .._core.function import FunctionDef
from .._core.ids import from_key_part, key_part
from .._core.run_record import EVENT
from .runtime import Runtime


@dataclass
class Hold:
    """Concurrency slots held by one pass (``field='lease'``) or branch (``bl:<step>``)."""

    keys: list[str]
    holder: str
    limits: list[int]
    run_id: str
    field: str
    released: bool = False


def fallback_s(rt: Runtime) -> float:
    """How often a run waiting for a slot checks again on its own (a release
    normally wakes it at once; this covers a waker that died and expired slots)."""
    return max(1.0, rt.lease_s / 2)


def reserve_ms(rt: Runtime, now: float) -> int:
    """Until when a slot handed to a woken waiter stays reserved for it."""
    return int((now + rt.lease_s) * 1000)


def concurrency_keys(rt: Runtime, fn: FunctionDef, event: Mapping[str, Any]) -> list[str]:
    """slots, waiting [, slots, waiting]: all of an app's under one hash tag."""
    return rt.store.flow.concurrency_keys(
        fn.app_id, [concurrency_bucket(fn.app_id, fn.fn_id, c, event) for c in fn.flow.concurrency])


def pass_waiter(fn: FunctionDef, run_id: str) -> str:
    return f"p|{key_part(fn.key)}|{run_id}"


def branch_waiter(fn: FunctionDef, run_id: str, step_id: str) -> str:
    return f"b|{key_part(fn.key)}|{run_id}|{step_id}"


def release(rt: Runtime, hold: Hold | None) -> None:
    """Give back the slots of a pass or branch (once)."""
    if hold is None or hold.released:
        return
    hold.released = True
    store = rt.store
    store.drop_slot_hold(hold.run_id, hold.field)
    now = time.time()
    wake(rt, store.flow.release_slots(hold.keys, hold.holder, "", now, reserve_ms(rt, now),
                                      hold.limits))


def forget_waiter(rt: Runtime, fn: FunctionDef, run_id: str, fields: Mapping[str, str]) -> None:
    """A run that ended while waiting for a slot leaves the waiting list (and gives
    back a slot reserved for it)."""
    keys = concurrency_keys(rt, fn, json.loads(fields.get(EVENT, "{}")))
    now = time.time()
    wake(rt, rt.store.flow.release_slots(keys, "", pass_waiter(fn, run_id), now,
                                         reserve_ms(rt, now),
                                         [c.limit for c in fn.flow.concurrency]))


def wake(rt: Runtime, waiters: Sequence[str]) -> None:
    """Enqueue the passes and branches that were handed a slot."""
    if not waiters:
        return
    with rt.publisher.batch() as producer:
        for w in dict.fromkeys(waiters):
            parts = w.split("|", 3)
            if parts[0] == "p" and len(parts) == 3:
                rt.publisher.enqueue(from_key_part(parts[1]), parts[2], None, producer=producer)
            elif parts[0] == "b" and len(parts) == 4:
                rt.publisher.enqueue(from_key_part(parts[1]), parts[2], None, branch=parts[3],
                                     producer=producer)
