"""Open ``wait_for_event`` steps in the store, where the router finds them.

A wait is a hash entry ``<run>:<step> -> spec`` under its event's name: in
``P:waits:<name>`` when it has no ``match``, else in the bucket of the value it
matches, ``P:waits:<name>|<path>=<h>``, so an event reads only the waits it can
satisfy; ``P:waits:<name>|paths`` lists the match paths in use.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .._core.event import dumps
from .keyspace import Keyspace
from .replies import text

WaitKey = tuple[str, "str | None"]


@dataclass(frozen=True)
class Prefetched:
    """The match paths by event name, and the open waits without ``match`` (read for
    every key in ``keys``, present when not empty) of a set of event names."""

    paths: dict[str, list[str]]
    open: dict[WaitKey, dict[str, dict[str, Any]]]

    @property
    def keys(self) -> set[WaitKey]:
        return {(name, None) for name in self.paths}


class WaitStore:
    def __init__(self, client: Any, keys: Keyspace, retention: int = 7 * 86400) -> None:
        self.r = client
        self.keys = keys
        self.retention = retention

    def register(
        self, name: str, member: str, spec: Mapping[str, Any], bucket: str | None = None
    ) -> None:
        pipe = self.r.pipeline(transaction=False)
        pipe.hset(self.keys.waits(name, bucket), member, dumps(spec))
        if bucket is not None:
            pipe.sadd(self.keys.wait_paths(name), bucket.split("=", 1)[0])
        pipe.execute()

    def queue_read(self, pipe: Any, names: Sequence[str]) -> None:
        """Queue, in a caller's pipeline, what :meth:`paths` and :meth:`open` of the
        waits without ``match`` read for ``names`` (two replies per name), so a sender
        reads them in the round trip that stores its events; :meth:`parse_read`
        decodes the replies."""
        for name in names:
            pipe.smembers(self.keys.wait_paths(name))
            pipe.hgetall(self.keys.waits(name, None))

    def parse_read(self, names: Sequence[str], replies: Sequence[Any]) -> Prefetched:
        paths: dict[str, list[str]] = {}
        open_: dict[WaitKey, dict[str, dict[str, Any]]] = {}
        for i, name in enumerate(names):
            paths[name] = sorted(text(p) for p in replies[2 * i] or ())
            raw = replies[2 * i + 1]
            if raw:
                open_[(name, None)] = {text(k): json.loads(v) for k, v in raw.items()}
        return Prefetched(paths, open_)

    def paths(self, names: Sequence[str]) -> dict[str, list[str]]:
        """The ``match`` paths that open waits use, by event name."""
        pipe = self.r.pipeline(transaction=False)
        for name in names:
            pipe.smembers(self.keys.wait_paths(name))
        return {n: sorted(text(p) for p in ps) for n, ps in zip(names, pipe.execute(), strict=True)}

    def open(self, keys: Sequence[WaitKey]) -> dict[WaitKey, dict[str, dict[str, Any]]]:
        """Open waits in the given (event name, bucket) hashes: {key: {member: spec}}."""
        if not keys:
            return {}
        pipe = self.r.pipeline(transaction=False)
        for name, bucket in keys:
            pipe.hgetall(self.keys.waits(name, bucket))
        out: dict[WaitKey, dict[str, dict[str, Any]]] = {}
        for key, raw in zip(keys, pipe.execute(), strict=True):
            if raw:
                out[key] = {text(k): json.loads(v) for k, v in raw.items()}
        return out

    def drop(self, name: str, members: Sequence[str], bucket: str | None = None) -> None:
        if members:
            self.r.hdel(self.keys.waits(name, bucket), *members)

    def note_resumed(self, pairs: Sequence[tuple[str, str]]) -> None:
        """Remember which runs each event resumed ((event id, run id) pairs), for as
        long as the event itself is kept: one round trip."""
        if not pairs:
            return
        pipe = self.r.pipeline(transaction=False)
        for event_id, run_id in pairs:
            key = self.keys.event_resumed(event_id)
            pipe.sadd(key, run_id)
            pipe.expire(key, self.retention)
        pipe.execute()

    def resumed_by(self, event_id: str) -> list[str]:
        """The ids of the runs whose wait ``event_id`` ended."""
        return sorted(text(m) for m in self.r.smembers(self.keys.event_resumed(event_id)))
