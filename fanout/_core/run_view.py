"""A run's hash read back as what users see of it: :class:`~fanout._core.records.RunInfo`."""

from __future__ import annotations

import json
from collections.abc import Mapping

from .records import TERMINAL, RunInfo, StepInfo, ts_to_dt
from .run_record import (
    APP,
    ATTEMPT,
    CREATED,
    ENDED,
    ERROR,
    EV,
    FN,
    FROM_STEP,
    MAX_ATTEMPTS,
    OUTPUT,
    PARENT,
    REPLAY_OF,
    ST,
    STARTED,
    VERSION,
    WAKE,
    step_records,
)
from .versions import crossed_deploy, markers_of, versions_of, warnings_of


def _f(fields: Mapping[str, str], key: str) -> float | None:
    v = fields.get(key)
    return float(v) if v not in (None, "", "0") else None


def to_run_info(run_id: str, f: Mapping[str, str]) -> RunInfo:
    """What ``client.get_run`` reports for a run's hash."""
    steps = sorted(step_records(f).values(), key=lambda r: r.seq)
    status = f[ST]
    return RunInfo(
        run_id=run_id,
        fn_id=f.get(FN, ""),
        app_id=f.get(APP) or None,
        status=status,
        output=json.loads(f[OUTPUT]) if OUTPUT in f else None,
        error=json.loads(f[ERROR]) if f.get(ERROR) else None,
        event_ids=json.loads(f.get(EV, "[]")),
        parent_run_id=f.get(PARENT) or None,
        attempt=int(f.get(ATTEMPT, "0")),
        created_at=ts_to_dt(_f(f, CREATED)),
        started_at=ts_to_dt(_f(f, STARTED)),
        ended_at=ts_to_dt(_f(f, ENDED)) if status in TERMINAL else None,
        steps=[StepInfo.from_record(r) for r in steps],
        wake_at=ts_to_dt(_f(f, WAKE)) if status not in TERMINAL else None,
        max_attempts=int(f[MAX_ATTEMPTS]) if f.get(MAX_ATTEMPTS) else None,
        replay_of=f.get(REPLAY_OF) if not f.get(FROM_STEP) else None,
        rerun_of=f.get(REPLAY_OF) if f.get(FROM_STEP) else None,
        rerun_from_step=f.get(FROM_STEP) or None,
        version=f.get(VERSION) or None,
        versions=versions_of(f),
        crossed_deploy=crossed_deploy(f),
        markers=sorted(markers_of(f)),
        warnings=warnings_of(f),
    )
