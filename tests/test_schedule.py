"""Cron windows: expressions, contiguity, daylight saving, catch-up and backfill.

Time is always passed in (never read from the clock), so every case is exact.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from croniter import croniter
from hypothesis import given, settings
from hypothesis import strategies as st

from plankton.authoring.schedule import Schedule
from plankton.errors import DagError

UTC = timezone.utc
BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def local(tz: ZoneInfo, *args: int, fold: int = 0) -> datetime:
    return datetime(*args, tzinfo=tz, fold=fold).astimezone(UTC)


def assert_contiguous(schedule: Schedule, fires: list[datetime]) -> None:
    assert fires == sorted(set(fires)), "fires must be strictly increasing"
    for before, this in zip(fires, fires[1:]):
        assert schedule.window(this) == (before, this)


# -- expressions ----------------------------------------------------------------------------


def test_five_field_expression_fires_on_its_minutes_in_utc():
    s = Schedule("*/5 * * * *")
    assert s.next_fire(utc(2024, 1, 1, 10, 2)) == utc(2024, 1, 1, 10, 5)
    assert s.next_fire(utc(2024, 1, 1, 10, 5)) == utc(2024, 1, 1, 10, 10)
    assert s.prev_fire(utc(2024, 1, 1, 10, 5)) == utc(2024, 1, 1, 10, 5)
    assert s.prev_fire(utc(2024, 1, 1, 10, 4, 59, 999999)) == utc(2024, 1, 1, 10, 0)


def test_six_field_expression_takes_seconds_as_the_last_field():
    s = Schedule("0 0 * * * 30")
    assert s.next_fire(utc(2024, 1, 1)) == utc(2024, 1, 1, 0, 0, 30)
    every_ten = Schedule("* * * * * */10")
    assert every_ten.fires_between(utc(2024, 1, 1), utc(2024, 1, 1, 0, 0, 30)) == [
        utc(2024, 1, 1, 0, 0, 10),
        utc(2024, 1, 1, 0, 0, 20),
        utc(2024, 1, 1, 0, 0, 30),
    ]


@pytest.mark.parametrize("alias", ["@daily", "@midnight", "@DAILY"])
def test_daily_aliases_fire_at_local_midnight(alias):
    s = Schedule(alias, timezone="Europe/Berlin")
    assert s.next_fire(utc(2024, 1, 1, 12)) == local(BERLIN, 2024, 1, 2)
    assert s.window(local(BERLIN, 2024, 1, 2)) == (
        local(BERLIN, 2024, 1, 1),
        local(BERLIN, 2024, 1, 2),
    )


@pytest.mark.parametrize(
    "alias, after, expected",
    [
        ("@hourly", utc(2024, 5, 5, 10, 30), utc(2024, 5, 5, 11)),
        ("@weekly", utc(2024, 5, 5, 10), utc(2024, 5, 12)),  # 2024-05-12 is a Sunday
        ("@monthly", utc(2024, 5, 5), utc(2024, 6, 1)),
        ("@yearly", utc(2024, 5, 5), utc(2025, 1, 1)),
        ("@annually", utc(2024, 5, 5), utc(2025, 1, 1)),
    ],
)
def test_every_alias_is_accepted(alias, after, expected):
    assert Schedule(alias).next_fire(after) == expected


def test_results_are_utc_and_whole_seconds_whatever_the_input_zone():
    s = Schedule("0 9 * * *", timezone="America/New_York")
    after = datetime(2024, 6, 1, 12, 0, 0, 123456, tzinfo=ZoneInfo("Asia/Tokyo"))
    fire = s.next_fire(after)
    assert fire.tzinfo is UTC and fire.microsecond == 0
    assert fire == local(NEW_YORK, 2024, 6, 1, 9)


def test_results_do_not_depend_on_the_process_time_zone(monkeypatch):
    s = Schedule("30 2 * * *", timezone="Europe/Berlin")
    expected = s.fires_between(utc(2024, 3, 29), utc(2024, 4, 2))
    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    try:
        assert s.fires_between(utc(2024, 3, 29), utc(2024, 4, 2)) == expected
    finally:
        monkeypatch.undo()
        time.tzset()


# -- bad input -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "expr",
    [
        "",
        "* * * *",
        "61 * * * *",
        "1-60 * * * *",
        "a b c d e",
        "@reboot",
        "@sometimes",
        "* * * * * * 2030",
        "H * * * *",
        "0 0 31 2 *",
        "* * 32 * *",
    ],
)
def test_bad_expression_raises_dag_error_naming_dag_and_expression(expr):
    with pytest.raises(DagError) as info:
        Schedule(expr, dag="nightly")
    assert "nightly" in str(info.value) and repr(expr) in str(info.value)
    assert info.value.tasks == ["nightly"]


@pytest.mark.parametrize("tz", ["Mars/Olympus", "", "../etc/passwd", "CEST+2"])
def test_unknown_time_zone_raises_dag_error_naming_dag_and_expression(tz):
    with pytest.raises(DagError) as info:
        Schedule("0 * * * *", timezone=tz, dag="hourly_load")
    message = str(info.value)
    assert "hourly_load" in message and "'0 * * * *'" in message and repr(tz) in message


def test_naive_datetimes_are_refused():
    s = Schedule("* * * * *")
    naive = datetime(2024, 1, 1)
    for call in (
        lambda: s.next_fire(naive),
        lambda: s.prev_fire(naive),
        lambda: s.window(naive),
        lambda: s.fires_between(naive, utc(2024, 1, 2)),
        lambda: s.due(None, naive, True),
        lambda: s.backfill_windows(naive, naive),
    ):
        with pytest.raises(ValueError, match="timezone-aware"):
            call()


def test_window_of_an_instant_that_is_not_a_fire_time_is_refused():
    with pytest.raises(ValueError, match="not a fire time"):
        Schedule("0 * * * *").window(utc(2024, 1, 1, 10, 30))


# -- contiguity -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "expr, tz, start",
    [
        ("*/7 * * * *", "UTC", utc(2024, 1, 1)),
        ("*/30 * * * *", "America/New_York", local(NEW_YORK, 2024, 3, 1)),
        ("0 * * * *", "Europe/Berlin", local(BERLIN, 2024, 10, 1)),
        ("30 2 * * *", "Europe/Berlin", utc(2023, 1, 1)),
        ("15 1-3 * * *", "America/New_York", utc(2023, 6, 1)),
        ("* * * * * */15", "Europe/Berlin", local(BERLIN, 2024, 3, 31, 1, 55)),
    ],
)
def test_one_thousand_consecutive_windows_are_contiguous(expr, tz, start):
    s = Schedule(expr, timezone=tz)
    fires = [s.next_fire(start)]
    for _ in range(1000):
        fires.append(s.next_fire(fires[-1]))
    assert_contiguous(s, fires)
    assert s.fires_between(start, fires[-1]) == fires
    assert s.backfill_windows(fires[0], fires[-1]) == list(zip(fires, fires[1:]))


# -- daylight saving ----------------------------------------------------------------------------


def test_berlin_spring_forward_runs_a_skipped_daily_time_once_when_clocks_jump():
    s = Schedule("30 2 * * *", timezone="Europe/Berlin")
    fires = s.fires_between(local(BERLIN, 2024, 3, 29, 12), local(BERLIN, 2024, 4, 2, 12))
    assert fires == [
        local(BERLIN, 2024, 3, 30, 2, 30),
        # 02:30 does not exist: fire when the clocks jump (02:00 CET = 03:00 CEST)
        local(BERLIN, 2024, 3, 31, 3, 0),
        local(BERLIN, 2024, 4, 1, 2, 30),
        local(BERLIN, 2024, 4, 2, 2, 30),
    ]
    assert fires[1] == utc(2024, 3, 31, 1)
    assert_contiguous(s, fires)


def test_berlin_fall_back_runs_a_repeated_daily_time_only_once():
    s = Schedule("30 2 * * *", timezone="Europe/Berlin")
    fires = s.fires_between(local(BERLIN, 2024, 10, 25, 12), local(BERLIN, 2024, 10, 29, 12))
    assert fires == [
        local(BERLIN, 2024, 10, 26, 2, 30),
        utc(2024, 10, 27, 0, 30),  # 02:30 CEST, the first of the two 02:30s
        local(BERLIN, 2024, 10, 28, 2, 30),
        local(BERLIN, 2024, 10, 29, 2, 30),
    ]
    assert_contiguous(s, fires)
    assert s.prev_fire(utc(2024, 10, 27, 1, 30)) == utc(2024, 10, 27, 0, 30)


def test_skipped_time_that_coincides_with_a_matching_time_fires_once():
    s = Schedule("30 2,3 * * *", timezone="Europe/Berlin")
    day = s.fires_between(local(BERLIN, 2024, 3, 31), local(BERLIN, 2024, 3, 31, 12))
    assert day == [utc(2024, 3, 31, 1), utc(2024, 3, 31, 1, 30)]  # 03:00 (for 02:30), 03:30
    s = Schedule("0 2,3 * * *", timezone="Europe/Berlin")
    day = s.fires_between(local(BERLIN, 2024, 3, 31), local(BERLIN, 2024, 3, 31, 12))
    assert day == [utc(2024, 3, 31, 1)]  # 02:00 is skipped to 03:00, which matches anyway
    assert_contiguous(s, s.fires_between(utc(2024, 3, 25), utc(2024, 4, 5)))


def test_berlin_hourly_follows_real_time_across_both_changes():
    s = Schedule("0 * * * *", timezone="Europe/Berlin")
    spring = s.fires_between(utc(2024, 3, 30, 23, 30), utc(2024, 3, 31, 3, 30))
    assert spring == [utc(2024, 3, 31, h) for h in range(0, 4)]  # 01:00 CET, 03:00 CEST, ...
    autumn = s.fires_between(utc(2024, 10, 26, 22, 30), utc(2024, 10, 27, 3, 30))
    assert autumn == [utc(2024, 10, 26, 23)] + [utc(2024, 10, 27, h) for h in range(0, 4)]
    assert [f.astimezone(BERLIN).strftime("%H%z") for f in autumn] == [
        "01+0200",
        "02+0200",
        "02+0100",
        "03+0100",
        "04+0100",
    ]
    assert_contiguous(s, spring)
    assert_contiguous(s, autumn)


def test_new_york_quarter_hours_are_fifteen_real_minutes_apart_across_both_changes():
    s = Schedule("*/15 * * * *", timezone="America/New_York")
    for start in (utc(2024, 3, 10, 5), utc(2024, 11, 3, 4)):  # midnight local, both days
        fires = s.fires_between(start, start + timedelta(hours=4))
        assert fires == [start + timedelta(minutes=15 * k) for k in range(1, 17)]
        assert_contiguous(s, fires)


def test_new_york_daily_at_two_thirty_on_both_change_days():
    s = Schedule("30 2 * * *", timezone="America/New_York")
    spring = s.fires_between(utc(2024, 3, 9, 12), utc(2024, 3, 11, 12))
    # 2024-03-10 02:30 EST does not exist: fire when clocks jump at 02:00 EST = 07:00 UTC.
    assert spring == [utc(2024, 3, 10, 7), local(NEW_YORK, 2024, 3, 11, 2, 30)]
    autumn = s.fires_between(utc(2024, 11, 2, 12), utc(2024, 11, 4, 12))
    # Clocks go back at 02:00 EDT to 01:00 EST, so 02:30 happens once (EST).
    assert autumn == [utc(2024, 11, 3, 7, 30), utc(2024, 11, 4, 7, 30)]
    assert_contiguous(s, spring)
    assert_contiguous(s, autumn)


def test_new_york_one_thirty_fires_once_on_fall_back_and_hourly_fires_twice():
    daily = Schedule("30 1 * * *", timezone="America/New_York")
    assert daily.fires_between(utc(2024, 11, 3), utc(2024, 11, 3, 12)) == [
        local(NEW_YORK, 2024, 11, 3, 1, 30, fold=0)
    ]
    hourly = Schedule("30 * * * *", timezone="America/New_York")
    assert hourly.fires_between(utc(2024, 11, 3, 4, 45), utc(2024, 11, 3, 7)) == [
        utc(2024, 11, 3, 5, 30),
        utc(2024, 11, 3, 6, 30),
    ]  # 01:30 EDT, 01:30 EST


def reference_fires(expr: str, tz: ZoneInfo, start: datetime, end: datetime) -> list[datetime]:
    """Brute force over every UTC minute: the documented DST rules, written independently.

    Only for minute-resolution expressions and whole-minute ``start``, in zones whose clock
    changes fall on whole minutes.
    """
    every_hour = croniter.expand(expr)[0][1] == ["*"]
    minute = timedelta(minutes=1)
    fires, t = [], start + minute
    while t <= end:
        reading, previous = t.astimezone(tz), (t - minute).astimezone(tz)
        wall = reading.replace(tzinfo=None)
        repeated = reading.replace(fold=1 - reading.fold).utcoffset() != reading.utcoffset()
        if croniter.match(expr, wall) and (every_hour or not (repeated and reading.fold)):
            fires.append(t)
        jump = reading.utcoffset() - previous.utcoffset()
        if jump > timedelta(0) and not every_hour and fires[-1:] != [t]:
            skipped = croniter(expr, wall - jump - timedelta(seconds=1)).get_next(datetime)
            if skipped < wall:
                fires.append(t)
        t += minute
    return fires


@pytest.mark.parametrize("tz", [BERLIN, NEW_YORK, ZoneInfo("Australia/Lord_Howe")])
@pytest.mark.parametrize(
    "expr", ["*/20 * * * *", "30 2 * * *", "0,45 1-3 * * *", "10 */2 * * *", "0 2 * * *", "@daily"]
)
def test_fires_match_a_brute_force_reference_around_every_change_of_2024(tz, expr):
    s = Schedule(expr, timezone=tz.key)
    checked = 0
    for month in range(1, 13):
        start = utc(2024, month, 1)
        changes = {
            d
            for d in range(0, 31, 1)
            if (start + timedelta(days=d)).astimezone(tz).utcoffset()
            != (start + timedelta(days=d + 1)).astimezone(tz).utcoffset()
        }
        for day in changes:
            lo, hi = start + timedelta(days=day), start + timedelta(days=day + 2)
            expected = reference_fires(expr, tz, lo, hi)
            assert s.fires_between(lo, hi) == expected, (month, day)
            assert list(reversed(expected)) == backwards(s, lo, hi)
            checked += 1
    assert checked == 2  # both 2024 clock changes of the zone


def backwards(s: Schedule, lo: datetime, hi: datetime) -> list[datetime]:
    out, t = [], hi
    while (t := s.prev_fire(t)) > lo:
        out.append(t)
        t -= timedelta(microseconds=1)
    return out


@settings(max_examples=300, deadline=None)
@given(
    expr=st.sampled_from(
        [
            "*/15 * * * *",
            "30 2 * * *",
            "0 */3 * * *",
            "@hourly",
            "@weekly",
            "5 0-4 * * 1-5",
            "* * * * * */20",
        ]
    ),
    tz=st.sampled_from(
        ["UTC", "Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "Asia/Kolkata"]
    ),
    offset=st.integers(min_value=0, max_value=3 * 365 * 86400 * 1000),
)
def test_next_prev_and_window_agree_at_any_instant(expr, tz, offset):
    s = Schedule(expr, timezone=tz)
    t = utc(2023, 1, 1) + timedelta(milliseconds=offset)
    before, after = s.prev_fire(t), s.next_fire(t)
    assert before <= t < after
    assert s.next_fire(before) == after
    assert s.prev_fire(after - timedelta(microseconds=1)) == before
    assert s.window(after) == (before, after)


# -- due: cron catch-up -----------------------------------------------------------------------


def test_due_with_catchup_returns_every_missed_fire_oldest_first():
    s = Schedule("*/5 * * * *")
    due = s.due(last_fired=utc(2024, 1, 1, 10), now=utc(2024, 1, 1, 10, 17), catchup=True)
    assert due == [utc(2024, 1, 1, 10, 5), utc(2024, 1, 1, 10, 10), utc(2024, 1, 1, 10, 15)]


def test_due_without_catchup_returns_only_the_latest_missed_fire():
    s = Schedule("*/5 * * * *")
    due = s.due(last_fired=utc(2024, 1, 1, 10), now=utc(2024, 1, 1, 10, 17), catchup=False)
    assert due == [utc(2024, 1, 1, 10, 15)]


def test_due_is_empty_when_nothing_fired_since_last_time():
    s = Schedule("*/5 * * * *")
    for catchup in (True, False):
        assert s.due(utc(2024, 1, 1, 10, 15), utc(2024, 1, 1, 10, 19, 59), catchup) == []
        assert s.due(utc(2024, 1, 1, 10, 15), utc(2024, 1, 1, 10, 14), catchup) == []


def test_due_includes_a_fire_exactly_at_now():
    s = Schedule("*/5 * * * *")
    assert s.due(utc(2024, 1, 1, 10), utc(2024, 1, 1, 10, 5), False) == [utc(2024, 1, 1, 10, 5)]


def test_a_new_schedule_does_not_back_fill_history():
    s = Schedule("@daily")
    for catchup in (True, False):
        assert s.due(None, utc(2024, 1, 10, 13), catchup) == [utc(2024, 1, 10)]


def test_a_new_schedule_with_a_start_catches_up_from_that_start():
    s = Schedule("@daily")
    now = utc(2024, 1, 10, 13)
    assert s.due(None, now, True, start=utc(2024, 1, 7)) == [
        utc(2024, 1, 7),
        utc(2024, 1, 8),
        utc(2024, 1, 9),
        utc(2024, 1, 10),
    ]
    assert s.due(None, now, False, start=utc(2024, 1, 7)) == [utc(2024, 1, 10)]
    assert s.due(None, now, True, start=utc(2024, 2, 1)) == []


def test_catchup_after_downtime_across_a_dst_change_creates_each_fire_once():
    s = Schedule("30 2 * * *", timezone="Europe/Berlin")
    due = s.due(utc(2024, 10, 25), utc(2024, 11, 1), catchup=True)
    assert len(due) == len(set(due)) == 7
    assert_contiguous(s, due)


# -- backfill --------------------------------------------------------------------------------


def test_backfill_gives_one_window_per_interval_in_the_range():
    s = Schedule("@daily")
    windows = s.backfill_windows(utc(2024, 1, 1), utc(2024, 1, 4))
    assert windows == [
        (utc(2024, 1, 1), utc(2024, 1, 2)),
        (utc(2024, 1, 2), utc(2024, 1, 3)),
        (utc(2024, 1, 3), utc(2024, 1, 4)),
    ]


def test_backfill_range_between_fire_times_takes_the_intervals_ending_inside_it():
    s = Schedule("0 */6 * * *")
    windows = s.backfill_windows(utc(2024, 1, 1, 1), utc(2024, 1, 1, 13))
    assert windows == [
        (utc(2024, 1, 1, 0), utc(2024, 1, 1, 6)),
        (utc(2024, 1, 1, 6), utc(2024, 1, 1, 12)),
    ]


def test_backfill_of_an_empty_or_reversed_range():
    s = Schedule("@daily")
    assert s.backfill_windows(utc(2024, 1, 1, 1), utc(2024, 1, 1, 23)) == []
    assert s.backfill_windows(utc(2024, 1, 1), utc(2024, 1, 1)) == []
    with pytest.raises(ValueError, match="after"):
        s.backfill_windows(utc(2024, 1, 2), utc(2024, 1, 1))


def test_backfill_across_dst_in_a_local_zone_tiles_the_range():
    s = Schedule("@daily", timezone="America/New_York")
    windows = s.backfill_windows(utc(2024, 3, 1), utc(2024, 3, 20))
    assert [w[1] - w[0] for w in windows].count(timedelta(hours=23)) == 1
    assert all(a[1] == b[0] for a, b in zip(windows, windows[1:]))
    assert all(w[1].astimezone(NEW_YORK).hour == 0 for w in windows)
