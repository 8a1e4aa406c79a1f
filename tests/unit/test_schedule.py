"""Unit tests for fanout._core.schedule (pure cron math: no services, explicit clocks)."""

from __future__ import annotations

import base64
import hashlib
import math
import time as clock
from collections.abc import Callable
from datetime import date, datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fanout._core.ids import id_from_digest
from fanout._core.schedule import (
    MAX_SKIPPED,
    CatchUp,
    CronSchedule,
    jitter_for,
    parse_jitter,
    plan_catch_up,
    tick_id,
    tick_key,
)

UTC = timezone.utc
PARIS, NEW_YORK, KOLKATA = "Europe/Paris", "America/New_York", "Asia/Kolkata"
LORD_HOWE = "Australia/Lord_Howe"  # DST shift of 30 minutes


def utc(y: int, mo: int, d: int, h: int = 0, mi: int = 0, s: int = 0, us: int = 0) -> datetime:
    return datetime(y, mo, d, h, mi, s, us, tzinfo=UTC)


def sched(cron: str) -> CronSchedule:
    return CronSchedule.parse(cron)


def local_walls(ticks: list[datetime], zone: str) -> list[datetime]:
    z = ZoneInfo(zone)
    return [t.astimezone(z).replace(tzinfo=None, fold=0) for t in ticks]


def assert_strictly_increasing(ticks: list[datetime]) -> None:
    assert all(a < b for a, b in zip(ticks, ticks[1:], strict=False)), ticks
    assert all(t.tzinfo is UTC for t in ticks)


# -- parsing -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cron", "expr", "zone"),
    [
        ("0 12 * * 5", "0 12 * * 5", "UTC"),
        ("  0   12 * *\t5 \n", "0 12 * * 5", "UTC"),
        ("TZ=Europe/Paris 0 12 * * 5", "0 12 * * 5", PARIS),
        ("CRON_TZ=America/New_York 0 9 * * MON-FRI", "0 9 * * MON-FRI", NEW_YORK),
        ("TZ=Asia/Kolkata @hourly", "@hourly", KOLKATA),
        ("@DAILY", "@daily", "UTC"),
        ("*/15 0-6,18-23 1,15 jan-jun sun", "*/15 0-6,18-23 1,15 jan-jun sun", "UTC"),
        ("0 0 L * *", "0 0 L * *", "UTC"),
        ("0 0 * * 5#2", "0 0 * * 5#2", "UTC"),
        ("0 0 29 2 *", "0 0 29 2 *", "UTC"),
    ],
)
def test_parse_valid(cron: str, expr: str, zone: str) -> None:
    s = sched(cron)
    assert (s.expr, s.zone) == (expr, zone)
    assert sched(str(s)) == s  # str() is a canonical, re-parsable form


@pytest.mark.parametrize(
    "alias", ["@hourly", "@daily", "@weekly", "@monthly", "@yearly", "@annually", "@midnight"]
)
def test_aliases_accepted(alias: str) -> None:
    assert sched(alias).expr == alias


@pytest.mark.parametrize(
    ("cron", "problem"),
    [
        ("", "empty"),
        ("   \t ", "empty"),
        ("* * * *", "expected 5 fields"),
        ("0 0 * * * *", "expected 5 fields"),  # seconds / year forms
        ("0 0 12 * * ? 2025", "expected 5 fields"),
        ("@reboot", "unsupported alias"),
        ("@every 5m", "takes no further fields"),
        ("@fortnightly", "unsupported alias"),
        ("TZ=Mars/Phobos 0 12 * * 5", "unknown time zone 'Mars/Phobos'"),
        ("CRON_TZ=Not/AZone @daily", "unknown time zone"),
        ("TZ=localtime 0 12 * * 5", "unknown time zone"),
        ("TZ=../etc/passwd 0 12 * * 5", "unknown time zone"),
        ("TZ= 0 12 * * 5", "empty time zone"),
        ("TZ=Europe/Paris", "no schedule"),
        ("61 * * * *", "invalid minute field '61'"),
        ("0 24 * * *", "invalid hour field '24'"),
        ("0 0 0 * *", "invalid day-of-month field '0'"),
        ("0 0 32 * *", "invalid day-of-month field"),
        ("0 0 1 13 *", "invalid month field '13'"),
        ("0 0 * * 8", "invalid day-of-week field '8'"),
        ("0 0 * * jan", "invalid day-of-week field 'jan'"),
        ("*/0 * * * *", "invalid minute field"),
        ("1,,2 * * * *", "invalid minute field"),
        ("- * * * *", "invalid minute field"),
        ("? * * * *", "invalid minute field"),
        ("H * * * *", "hashed/random"),
        ("R 0 * * *", "hashed/random"),
        ("0 0 * * 1.5", "unexpected character"),
        ("0 0 * * 1;2", "unexpected character"),
        ("0\u00a00 * * * *", "unexpected character"),  # only ASCII blanks separate
        ("0 0 31 2 *", "never fires"),
        ("0 0 30 2 *", "never fires"),
    ],
)
def test_parse_invalid(cron: str, problem: str) -> None:
    with pytest.raises(ValueError, match="invalid cron expression") as info:
        sched(cron)
    message = str(info.value)
    assert problem in message
    assert repr(cron) in message  # quotes the caller's input


