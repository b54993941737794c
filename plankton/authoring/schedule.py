"""Cron schedules: which instants a DAG fires at, and the data window each fire covers.

Why this module exists rather than calling croniter directly: a scheduler needs a *set* of
fire instants with stable answers whichever way it is walked. ``next_fire``, ``prev_fire``,
``window`` and ``fires_between`` must agree, so that a run's window ``(since, to)`` is always
``(previous fire, this fire)`` and windows tile time with no gap, overlap or duplicate, also
across daylight-saving changes. croniter's own time-zone mode does not give that: it fires
``30 2 * * *`` twice on a fall-back day (at 02:30 summer time and 02:30 winter time), which
would run a daily ETL twice. So croniter is used only for pure calendar arithmetic on naive
wall-clock times, and this module maps wall-clock times to instants itself.

Expressions:

* 5 fields ``minute hour day-of-month month day-of-week``;
* 6 fields, croniter 7's convention: **seconds are the LAST field**
  (``minute hour dom month dow second``; ``"0 0 * * * 30"`` fires at 00:00:30);
* ``@hourly @daily @weekly @monthly @yearly @annually @midnight``.

croniter's 7-field (year) form, hashed ``H`` fields and ``@reboot`` are refused.

Daylight saving (the schedule's ``timezone``, evaluated with :mod:`zoneinfo`). Schedules come
in two kinds, told apart by the hour field:

* **Every-hour** schedules (hour field ``*`` or ``0-23``: ``*/15 * * * *``, ``@hourly``) follow
  real time. When clocks go back the repeated hour fires again, so a 15-minute schedule fires
  every 15 real minutes; when clocks go forward the skipped wall-clock times do not exist and
  nothing fires for them (nothing is lost: the next wall-clock match follows in real time).
* **Named-hour** schedules (``30 2 * * *``, ``0 */6 * * *``, ``@daily``) fire once per matching
  wall-clock time. When clocks go back, only the first occurrence of a repeated time fires.
  When clocks go forward over a matching time (02:30 does not exist on the spring-forward
  day in Europe/Berlin), it fires once at the instant the clocks jump (03:00 summer time),
  like cron. If that instant is itself a match the two are the same fire.

Fire times are whole seconds; results are aware UTC datetimes; naive input is a ValueError.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone, tzinfo
from itertools import islice, takewhile
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterBadDateError, CroniterError, croniter

from plankton.errors import DagError

UTC = timezone.utc
ALIASES = ("@hourly", "@daily", "@weekly", "@monthly", "@yearly", "@annually", "@midnight")
#: Field counts accepted: classic cron, and croniter's form with seconds as the 6th field.
FIELD_COUNTS = (5, 6)
_SECOND = timedelta(seconds=1)
_MICROSECOND = timedelta(microseconds=1)
_ZERO = timedelta(0)
#: Arbitrary fixed date used to check at construction that an expression fires at all.
_PROBE_START = datetime(2000, 1, 1)


class Schedule:
    """A cron expression evaluated in a time zone.

    Parameters: ``expr`` (see the module docstring for the accepted forms), ``timezone`` (an
    IANA name such as ``"Europe/Berlin"``; default ``"UTC"``) and ``dag`` (named in errors).
    A bad expression, one that never fires, or an unknown time zone raises ``DagError``.
    """

    def __init__(self, expr: str, timezone: str = "UTC", dag: str = "?") -> None:
        self.dag = dag
        self.expr = expr.strip() if isinstance(expr, str) else expr
        self.timezone = timezone
        self._tz = _load_zone(timezone, dag, self.expr)
        self._every_hour = _check_expression(self.expr, dag)

    def __repr__(self) -> str:
        return f"Schedule({self.expr!r}, timezone={self.timezone!r}, dag={self.dag!r})"

    # -- public queries -------------------------------------------------------------------

    def next_fire(self, after: datetime) -> datetime:
        """The first fire time strictly after ``after``."""
        return next(self._forward(_aware(after, "after")))

    def prev_fire(self, at_or_before: datetime) -> datetime:
        """The last fire time at or before ``at_or_before``."""
        return next(self._backward(_aware(at_or_before, "at_or_before")))

    def window(self, fire: datetime) -> tuple[datetime, datetime]:
        """``(since, to)`` of the run fired at ``fire``: ``(previous fire time, fire)``.

        ``fire`` must be a fire time of this schedule (ValueError otherwise), so that windows
        of consecutive fires are contiguous by construction.
        """
        fire = _aware(fire, "fire")
        this, before = islice(self._backward(fire), 2)
        if this != fire:
            raise ValueError(
                f"{fire.isoformat()} is not a fire time of {self!r} "
                f"(nearest earlier fire: {this.isoformat()})"
            )
        return before, this

    def fires_between(self, start: datetime, end: datetime) -> list[datetime]:
        """Fire times ``t`` with ``start < t <= end``, oldest first (empty if end <= start)."""
        end = _aware(end, "end")
        return list(takewhile(lambda t: t <= end, self._forward(_aware(start, "start"))))

    def due(
        self,
        last_fired: datetime | None,
        now: datetime,
        catchup: bool,
        start: datetime | None = None,
    ) -> list[datetime]:
        """The fire times a scheduler should create runs for at ``now``, oldest first.

        With ``last_fired``: the fires in ``(last_fired, now]``, all of them if ``catchup``,
        else only the latest. Without it, a new schedule does not back-fill history: only the
        latest fire ``<= now`` is due, unless ``start`` is given, in which case the fires in
        ``[start, now]`` count (all or the latest, as above). ``start`` is ignored once
        ``last_fired`` is known.
        """
        now = _aware(now, "now")
        if last_fired is not None:
            fires = self.fires_between(last_fired, now)
        elif start is not None:
            fires = self.fires_between(_aware(start, "start") - _MICROSECOND, now)
        else:
            return [self.prev_fire(now)]
        return fires if catchup else fires[-1:]

    def backfill_windows(self, since: datetime, to: datetime) -> list[tuple[datetime, datetime]]:
        """One ``(since, to)`` window per schedule interval: for each fire time ``f`` with
        ``since < f <= to``, the window ``(previous fire, f)``. The first window may start
        before ``since``; consecutive windows are contiguous. ``since > to`` is a ValueError.
        """
        since, to = _aware(since, "since"), _aware(to, "to")
        if since > to:
            raise ValueError(
                f"backfill range is empty: since {since.isoformat()} is after to {to.isoformat()}"
            )
        fires = self.fires_between(since, to)
        if not fires:
            return []
        starts = [self.window(fires[0])[0], *fires[:-1]]
        return list(zip(starts, fires))

    # -- walking the fire set ---------------------------------------------------------------

    def _forward(self, after: datetime) -> Iterator[datetime]:
        """Fire instants strictly after ``after``, ascending, without duplicates.

        Wall-clock matches come from croniter in calendar order; their instants are almost in
        order, except that second occurrences of a repeated hour come late. A heap holds each
        instant until no later wall-clock time can produce an earlier one (``_lowest``).
        """
        local = after.astimezone(self._tz)
        start = _wall(local) - max(_ZERO, _fold_shift(self._tz, _wall(local)))
        walls = croniter(self.expr, start)
        heap: list[datetime] = []
        last = after
        while True:
            wall = walls.get_next(datetime)
            while heap and heap[0] < self._lowest(wall):
                fire = heapq.heappop(heap)
                if fire > last:
                    last = fire
                    yield fire
            for fire in self._instants(wall):
                if fire > after:
                    heapq.heappush(heap, fire)

    def _backward(self, at: datetime) -> Iterator[datetime]:
        """Fire instants at or before ``at``, descending, without duplicates (mirror of
        ``_forward``, with ``_highest`` bounding what earlier wall-clock times can produce)."""
        local = at.astimezone(self._tz)
        start = _wall(local) + max(_ZERO, _fold_shift(self._tz, _wall(local)))
        walls = croniter(self.expr, start + _SECOND)
        heap: list[tuple[float, datetime]] = []  # max-heap by negated timestamp
        last: datetime | None = None
        while True:
            wall = walls.get_prev(datetime)
            while heap and heap[0][1] > self._highest(wall):
                fire = heapq.heappop(heap)[1]
                if last is None or fire < last:
                    last = fire
                    yield fire
            for fire in self._instants(wall):
                if fire <= at:
                    heapq.heappush(heap, (-fire.timestamp(), fire))

    # -- one wall-clock time to instants -------------------------------------------------------

    def _instants(self, wall: datetime) -> list[datetime]:
        """The fire instants named by the naive wall-clock time ``wall`` (see module doc)."""
        first = wall.replace(tzinfo=self._tz, fold=0)
        second = wall.replace(tzinfo=self._tz, fold=1)
        if first.utcoffset() == second.utcoffset():
            return [first.astimezone(UTC)]
        if _exists(first):  # clocks went back: wall happened twice
            both = [first.astimezone(UTC), second.astimezone(UTC)]
            return both if self._every_hour else both[:1]
        # clocks went forward over wall: it never happened
        return [] if self._every_hour else [self._jump_instant(wall)]

    def _lowest(self, wall: datetime) -> datetime:
        """No wall-clock time >= ``wall`` yields an instant before this one."""
        return _to_utc(wall, max(_offsets(self._tz, wall)))

    def _highest(self, wall: datetime) -> datetime:
        """No wall-clock time <= ``wall`` yields an instant after this one."""
        return _to_utc(wall, min(_offsets(self._tz, wall)))

    def _jump_instant(self, wall: datetime) -> datetime:
        """The instant the clocks jumped forward over the non-existent ``wall``.

        It lies in ``(wall - offset_after, wall - offset_before]``; found by bisection on
        whole seconds (zone transitions are whole seconds).
        """
        before, after = _offsets(self._tz, wall)
        lo = _to_utc(wall, after)  # still before the jump
        hi = _to_utc(wall, before)  # already after it
        while hi - lo > _SECOND:
            mid = lo + timedelta(seconds=(hi - lo) // _SECOND // 2)  # whole seconds
            if mid.astimezone(self._tz).utcoffset() == before:
                lo = mid
            else:
                hi = mid
        return hi


# -- helpers ------------------------------------------------------------------------------------


def _load_zone(name: str, dag: str, expr: str) -> tzinfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, TypeError) as exc:
        raise DagError(
            f"DAG {dag!r}: unknown time zone {name!r} for schedule {expr!r} "
            "(use an IANA name such as 'UTC' or 'Europe/Berlin')",
            tasks=[dag],
        ) from exc


def _check_expression(expr: str, dag: str) -> bool:
    """Validate ``expr``; return True for an every-hour schedule (hour field is ``*``)."""

    def fail(reason: str) -> DagError:
        return DagError(f"DAG {dag!r}: bad schedule {expr!r}: {reason}", tasks=[dag])

    if not isinstance(expr, str) or not expr:
        raise fail("expected a cron string such as '*/5 * * * *' or '@daily'")
    if expr.startswith("@") and expr.lower() not in ALIASES:
        raise fail(f"unknown alias; use one of {', '.join(ALIASES)}")
    if not expr.startswith("@") and len(expr.split()) not in FIELD_COUNTS:
        raise fail(
            "expected 5 fields (minute hour day month weekday) or 6 with seconds "
            f"last, got {len(expr.split())}"
        )
    try:
        fields = croniter.expand(expr)[0]
        croniter(expr, _PROBE_START).get_next(datetime)
    except CroniterBadDateError as exc:
        raise fail("it never fires") from exc
    except (CroniterError, ValueError, TypeError, KeyError) as exc:
        raise fail(str(exc)) from exc
    return bool(fields[1] == ["*"])


def _aware(value: datetime, name: str) -> datetime:
    if not isinstance(value, datetime):
        raise TypeError(f"{name} must be a datetime, got {type(value).__name__}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware, got naive {value.isoformat()}")
    return value


def _wall(local: datetime) -> datetime:
    """Naive wall-clock reading, truncated to the second (fire times are whole seconds)."""
    return local.replace(tzinfo=None, fold=0, microsecond=0)


def _offsets(tz: tzinfo, wall: datetime) -> tuple[timedelta, timedelta]:
    """UTC offsets of ``wall`` read with fold=0 and fold=1 (equal unless near a change)."""
    first = wall.replace(tzinfo=tz, fold=0).utcoffset()
    second = wall.replace(tzinfo=tz, fold=1).utcoffset()
    assert first is not None and second is not None
    return first, second


def _fold_shift(tz: tzinfo, wall: datetime) -> timedelta:
    """How far clocks went back if ``wall`` is a repeated time (else zero or negative)."""
    first, second = _offsets(tz, wall)
    return first - second


def _to_utc(wall: datetime, offset: timedelta) -> datetime:
    return (wall - offset).replace(tzinfo=UTC)


def _exists(local: datetime) -> bool:
    """Whether an aware wall-clock time survives a round trip through UTC (not in a gap)."""
    back = local.astimezone(UTC).astimezone(local.tzinfo)
    return back.replace(tzinfo=None) == local.replace(tzinfo=None)
