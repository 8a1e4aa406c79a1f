"""Only the store talks to Redis: no module outside fanout/_redis sends a command
itself, not even with the client the store holds (``Store.r``), and none runs a Lua
script by name (``.script(...)``, ``store.scripts``): each script is behind a typed
store method, with its keys and its reply."""

from __future__ import annotations

import ast
from pathlib import Path

import fanout

# The package under test, wherever it is installed (the repository, or a venv when the
# sdist's tests run against the installed package).
PACKAGE = Path(fanout.__file__).resolve().parent
_CLIENT_CALLS = {"pipeline", "register_script", "evalsha", "execute_command", "script"}


def _offences(source: str) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(source)):
        # store.r / self.store.r / rt.store.r: the store's own Redis client
        if isinstance(node, ast.Attribute) and node.attr == "r":
            base = node.value
            name = base.attr if isinstance(base, ast.Attribute) else getattr(base, "id", "")
            if "store" in name:
                found.append(f"{node.lineno}: .r")
        # store.scripts / self.store.scripts: running a script by name
        if isinstance(node, ast.Attribute) and node.attr == "scripts":
            found.append(f"{node.lineno}: .scripts")
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and node.func.attr in _CLIENT_CALLS):
            found.append(f"{node.lineno}: {node.func.attr}()")
    return found


def test_no_redis_commands_outside_the_store() -> None:
    offences = [
        f"{path.relative_to(PACKAGE.parent)}:{o}"
        for path in sorted(PACKAGE.rglob("*.py")) if PACKAGE / "_redis" not in path.parents
        for o in _offences(path.read_text(encoding="utf-8"))
    ]
    assert offences == [], "move these into a store method (fanout/_redis):\n" + "\n".join(offences)


def test_the_check_finds_a_direct_call() -> None:
    probe = "def f(rt):\n    pipe = rt.store.r.pipeline(transaction=False)\n    return store.r.get('k')\n"
    assert _offences(probe) == ["2: pipeline()", "2: .r", "3: .r"]


def test_the_check_finds_a_script_run_by_name() -> None:
    probe = ("def f(store):\n    store.script('fc_claim', [k], [r])\n"
             "    return store.scripts.run('fc_rate', [k], [])\n")
    assert sorted(_offences(probe)) == ["2: script()", "3: .scripts"]
