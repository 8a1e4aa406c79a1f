"""``python -m bench.script_cost`` drives the run scripts as a pass does (each call
must be answered as a successful pass would be, or it stops) and reports a table."""

from __future__ import annotations

import shutil

import pytest

from bench import script_cost


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server")
def test_script_cost_runs_every_script_and_reports(capsys: pytest.CaptureFixture[str]) -> None:
    assert script_cost.main(["--n", "5", "--rounds", "2"]) == 0
    out = capsys.readouterr().out
    for name in script_cost.PER_RUN:
        assert f"| `{name}` |" in out
    assert "| per run" in out
