"""`fanout dev` with a ``memory://`` store but without the ``[embedded]`` extra (no
Lua for fakeredis) fails at startup with one line naming the extra, instead of saying
"ready" and then logging the same traceback from every loop."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

PROJ = '''
import fanout
from fanout.embedded import embedded_celery

app = embedded_celery("proj")
client = fanout.Fanout("proj", celery=app, redis_url="memory://")


@client.create_function(fn_id="greet", trigger=fanout.TriggerEvent(event="app/greet"))
def greet(ctx: fanout.ContextSync) -> str:
    return "hi"
'''

# The interpreter as a user without the extra has it: lupa cannot be imported.
WITHOUT_LUA = (
    "import sys; sys.modules['lupa'] = None; "
    "from fanout._cli import main; sys.exit(main(sys.argv[1:]))"
)


def test_dev_without_the_embedded_extra_fails_at_startup_naming_it(tmp_path: Path) -> None:
    (tmp_path / "proj.py").write_text(PROJ)
    env = {k: v for k, v in os.environ.items()
           if k not in ("FANOUT_REDIS_URL", "CELERY_BROKER_URL", "FANOUT_APP")}
    env["PYTHONPATH"] = str(tmp_path)
    done = subprocess.run(
        [sys.executable, "-c", WITHOUT_LUA, "-A", "proj", "dev", "--port", "0"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60,
    )
    out = done.stdout + done.stderr
    assert done.returncode == 1, out
    assert "ready" not in out and "Traceback" not in out, out
    lines = [ln for ln in out.splitlines() if ln.strip()]
    assert len(lines) == 1, out
    assert "memory://" in lines[0] and "pip install 'celery-fanout[embedded]'" in lines[0], out