@pytest.mark.parametrize("bad", [None, 5, b"0 * * * *", ["0 * * * *"]])
def test_parse_non_str(bad: object) -> None:
    with pytest.raises(ValueError, match="must be a str"):
        CronSchedule.parse(bad)  # type: ignore[arg-type]


def test_direct_construction_is_validated() -> None:
    assert CronSchedule("0 * * * *") == sched("0 * * * *")
    with pytest.raises(ValueError, match="expected 5 fields"):
        CronSchedule("0 * * * * *")
    with pytest.raises(ValueError, match="unknown time zone"):
        CronSchedule("0 * * * *", "Mars/Phobos")


# -- basic iteration -----------------------------------------------------------------


def test_next_after_is_strict_and_utc() -> None:
    s = sched("0 12 * * *")
    assert s.next_after(utc(2024, 1, 1)) == utc(2024, 1, 1, 12)
    assert s.next_after(utc(2024, 1, 1, 12)) == utc(2024, 1, 2, 12)
    assert s.next_after(utc(2024, 1, 1, 11, 59, 59, 999999)) == utc(2024, 1, 1, 12)
    assert s.next_after(utc(2024, 1, 1, 12, 0, 0, 1)) == utc(2024, 1, 2, 12)
    paris_noon = datetime(2024, 1, 1, 12, tzinfo=ZoneInfo(PARIS))  # any aware input
    result = s.next_after(paris_noon)
    assert result == utc(2024, 1, 1, 12) and result.tzinfo is UTC


@pytest.mark.parametrize(
    ("cron", "after", "expected"),
    [
        ("@hourly", utc(2024, 5, 5, 10, 1), utc(2024, 5, 5, 11)),
        ("@midnight", utc(2024, 5, 5, 10), utc(2024, 5, 6)),
        ("@weekly", utc(2024, 5, 1), utc(2024, 5, 5)),  # Sunday
        ("@monthly", utc(2024, 5, 1), utc(2024, 6, 1)),
        ("@yearly", utc(2024, 5, 1), utc(2025, 1, 1)),
        ("0 9 * * *", utc(2024, 5, 1), utc(2024, 5, 1, 9)),
        ("TZ=Asia/Kolkata 0 12 * * *", utc(2024, 1, 1), utc(2024, 1, 1, 6, 30)),
        ("TZ=Asia/Kolkata 30 5 * * *", utc(2023, 12, 31, 23), utc(2024, 1, 1, 0, 0)),
        ("TZ=Asia/Kolkata */30 * * * *", utc(2024, 1, 1, 0, 1), utc(2024, 1, 1, 0, 30)),
        ("TZ=America/New_York 0 9 * * *", utc(2024, 1, 10), utc(2024, 1, 10, 14)),
        ("TZ=America/New_York 0 9 * * *", utc(2024, 7, 10), utc(2024, 7, 10, 13)),
        ("TZ=Europe/Paris 0 12 * * 5", utc(2024, 1, 1), utc(2024, 1, 5, 11)),
        ("TZ=Europe/Paris 0 12 * * 5", utc(2024, 7, 1), utc(2024, 7, 5, 10)),
        ("0 0 29 2 *", utc(2024, 3, 1), utc(2028, 2, 29)),
        ("0 0 1w * *", utc(2024, 5, 31), utc(2024, 6, 3)),  # June 1st is a Saturday
    ],
)
def test_next_after_examples(cron: str, after: datetime, expected: datetime) -> None:
    assert sched(cron).next_after(after) == expected


