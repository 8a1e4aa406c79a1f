"""A re-sent event id keeps its first place in the event indexes (no worker needed)."""

from __future__ import annotations

import time

from tests import support

app, client = support.make_app(__name__, app_id="evidx")


def test_resent_event_id_keeps_its_first_index_score(clean_db) -> None:  # type: ignore[no-untyped-def]
    r = clean_db
    client.emit("app/evidx.ping", {"n": 1}, id="EVT-RESENT")
    first = r.zscore("fanout:idx:events", "EVT-RESENT")
    first_by_name = r.zscore("fanout:idx:evname:app/evidx.ping", "EVT-RESENT")
    assert first is not None and first_by_name is not None
    time.sleep(0.05)
    client.emit("app/evidx.ping", {"n": 2}, id="EVT-RESENT")   # a retried publish
    assert r.zscore("fanout:idx:events", "EVT-RESENT") == first
    assert r.zscore("fanout:idx:evname:app/evidx.ping", "EVT-RESENT") == first_by_name
    # The stored payload is the first one.
    raw = r.get("fanout:ev:{EVT-RESENT}") or b""
    assert b'"n": 1' in raw or b'"n":1' in raw, raw
