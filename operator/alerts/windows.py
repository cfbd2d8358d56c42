"""Maintenance windows: whether an AlertRule is silenced at a given time. Pure, no clock.

A window is either one-off (``start`` .. ``end``) or recurring (``schedule``, a five-field cron
expression read in ``timeZone``, lasting ``duration`` from each start). Inside any window the
rule's instances show Silenced and nothing notifies or acts (see instances.py).

How a recurring window meets daylight saving time, decided here once:

* The schedule is wall-clock time in ``timeZone`` (cron's meaning; croniter computes the
  starts, zoneinfo the offsets).
* A start that falls into the hour skipped in spring begins when the clocks jump:
  ``30 2 * * *`` in Europe/Berlin on 2026-03-29 starts at 03:00+02:00.
* A start inside the hour repeated in autumn occurs at both readings of the wall time; the
  windows overlap into one, so ``0 2 * * *`` for 2h on 2026-10-25 silences from 02:00+02:00
  to 04:00+01:00: the whole wall-clock span 02:00 to 04:00, which is what the author wrote.
* ``duration`` is elapsed time from each start, not wall-clock time.

The latest start at or before ``now`` decides: any earlier start of the same schedule ended no
later than it does. A one-off ``start``/``end`` without an offset is read in ``timeZone`` too.

A window that cannot be read (an unknown time zone, a cron field out of range, a date that never
occurs) silences nothing; :func:`problems` names it so the handler can put it in a condition and
an Event (CEL cannot check zone names or cron fields).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterError, croniter

from cutover.api.v1alpha1 import seconds
from cutover.api.v1alpha1.alertrule import MaintenanceWindow

_JUST_AFTER = timedelta(microseconds=1)
"""croniter's previous start is strictly before its base time; a window starting at ``now`` is open."""


class WindowError(ValueError):
    """A maintenance window that cannot be evaluated; the message says which and why."""


@dataclass(frozen=True)
class OpenWindow:
    """A window that is open at the time asked about."""

    index: int
    """Its position in ``spec.maintenanceWindows``."""
    start: datetime
    end: datetime
    """When it closes (timezone-aware); the rule notifies again from then on."""


def zone(window: MaintenanceWindow) -> tzinfo:
    """The window's time zone; raises :class:`WindowError` for a name the zone database lacks."""
    try:
        return ZoneInfo(window.time_zone)
    except (ZoneInfoNotFoundError, ValueError) as err:
        raise WindowError(f"unknown time zone {window.time_zone!r}") from err


def opening(window: MaintenanceWindow, now: datetime) -> tuple[datetime, datetime] | None:
    """``(start, end)`` of the occurrence of ``window`` that covers ``now``, or None when it is
    closed. ``now`` must be timezone-aware. Raises :class:`WindowError` when the window cannot
    be read."""
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    where = zone(window)
    if window.start is not None and window.end is not None:
        start, end = _aware(window.start, where), _aware(window.end, where)
        return (start, end) if start <= now < end else None
    if window.schedule is None or window.duration is None:
        raise WindowError("a maintenance window needs start and end, or schedule and duration")
    try:
        start = croniter(window.schedule, (now + _JUST_AFTER).astimezone(where)).get_prev(datetime)
    except CroniterError as err:
        raise WindowError(f"schedule {window.schedule!r}: {err}") from err
    end = start + timedelta(seconds=seconds(window.duration))
    return (start, end) if start <= now < end else None


def _aware(moment: datetime, where: tzinfo) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=where)


def open_window(windows: Sequence[MaintenanceWindow], now: datetime) -> OpenWindow | None:
    """The open window that closes last, or None when the rule is not silenced at ``now``.
    Windows that cannot be read are skipped (see :func:`problems`)."""
    found: OpenWindow | None = None
    for index, window in enumerate(windows):
        try:
            span = opening(window, now)
        except WindowError:
            continue
        if span is not None and (found is None or span[1] > found.end):
            found = OpenWindow(index, span[0], span[1])
    return found


def problems(windows: Sequence[MaintenanceWindow], now: datetime) -> list[str]:
    """What is wrong with each window that cannot be evaluated, as
    ``maintenanceWindows[i]: <reason>``; empty when every window can be read."""
    found = []
    for index, window in enumerate(windows):
        try:
            opening(window, now)
        except WindowError as err:
            found.append(f"maintenanceWindows[{index}]: {err}")
    return found
