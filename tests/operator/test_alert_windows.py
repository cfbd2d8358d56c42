"""Maintenance windows: one-off and recurring, in a time zone, across both DST changes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from cutover.api.v1alpha1.alertrule import MaintenanceWindow
from cutover.operator.alerts.windows import WindowError, open_window, opening, problems

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")


def recurring(schedule: str, duration: str, time_zone: str = "UTC") -> MaintenanceWindow:
    return MaintenanceWindow(schedule=schedule, duration=duration, time_zone=time_zone)


def test_one_off_window_is_half_open() -> None:
    window = MaintenanceWindow(start=datetime(2026, 5, 1, 10, tzinfo=UTC), end=datetime(2026, 5, 1, 12, tzinfo=UTC))
    assert opening(window, datetime(2026, 5, 1, 9, 59, 59, tzinfo=UTC)) is None
    assert opening(window, datetime(2026, 5, 1, 10, tzinfo=UTC)) is not None
    assert opening(window, datetime(2026, 5, 1, 11, 59, tzinfo=UTC)) is not None
    assert opening(window, datetime(2026, 5, 1, 12, tzinfo=UTC)) is None


def test_one_off_window_without_offset_is_read_in_its_zone() -> None:
    window = MaintenanceWindow(start=datetime(2026, 5, 1, 10), end=datetime(2026, 5, 1, 12), time_zone="Europe/Berlin")
    # 10:00 in Berlin (summer time) is 08:00 UTC.
    assert opening(window, datetime(2026, 5, 1, 8, 30, tzinfo=UTC)) is not None
    assert opening(window, datetime(2026, 5, 1, 10, 30, tzinfo=UTC)) is None


def test_weekly_window_in_utc() -> None:
    sunday_night = recurring("0 2 * * 0", "2h")  # examples/alertrule.yaml
    assert opening(sunday_night, datetime(2026, 3, 8, 2, 0, tzinfo=UTC)) is not None, "open at its start"
    assert opening(sunday_night, datetime(2026, 3, 8, 3, 59, tzinfo=UTC)) is not None
    assert opening(sunday_night, datetime(2026, 3, 8, 4, 0, tzinfo=UTC)) is None
    assert opening(sunday_night, datetime(2026, 3, 9, 2, 30, tzinfo=UTC)) is None, "a Monday"


def test_schedule_is_wall_clock_time_in_its_zone() -> None:
    nine_am = recurring("0 9 * * *", "1h", "America/New_York")
    # 09:00 in New York is 14:00 UTC in winter and 13:00 UTC in summer.
    assert opening(nine_am, datetime(2026, 1, 15, 14, 30, tzinfo=UTC)) is not None
    assert opening(nine_am, datetime(2026, 1, 15, 13, 30, tzinfo=UTC)) is None
    assert opening(nine_am, datetime(2026, 7, 15, 13, 30, tzinfo=UTC)) is not None
    assert opening(nine_am, datetime(2026, 7, 15, 14, 30, tzinfo=UTC)) is None


def test_spring_forward_start_in_the_skipped_hour_begins_when_clocks_jump() -> None:
    # Europe/Berlin, 2026-03-29: 02:00 CET becomes 03:00 CEST; 02:30 does not exist that day.
    window = recurring("30 2 * * *", "1h", "Europe/Berlin")
    span = opening(window, datetime(2026, 3, 29, 3, 15, tzinfo=BERLIN))
    assert span is not None
    start, end = span
    assert start == datetime(2026, 3, 29, 3, 0, tzinfo=BERLIN)
    assert start.utcoffset() == timedelta(hours=2)
    assert end - start == timedelta(hours=1), "duration is elapsed time"
    assert opening(window, datetime(2026, 3, 29, 4, 0, tzinfo=BERLIN)) is None
    # The next day is an ordinary day again.
    assert opening(window, datetime(2026, 3, 30, 2, 45, tzinfo=BERLIN)) is not None
    assert opening(window, datetime(2026, 3, 30, 2, 15, tzinfo=BERLIN)) is None


def test_spring_forward_day_before_and_after_in_utc() -> None:
    window = recurring("30 2 * * *", "1h", "Europe/Berlin")
    # 02:30 CET on the 28th is 01:30 UTC; 02:30 CEST on the 30th is 00:30 UTC.
    assert opening(window, datetime(2026, 3, 28, 1, 45, tzinfo=UTC)) is not None
    assert opening(window, datetime(2026, 3, 30, 0, 45, tzinfo=UTC)) is not None
    assert opening(window, datetime(2026, 3, 30, 1, 45, tzinfo=UTC)) is None


def test_fall_back_covers_the_whole_wall_clock_span() -> None:
    # Europe/Berlin, 2026-10-25: 03:00 CEST becomes 02:00 CET; 02:00..03:00 happens twice.
    window = recurring("0 2 * * *", "2h", "Europe/Berlin")
    first_two_am = datetime(2026, 10, 25, 0, 0, tzinfo=UTC)  # 02:00 CEST
    assert opening(window, first_two_am - timedelta(seconds=1)) is None
    for minutes in (0, 60, 120, 170):  # 02:00 CEST, 02:00 CET, 03:00 CET, 03:50 CET
        assert opening(window, first_two_am + timedelta(minutes=minutes)) is not None, minutes
    # Closes at 04:00 CET, two hours after the second reading of 02:00.
    assert opening(window, datetime(2026, 10, 25, 3, 0, tzinfo=UTC)) is None
    span = opening(window, datetime(2026, 10, 25, 2, 30, tzinfo=UTC))
    assert span is not None
    assert span[1] == datetime(2026, 10, 25, 4, 0, tzinfo=BERLIN)
    assert span[1].utcoffset() == timedelta(hours=1)


def test_us_spring_forward() -> None:
    # America/New_York, 2026-03-08: 02:00 EST becomes 03:00 EDT.
    window = recurring("15 2 * * *", "30m", "America/New_York")
    span = opening(window, datetime(2026, 3, 8, 3, 10, tzinfo=NEW_YORK))
    assert span is not None
    assert span[0] == datetime(2026, 3, 8, 3, 0, tzinfo=NEW_YORK)


def test_the_open_window_that_closes_last_wins() -> None:
    now = datetime(2026, 6, 1, 10, 30, tzinfo=UTC)
    windows = [
        recurring("0 10 * * *", "1h"),
        MaintenanceWindow(start=now - timedelta(hours=1), end=now + timedelta(hours=5)),
        recurring("0 0 1 1 *", "1h"),
    ]
    found = open_window(windows, now)
    assert found is not None
    assert found.index == 1
    assert found.end == now + timedelta(hours=5)
    assert open_window(windows[2:], now) is None
    assert open_window([], now) is None


@pytest.mark.parametrize(
    ("window", "reason"),
    [
        (recurring("0 2 * * *", "1h", "Mars/Olympus_Mons"), "unknown time zone 'Mars/Olympus_Mons'"),
        (recurring("61 2 * * *", "1h"), "schedule '61 2 * * *'"),
        (recurring("0 2 30 2 *", "1h"), "schedule '0 2 30 2 *'"),
    ],
)
def test_an_unreadable_window_silences_nothing_and_is_named(window: MaintenanceWindow, reason: str) -> None:
    now = datetime(2026, 2, 1, 2, 30, tzinfo=UTC)
    with pytest.raises(WindowError) as raised:
        opening(window, now)
    assert reason in str(raised.value)
    fine = recurring("0 2 * * *", "1h")
    assert open_window([window], now) is None
    assert open_window([window, fine], now) is not None, "the readable window still counts"
    found = problems([fine, window], now)
    assert len(found) == 1
    assert found[0].startswith("maintenanceWindows[1]: ")
    assert reason in found[0]


def test_naive_now_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        opening(recurring("0 2 * * *", "1h"), datetime(2026, 1, 1, 2, 30))
