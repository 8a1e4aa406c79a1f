"""fanout's Lua scripts: finding, loading and running them.

Every atomic transition is a script in ``lua/`` beside this module (``<name>.lua``);
files whose name starts with ``_`` are libraries, inlined where a script has the line
``--#include <library>``.  Comment lines are dropped when a script is loaded, so what
Redis caches (and the SHA it is run by) changes only when code does.

:class:`Scripts` loads every script when the store is built, and runs them as
``EVALSHA``: alone (redis-py loads a script Redis does not know and sends it again)
or queued in a pipeline, which :meth:`Scripts.execute` sends once more after loading
every script when Redis answers ``NOSCRIPT`` (after a restart or a flush).  On a
Redis Cluster the same holds (``cluster.py``): loading goes to every primary.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from importlib import resources
from typing import Any

import redis
from redis.cluster import RedisCluster

from .cluster import VIA_CLUSTER, node_client

INCLUDE = "--#include "


def _folder() -> Any:
    return resources.files("fanout._redis").joinpath("lua")


@cache
def script_names() -> tuple[str, ...]:
    """Every script in ``lua/`` (libraries excluded), sorted."""
    return tuple(sorted(
        entry.name[:-4] for entry in _folder().iterdir()
        if entry.name.endswith(".lua") and not entry.name.startswith("_")
    ))


def is_comment(line: str) -> bool:
    """A Lua comment line (not an include directive)."""
    stripped = line.lstrip()
    return stripped.startswith("--") and not stripped.startswith(INCLUDE)


@cache
def load_script(name: str) -> str:
    """The text of ``lua/<name>.lua`` as Redis runs it: each ``--#include <lib>`` line
    replaced by ``lua/<lib>.lua``, comment lines dropped."""
    folder = _folder()
    out: list[str] = []
    for line in folder.joinpath(f"{name}.lua").read_text("utf-8").splitlines(keepends=True):
        if line.startswith(INCLUDE):
            out.append(load_script(line.split()[1]))
        elif not is_comment(line):
            out.append(line)
    return "".join(out)


class Scripts:
    """The scripts registered on one client; ``header`` is a first line put before
    each (the script flags on a Redis Cluster that counts metrics: cluster.py)."""

    def __init__(self, client: Any, header: str = "") -> None:
        self.client = client
        self._scripts = {name: client.register_script(header + load_script(name))
                         for name in script_names()}
        self._cluster = isinstance(client, RedisCluster)

    def sha(self, name: str) -> str:
        return str(self._scripts[name].sha)

    def run(self, name: str, keys: Sequence[str], args: Sequence[Any]) -> Any:
        """Run one script now (one round trip, two after a Redis restart). On a Redis
        Cluster it goes straight to the node of its first key (``cluster.node_client``)
        and, on a redirect, NOSCRIPT or a lost connection, through the cluster client."""
        script = self._scripts[name]
        if self._cluster and keys:
            node = node_client(self.client, keys[0])
            if node is not None:
                try:
                    return node.evalsha(script.sha, len(keys), *keys, *args)
                except VIA_CLUSTER:
                    pass
        return script(keys=list(keys), args=list(args))

    def queue(self, pipe: Any, name: str, keys: Sequence[str], args: Sequence[Any]) -> None:
        """Queue one script in ``pipe`` as a bare EVALSHA (redis-py's own pipelined
        scripts cost an extra ``SCRIPT EXISTS`` round trip on every execute); send
        the pipeline with :meth:`execute`."""
        pipe.evalsha(self._scripts[name].sha, len(keys), *keys, *args)

    def load_all(self) -> None:
        for script in self._scripts.values():
            self.client.script_load(script.script)

    def execute(self, pipe: Any, only: Sequence[str] = ()) -> list[Any]:
        """Send a pipeline holding scripts; on NOSCRIPT load them all (or the scripts
        named in ``only``) and send it again (every command fanout pipelines with a
        script is idempotent)."""
        stack = list(pipe.command_stack)
        try:
            return list(pipe.execute())
        except redis.exceptions.NoScriptError:
            if only:
                for name in only:
                    self.client.script_load(self._scripts[name].script)
            else:
                self.load_all()
            pipe.command_stack = stack
            return list(pipe.execute())
