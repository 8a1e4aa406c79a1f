"""``fanout check-deploy`` and :func:`fanout.check_deploy`: before a deploy, replay
the saved steps of the runs in flight against the code about to be deployed.

The runs are read from the store (one ``HGETALL`` each, nothing written); each is
replayed in this process by :func:`fanout._core.deploy_replay.replay_run`, the
engine a worker runs, stopping before any new code runs. The report lists, per
function, the runs that would go on with a warning (and why), the runs that would
fail, and the new steps that would run before saved ones.
See ``docs/howto/check-deploy.md``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from .._client import Fanout
from .._core.deploy_replay import IN_FLIGHT, RunCheck, replay_run
from .._core.function import FunctionDef
from .._core.run_record import ST
from .._errors import ConfigError
from .._redis.history import MAX_LIMIT, History

__all__ = ["DeployCheck", "FunctionCheck", "RunCheck", "check_deploy"]

#: Runs read per function unless ``limit=`` says otherwise.
DEFAULT_LIMIT = 10_000


@dataclass
class FunctionCheck:
    """The runs in flight of one function, replayed against the code under check."""

    fn_id: str
    key: str
    version: str
    runs: list[RunCheck] = field(default_factory=list)
    #: True when more runs were in flight than ``limit`` (the newest were checked).
    truncated: bool = False

    def with_verdict(self, verdict: str) -> list[RunCheck]:
        return [r for r in self.runs if r.verdict == verdict]

    @property
    def warned(self) -> list[RunCheck]:
        return self.with_verdict("warn")

    @property
    def failed(self) -> list[RunCheck]:
        return self.with_verdict("fail")

    def to_json(self) -> dict[str, Any]:
        return {"fn_id": self.fn_id, "key": self.key, "version": self.version,
                "checked": len(self.runs), "truncated": self.truncated,
                "ok": len(self.with_verdict("ok")),
                "warn": [r.to_json() for r in self.warned],
                "fail": [r.to_json() for r in self.failed]}


@dataclass
class DeployCheck:
    """What :func:`check_deploy` found. ``ok`` is False when some run would fail."""

    functions: list[FunctionCheck]

    @property
    def ok(self) -> bool:
        return not any(f.failed for f in self.functions)

    @property
    def warned(self) -> list[RunCheck]:
        return [r for f in self.functions for r in f.warned]

    @property
    def failed(self) -> list[RunCheck]:
        return [r for f in self.functions for r in f.failed]

    @property
    def exit_code(self) -> int:
        """0: every run goes on; 1: some run would fail."""
        return 0 if self.ok else 1

    def function(self, fn_id: str) -> FunctionCheck:
        for f in self.functions:
            if f.fn_id == fn_id or f.key == fn_id:
                return f
        raise KeyError(f"no function {fn_id!r} was checked; checked: "
                       f"{[f.fn_id for f in self.functions]!r}")

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "functions": [f.to_json() for f in self.functions]}


def check_deploy(
    client: Fanout, *, functions: Iterable[str] | None = None, limit: int = DEFAULT_LIMIT,
) -> DeployCheck:
    """Replay the runs in flight of ``client``'s functions (or of the ``functions``
    named, by id) against the code loaded in this process, without touching them.

    Run it in CI with the code about to be deployed, pointed at the production
    store: ``check_deploy(client).ok`` is False when a run in flight would fail.
    ``limit`` is the number of runs read per function (the newest first).
    """
    if not isinstance(limit, int) or limit < 1:
        raise ConfigError(f"limit must be a positive integer, not {limit!r}")
    fns = _selected(client, functions)
    store = client.runtime.store
    history = History(store)
    out: list[FunctionCheck] = []
    for fn in fns:
        check = FunctionCheck(fn.fn_id, fn.key, fn.version)
        ids, truncated = _in_flight(history, fn.key, limit)
        check.truncated = truncated
        for rid, fields in zip(ids, store.many_run_fields(ids), strict=True):
            if fields.get(ST) in IN_FLIGHT:  # it may have ended since it was listed
                check.runs.append(replay_run(fn, rid, fields))
        out.append(check)
    return DeployCheck(out)


def _selected(client: Fanout, functions: Iterable[str] | None) -> list[FunctionDef]:
    if functions is None:
        return [client.functions[k] for k in sorted(client.functions)]
    if isinstance(functions, str):
        functions = [functions]
    out = []
    for ref in functions:
        fn_id = ref.split(":", 1)[1] if ref.startswith(f"{client.app_id}:") else ref
        if fn_id not in client.functions:
            raise ConfigError(f"no function {ref!r} in app {client.app_id!r} (functions: "
                              f"{sorted(client.functions)!r})")
        out.append(client.functions[fn_id])
    return out


def _in_flight(history: History, fn_key: str, limit: int) -> tuple[list[str], bool]:
    """The ids of the function's runs in flight, newest first, at most ``limit``."""
    ids: list[str] = []
    cursor: str | None = None
    while len(ids) < limit:
        page = history.runs(fn_key=fn_key, status=list(IN_FLIGHT), cursor=cursor,
                            limit=min(MAX_LIMIT, limit - len(ids)))
        ids.extend(r.run_id for r in page.items)
        cursor = page.next_cursor
        if cursor is None:
            return ids, False
    return ids, cursor is not None
