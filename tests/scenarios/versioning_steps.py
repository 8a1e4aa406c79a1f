"""The steps of ``test_versioning_helpers``'s functions, in a helper module: version 1
or 2 of this module (``FANOUT_TEST_CODE``) is what a deploy changes, while the
handlers that call it keep the same source (and so the same version fingerprint)."""

from __future__ import annotations

from typing import Any

import redis

import fanout
from tests.scenarios.versioning_helpers import CODE, counted

NAP = "4s"


def _sleep(ctx: fanout.ContextSync) -> None:
    ctx.step.sleep("nap", NAP)


if CODE == "1":

    def added(r: redis.Redis, ctx: fanout.ContextSync) -> list[Any]:
        a = counted(r, ctx, "a", "a1")
        _sleep(ctx)
        return [a, counted(r, ctx, "b", "b1")]

    changed = renamed = added

    def removed(r: redis.Redis, ctx: fanout.ContextSync) -> list[Any]:
        a = counted(r, ctx, "a", "a1")
        x = counted(r, ctx, "x", "x1")
        _sleep(ctx)
        return [a, x, counted(r, ctx, "b", "b1")]

    def reordered(r: redis.Redis, ctx: fanout.ContextSync) -> list[Any]:
        a = counted(r, ctx, "a", "a1")
        b = counted(r, ctx, "b", "b1")
        _sleep(ctx)
        return [a, b, counted(r, ctx, "c", "c1")]

    def retooled(r: redis.Redis, ctx: fanout.ContextSync) -> list[Any]:
        a = counted(r, ctx, "a", "a1")
        _sleep(ctx)
        return [a]

else:

    def added(r: redis.Redis, ctx: fanout.ContextSync) -> list[Any]:
        intro = counted(r, ctx, "intro", "intro2")  # a new step at the top
        a = counted(r, ctx, "a", "a2")
        _sleep(ctx)
        extra = counted(r, ctx, "extra", "extra2")  # and one after the sleep
        return [intro, a, extra, counted(r, ctx, "b", "b2")]

    def changed(r: redis.Redis, ctx: fanout.ContextSync) -> list[Any]:
        a = counted(r, ctx, "a", "a2")
        _sleep(ctx)
        return [a, counted(r, ctx, "b", "b2")]

    def renamed(r: redis.Redis, ctx: fanout.ContextSync) -> list[Any]:
        a = counted(r, ctx, "a-renamed", "a2")
        _sleep(ctx)
        return [a, counted(r, ctx, "b", "b2")]

    def removed(r: redis.Redis, ctx: fanout.ContextSync) -> list[Any]:
        a = counted(r, ctx, "a", "a2")
        _sleep(ctx)
        return [a, counted(r, ctx, "b", "b2")]

    def reordered(r: redis.Redis, ctx: fanout.ContextSync) -> list[Any]:
        b = counted(r, ctx, "b", "b2")
        a = counted(r, ctx, "a", "a2")
        _sleep(ctx)
        return [b, a, counted(r, ctx, "c", "c2")]

    def retooled(r: redis.Redis, ctx: fanout.ContextSync) -> list[Any]:
        ctx.step.sleep("a", "1s")  # the id of a completed ctx.step.run
        _sleep(ctx)
        return []