def test_ticks_between_bounds() -> None:
    s = sched("*/15 * * * *")
    ticks = list(s.ticks_between(utc(2024, 1, 1, 0), utc(2024, 1, 1, 1)))
    assert ticks == [utc(2024, 1, 1, 0, m) for m in (15, 30, 45)] + [utc(2024, 1, 1, 1)]
    assert list(s.ticks_between(utc(2024, 1, 1, 1), utc(2024, 1, 1, 0))) == []
    assert list(s.ticks_between(utc(2024, 1, 1, 0, 1), utc(2024, 1, 1, 0, 14))) == []


def test_aware_datetimes_required() -> None:
    s = sched("* * * * *")
    naive = datetime(2024, 1, 1)
    with pytest.raises(ValueError, match="timezone-aware"):
        s.next_after(naive)
    with pytest.raises(ValueError, match="timezone-aware"):
        s.ticks_between(naive, utc(2024, 1, 2))  # validated eagerly
    with pytest.raises(ValueError, match="timezone-aware"):
        s.latest_at_or_before(naive)
    with pytest.raises(TypeError):
        s.next_after("2024-01-01")  # type: ignore[arg-type]


def test_latest_at_or_before() -> None:
    s = sched("0 12 * * *")
    assert s.latest_at_or_before(utc(2024, 1, 2, 12)) == utc(2024, 1, 2, 12)
    assert s.latest_at_or_before(utc(2024, 1, 2, 11, 59)) == utc(2024, 1, 1, 12)
    yearly = sched("0 0 1 1 *")
    assert yearly.latest_at_or_before(utc(2024, 6, 1)) == utc(2024, 1, 1)
    assert yearly.latest_at_or_before(utc(2024, 6, 1), lookback=timedelta(days=30)) is None
    leap = sched("0 0 29 2 *")
    assert leap.latest_at_or_before(utc(2026, 1, 1)) is None  # beyond the 366-day window
    assert leap.latest_at_or_before(utc(2025, 1, 1)) == utc(2024, 2, 29)


# -- DST -------------------------------------------------------------------------------

# (zone, spring-forward day, fall-back day) in 2024
TRANSITIONS = [
    (PARIS, date(2024, 3, 31), date(2024, 10, 27)),
    (NEW_YORK, date(2024, 3, 10), date(2024, 11, 3)),
    (LORD_HOWE, date(2024, 10, 6), date(2024, 4, 7)),
]


def matcher(cron: str) -> Callable[[datetime], bool]:
    minute, hour = cron.split()[:2]

    def field_ok(spec: str, value: int) -> bool:
        if spec == "*":
            return True
        if spec.startswith("*/"):
            return value % int(spec[2:]) == 0
        return value in {int(v) for v in spec.split(",")}

    return lambda w: field_ok(minute, w.minute) and field_ok(hour, w.hour)


def oracle(cron: str, zone: str, day: date) -> list[datetime]:
    """Brute force, minute by minute, of the documented wall-clock rule."""
    z, ok = ZoneInfo(zone), matcher(cron)
    out: set[datetime] = set()
    for k in range(24 * 60):
        wall = datetime.combine(day, time()) + timedelta(minutes=k)
        if not ok(wall):
            continue
        instant = wall.replace(tzinfo=z).astimezone(UTC)  # fold=0: first occurrence
        if instant.astimezone(z).replace(tzinfo=None) != wall:  # in a gap
            instant = (wall - timedelta(hours=3)).replace(tzinfo=z).astimezone(UTC)
            while instant.astimezone(z).replace(tzinfo=None) <= wall:
                instant += timedelta(minutes=1)  # first instant after the gap
        out.add(instant)
    return sorted(out)


def day_ticks(s: CronSchedule, day: date) -> list[datetime]:
    z = ZoneInfo(s.zone)
    start = datetime.combine(day, time(), tzinfo=z).astimezone(UTC)
    end = datetime.combine(day + timedelta(days=1), time(), tzinfo=z).astimezone(UTC)
    return list(s.ticks_between(start - timedelta(microseconds=1), end - timedelta(seconds=1)))


@pytest.mark.parametrize("cron", ["30 2 * * *", "30 1 * * *", "0 * * * *", "*/15 * * * *"])
@pytest.mark.parametrize(("zone", "spring", "fall"), TRANSITIONS)
@pytest.mark.parametrize("which", ["spring", "fall"])
def test_dst_transition_days(cron: str, zone: str, spring: date, fall: date, which: str) -> None:
    day = spring if which == "spring" else fall
    s = sched(f"TZ={zone} {cron}")
    ticks = day_ticks(s, day)
    assert_strictly_increasing(ticks)
    assert ticks == oracle(cron, zone, day)
    # every matching wall time that exists that day fires exactly once
    z, ok = ZoneInfo(zone), matcher(cron)
    walls = local_walls(ticks, zone)
    assert len(set(walls)) == len(walls)
    for k in range(24 * 60):
        wall = datetime.combine(day, time()) + timedelta(minutes=k)
        exists = wall.replace(tzinfo=z).astimezone(UTC).astimezone(z).replace(tzinfo=None) == wall
        if ok(wall) and exists:
            assert wall in walls


@pytest.mark.parametrize(
    ("zone", "cron", "day", "expected_count"),
    [
        (PARIS, "0 * * * *", date(2024, 3, 31), 23),
        (PARIS, "0 * * * *", date(2024, 10, 27), 24),
        (PARIS, "*/15 * * * *", date(2024, 3, 31), 92),
        (PARIS, "*/15 * * * *", date(2024, 10, 27), 96),
        (NEW_YORK, "0 * * * *", date(2024, 3, 10), 23),
        (NEW_YORK, "0 * * * *", date(2024, 11, 3), 24),
        (NEW_YORK, "*/15 * * * *", date(2024, 3, 10), 92),
        (NEW_YORK, "*/15 * * * *", date(2024, 11, 3), 96),
        (LORD_HOWE, "*/15 * * * *", date(2024, 10, 6), 94),
        (LORD_HOWE, "*/15 * * * *", date(2024, 4, 7), 96),
        (PARIS, "30 2 * * *", date(2024, 3, 31), 1),
        (PARIS, "30 2 * * *", date(2024, 10, 27), 1),
    ],
)
def test_dst_tick_counts(zone: str, cron: str, day: date, expected_count: int) -> None:
    assert len(day_ticks(sched(f"TZ={zone} {cron}"), day)) == expected_count


def test_spring_forward_gap_fires_once_at_gap_end() -> None:
    s = sched("TZ=Europe/Paris 30 2 * * *")
    first = s.next_after(utc(2024, 3, 30, 12))
    assert first == utc(2024, 3, 31, 1)  # 03:00 CEST, the first instant after the gap
    assert s.next_after(first) == utc(2024, 4, 1, 0, 30)  # 02:30 CEST
    ny = sched("TZ=America/New_York 30 2 * * *")
    assert ny.next_after(utc(2024, 3, 10)) == utc(2024, 3, 10, 7)  # 03:00 EDT


def test_gap_wall_times_coalesce_with_real_tick() -> None:
    s = sched("TZ=Europe/Paris 0,30 2,3 * * *")  # 02:00 and 02:30 do not exist
    ticks = list(s.ticks_between(utc(2024, 3, 30, 22), utc(2024, 3, 31, 12)))
    assert ticks == [utc(2024, 3, 31, 1), utc(2024, 3, 31, 1, 30)]


def test_fall_back_fires_once_at_first_occurrence() -> None:
    s = sched("TZ=Europe/Paris 30 2 * * *")
    ticks = list(s.ticks_between(utc(2024, 10, 26, 12), utc(2024, 10, 27, 12)))
    assert ticks == [utc(2024, 10, 27, 0, 30)]  # 02:30 CEST, not 02:30 CET (01:30Z)
    ny = sched("TZ=America/New_York 30 1 * * *")
    assert list(ny.ticks_between(utc(2024, 11, 3), utc(2024, 11, 4))) == [utc(2024, 11, 3, 5, 30)]


def test_fall_back_hourly_repeated_hour_fires_once() -> None:
    s = sched("TZ=Europe/Paris 0 * * * *")
    ticks = list(s.ticks_between(utc(2024, 10, 26, 23, 30), utc(2024, 10, 27, 3, 30)))
    # 02:00 CEST (00:00Z) fires; 02:00 CET (01:00Z) is the same wall time: skipped
    assert ticks == [utc(2024, 10, 27, 0), utc(2024, 10, 27, 2), utc(2024, 10, 27, 3)]


def test_inside_repeated_hour() -> None:
    s = sched("TZ=Europe/Paris */15 * * * *")
    second_pass = utc(2024, 10, 27, 1, 10)  # 02:10 CET, the second 02:10
    assert s.next_after(second_pass) == utc(2024, 10, 27, 2)  # 03:00 CET
    # later wall times (02:15..02:45) already fired during the first pass
    assert s.latest_at_or_before(utc(2024, 10, 27, 1, 5)) == utc(2024, 10, 27, 0, 45)
    assert s.latest_at_or_before(utc(2024, 10, 27, 1, 59)) == utc(2024, 10, 27, 0, 45)
    assert s.latest_at_or_before(utc(2024, 10, 27, 2)) == utc(2024, 10, 27, 2)


def test_latest_around_gap() -> None:
    s = sched("TZ=Europe/Paris 30 2 * * *")
    assert s.latest_at_or_before(utc(2024, 3, 31, 1)) == utc(2024, 3, 31, 1)
    assert s.latest_at_or_before(utc(2024, 3, 31, 0, 59)) == utc(2024, 3, 30, 1, 30)


@pytest.mark.parametrize(("zone", "expected"), [(PARIS, 8783), (NEW_YORK, 8783), (KOLKATA, 8784)])
def test_hourly_for_a_whole_year(zone: str, expected: int) -> None:
    s = sched(f"TZ={zone} 0 * * * *")
    z = ZoneInfo(zone)
    start = datetime(2024, 1, 1, tzinfo=z).astimezone(UTC) - timedelta(seconds=1)
    end = datetime(2025, 1, 1, tzinfo=z).astimezone(UTC) - timedelta(seconds=1)
    ticks = list(s.ticks_between(start, end))
    assert_strictly_increasing(ticks)
    assert len(ticks) == expected  # 366 * 24 wall hours; the gap hour merges with 03:00
    assert len(set(local_walls(ticks, zone))) == expected


# -- hypothesis: iteration invariants ---------------------------------------------------

MINUTES = ["*", "0", "*/5", "*/15", "15,45", "0-30/10", "59"]
HOURS = ["*", "0", "1", "2", "3", "*/3", "9-17", "23"]
DOMS = ["*", "1", "15", "28-31", "L"]
MONTHS = ["*", "3", "*/2", "jan,jul", "10-12"]
DOWS = ["*", "1-5", "0", "sat,sun", "5"]
ZONES = ["UTC", PARIS, NEW_YORK, KOLKATA, LORD_HOWE]
NEAR_TRANSITIONS = [utc(2024, 3, 31, 1), utc(2024, 10, 27, 1), utc(2024, 3, 10, 7)]
NEAR_TRANSITIONS += [utc(2024, 11, 3, 6), utc(2024, 10, 5, 15, 30), utc(2024, 4, 6, 15)]

crons = st.builds(
    lambda zone, *fields: f"TZ={zone} {' '.join(fields)}",
    st.sampled_from(ZONES),
    *(st.sampled_from(f) for f in (MINUTES, HOURS, DOMS, MONTHS, DOWS)),
)
instants = st.one_of(
    st.datetimes(datetime(2000, 1, 1), datetime(2040, 1, 1), timezones=st.just(UTC)),
    st.builds(
        lambda base, secs: base + timedelta(seconds=secs),
        st.sampled_from(NEAR_TRANSITIONS),
        st.integers(-4 * 3600, 4 * 3600),
    ),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cron=crons, t=instants)
def test_iteration_invariants(cron: str, t: datetime) -> None:
    s = sched(cron)
    nxt = s.next_after(t)
    assert nxt > t and nxt.tzinfo is UTC
    end = t + timedelta(hours=6)
    ticks = list(s.ticks_between(t, end))
    assert_strictly_increasing(ticks)
    assert all(t < x <= end for x in ticks)
    assert (ticks[0] == nxt) if ticks else (nxt > end)
    latest = s.latest_at_or_before(t)
    if latest is not None:
        assert latest <= t
        assert s.next_after(latest) == nxt  # nothing in (latest, t]
    assert s.latest_at_or_before(nxt) == nxt


CRONISH = st.text(alphabet="0123456789 */,-?#LWHR@TZ=CRON_adilhyeourmn/EupPasx\t", max_size=40)


@settings(max_examples=300, deadline=None)
@given(text=st.one_of(st.text(max_size=40), CRONISH))
def test_parse_only_ever_raises_value_error(text: str) -> None:
    try:
        s = CronSchedule.parse(text)
    except ValueError as exc:
        assert "cron expression" in str(exc)
    else:
        assert CronSchedule.parse(str(s)) == s


# -- jitter ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (None, None),
        (1, 1.0),
        (300, 300.0),
        (2.5, 2.5),
        (timedelta(seconds=1), 1.0),
        (timedelta(minutes=5), 300.0),
        (timedelta(seconds=90), 90.0),
    ],
)
def test_parse_jitter_valid(value: float | timedelta | None, seconds: float | None) -> None:
    assert parse_jitter(value) == seconds


@pytest.mark.parametrize(
    "value",
    [0, 0.5, -1, 301, 300.001, timedelta(0), timedelta(minutes=5, microseconds=1)]
    + [math.nan, math.inf, True, "10", [10], object()],
)
def test_parse_jitter_invalid(value: object) -> None:
    with pytest.raises(ValueError, match="jitter"):
        parse_jitter(value)  # type: ignore[arg-type]


def test_jitter_for_basics() -> None:
    assert jitter_for("fn:2024-01-01T00:00", None) == 0.0
    assert jitter_for("k", 1) == 1.0
    assert jitter_for("k", 60) == jitter_for("k", 60)
    spread = {jitter_for(f"key-{i}", 300) for i in range(200)}
    assert len(spread) > 190 and min(spread) >= 1 and max(spread) <= 300
    assert min(spread) < 30 and max(spread) > 270  # roughly uniform
    with pytest.raises(ValueError, match="jitter"):
        jitter_for("k", 0.5)


@given(key=st.text(), limit=st.floats(1, 300))
def test_jitter_for_bounds_and_determinism(key: str, limit: float) -> None:
    value = jitter_for(key, limit)
    assert 1.0 <= value <= limit
    assert jitter_for(key, limit) == value


# -- tick ids --------------------------------------------------------------------------


def test_tick_id() -> None:
    tick = utc(2024, 1, 1, 12)
    ident = tick_id("app.report", tick)
    # The alphabet of every other fanout id (Crockford base32, upper case).
    assert len(ident) == 26 and set(ident) <= set("0123456789ABCDEFGHJKMNPQRSTVWXYZ")
    digest = hashlib.blake2b(b"cron\0app.report\x002024-01-01T12:00:00+00:00", digest_size=16)
    assert ident == id_from_digest(digest.digest())
    # The earlier spelling, still used to seed jitter and to spot an older beat's run.
    assert tick_key("app.report", tick) == base64.b32encode(digest.digest()).decode().lower()[:26]
    assert tick_id("app.report", tick.replace(microsecond=123)) == ident
    plus_one = timezone(timedelta(hours=1))
    assert tick_id("app.report", datetime(2024, 1, 1, 13, tzinfo=plus_one)) == ident
    assert tick_id("app.other", tick) != ident
    assert tick_id("app.report", tick + timedelta(minutes=1)) != ident
    with pytest.raises(ValueError, match="timezone-aware"):
        tick_id("app.report", datetime(2024, 1, 1))


# -- catch-up --------------------------------------------------------------------------

HOURLY = sched("0 * * * *")


def hours(*hs: int) -> tuple[datetime, ...]:
    return tuple(utc(2024, 1, 1, h) for h in hs)


def test_catch_up_nothing_missed() -> None:
    plan = plan_catch_up(HOURLY, utc(2024, 1, 1, 10), utc(2024, 1, 1, 10, 30), timedelta(minutes=5))
    assert plan == CatchUp(run=None, skipped=(), next_check=utc(2024, 1, 1, 11))


def test_catch_up_on_time() -> None:
    plan = plan_catch_up(HOURLY, utc(2024, 1, 1, 9), utc(2024, 1, 1, 10), timedelta(0))
    assert plan == CatchUp(run=utc(2024, 1, 1, 10), skipped=(), next_check=utc(2024, 1, 1, 11))


def test_catch_up_latest_within_deadline_runs_older_skipped() -> None:
    plan = plan_catch_up(
        HOURLY, utc(2024, 1, 1, 10), utc(2024, 1, 1, 15, 20), timedelta(minutes=30)
    )
    assert plan.run == utc(2024, 1, 1, 15)
    assert plan.skipped == hours(11, 12, 13, 14)
    assert plan.next_check == utc(2024, 1, 1, 16) and not plan.truncated


def test_catch_up_beyond_deadline_all_skipped() -> None:
    plan = plan_catch_up(
        HOURLY, utc(2024, 1, 1, 10), utc(2024, 1, 1, 15, 20), timedelta(minutes=10)
    )
    assert plan.run is None
    assert plan.skipped == hours(11, 12, 13, 14, 15)


def test_catch_up_never_ran() -> None:
    now = utc(2024, 1, 1, 15, 20)
    plan = plan_catch_up(HOURLY, None, now, timedelta(minutes=20))
    assert plan == CatchUp(run=utc(2024, 1, 1, 15), skipped=(), next_check=utc(2024, 1, 1, 16))
    plan = plan_catch_up(HOURLY, None, now, timedelta(minutes=19))
    assert plan == CatchUp(run=None, skipped=(), next_check=utc(2024, 1, 1, 16))


def test_catch_up_clock_behind_last_tick() -> None:
    plan = plan_catch_up(HOURLY, utc(2024, 1, 1, 12), utc(2024, 1, 1, 10, 30), timedelta(hours=1))
    assert plan == CatchUp(run=None, skipped=(), next_check=utc(2024, 1, 1, 13))


def test_catch_up_cap_boundary() -> None:
    base = utc(2024, 1, 1)
    exact = plan_catch_up(HOURLY, base, base + timedelta(hours=1001), timedelta(hours=1))
    assert exact.run == base + timedelta(hours=1001)
    assert len(exact.skipped) == MAX_SKIPPED and not exact.truncated
    assert exact.skipped[0] == base + timedelta(hours=1)
    over = plan_catch_up(HOURLY, base, base + timedelta(hours=1002), timedelta(hours=1))
    assert len(over.skipped) == MAX_SKIPPED and over.truncated
    assert over.skipped[0] == base + timedelta(hours=2)  # newest kept


def test_catch_up_minutely_after_a_month_is_bounded() -> None:
    started = clock.perf_counter()
    every_minute = sched("* * * * *")
    now = utc(2024, 2, 1, 0, 0, 30)
    plan = plan_catch_up(every_minute, utc(2024, 1, 1), now, timedelta(minutes=1))
    assert plan.run == utc(2024, 2, 1)
    assert len(plan.skipped) == MAX_SKIPPED and plan.truncated
    assert plan.skipped[-1] == utc(2024, 1, 31, 23, 59)
    assert plan.skipped[0] == utc(2024, 1, 31, 23, 59) - timedelta(minutes=MAX_SKIPPED - 1)
    assert_strictly_increasing(list(plan.skipped))
    assert clock.perf_counter() - started < 2


def test_catch_up_across_fall_back() -> None:
    s = sched("TZ=Europe/Paris */30 * * * *")
    plan = plan_catch_up(
        s, utc(2024, 10, 26, 23, 30), utc(2024, 10, 27, 2, 10), timedelta(minutes=15)
    )
    # 00:00Z 00:30Z (02:00/02:30 CEST), then 02:00Z (03:00 CET); no second 02:xx
    assert plan.run == utc(2024, 10, 27, 2)
    assert plan.skipped == (utc(2024, 10, 27, 0), utc(2024, 10, 27, 0, 30))


def test_catch_up_rejects_bad_deadline() -> None:
    with pytest.raises(ValueError, match="deadline"):
        plan_catch_up(HOURLY, None, utc(2024, 1, 1), timedelta(seconds=-1))
