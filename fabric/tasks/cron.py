"""Cron expressions: parse the standard 5-field syntax and find the next firing time (pure).

Expressions are evaluated in UTC: ``Cron.next_after`` takes and returns Unix timestamps and
never looks at a local time zone, so daylight saving time plays no part.

Syntax, fields in order ``minute hour day-of-month month day-of-week``:

    minute 0-59, hour 0-23, day-of-month 1-31, month 1-12 or JAN-DEC,
    day-of-week 0-7 or SUN-SAT (0 and 7 are both Sunday); names are case-insensitive.
    Each field is a comma-separated list of ``*``, ``n``, ``a-b``, ``*/s`` or ``a-b/s``.
    Macros: @hourly, @daily (= @midnight), @weekly, @monthly, @yearly (= @annually).

Day-of-month and day-of-week follow Vixie cron: if either field starts with ``*`` (``*`` or
``*/s``) a day must match both; otherwise a day matches if it matches either.
"""
from __future__ import annotations

import calendar
import math
import re
from bisect import bisect_left, bisect_right
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

MAX_LENGTH = 256
"""The longest expression accepted, in characters."""

HORIZON_YEARS = 5
"""``next_after`` gives up (CronError) when nothing fires within this many years."""

_MACROS = {
    "@hourly": "0 * * * *",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@weekly": "0 0 * * 0",
    "@monthly": "0 0 1 * *",
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
}
_MONTHS = {name: i + 1 for i, name in enumerate(
    ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"))}
_DAYS = {name: i for i, name in enumerate(("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"))}
_NUMBER = re.compile(r"[0-9]+")  # ASCII only: str.isdigit() would take "²" or "٣"
_EPOCH = datetime(1970, 1, 1)


class CronError(ValueError):
    """A malformed cron expression, or one that never fires within ``HORIZON_YEARS``."""


@dataclass(frozen=True)
class _Field:
    name: str
    low: int
    high: int
    names: dict[str, int] | None = None


_FIELDS = (
    _Field("minute", 0, 59),
    _Field("hour", 0, 23),
    _Field("day-of-month", 1, 31),
    _Field("month", 1, 12, _MONTHS),
    _Field("day-of-week", 0, 7, _DAYS),
)


@dataclass(frozen=True, slots=True)
class Cron:
    """A parsed cron expression; ``Cron(text)`` parses too and raises CronError likewise.

    The value sets are sorted tuples; ``weekdays`` counts 0 = Sunday .. 6 = Saturday.
    Two expressions are equal when their texts are.
    """

    text: str
    minutes: tuple[int, ...] = field(init=False, repr=False, compare=False)
    hours: tuple[int, ...] = field(init=False, repr=False, compare=False)
    days: tuple[int, ...] = field(init=False, repr=False, compare=False)
    months: tuple[int, ...] = field(init=False, repr=False, compare=False)
    weekdays: tuple[int, ...] = field(init=False, repr=False, compare=False)
    day_or: bool = field(init=False, repr=False, compare=False)
    """True when both day fields are restricted, so that either one matching is enough."""

    def __post_init__(self) -> None:
        parts = _split(self.text)
        values = [_parse_field(part, spec) for part, spec in zip(parts, _FIELDS)]
        weekdays = tuple(sorted({d % 7 for d in values[4]}))
        for name, value in zip(("minutes", "hours", "days", "months"), values):
            object.__setattr__(self, name, value)
        object.__setattr__(self, "weekdays", weekdays)
        object.__setattr__(self, "day_or",
                           not parts[2].startswith("*") and not parts[4].startswith("*"))

    @classmethod
    def parse(cls, text: str) -> Cron:
        """Parse ``text`` (5 fields or a macro); raise CronError naming what is wrong."""
        return cls(text)

    def __str__(self) -> str:
        """The expression as it was written."""
        return self.text

    def next_after(self, t: float) -> float:
        """The first firing time strictly after Unix timestamp ``t``, evaluated in UTC.

        Raises CronError if nothing fires within ``HORIZON_YEARS`` years (say Feb 30), and
        ValueError if ``t`` is not finite or lies outside the years 1-9999.
        """
        if not math.isfinite(t):
            raise ValueError(f"cron: time {t!r} is not a finite timestamp")
        try:
            start = _EPOCH + timedelta(minutes=int(t // 60) + 1)  # firings are on whole minutes
        except OverflowError:
            raise ValueError(f"cron: time {t!r} is beyond the years datetime holds") from None
        y, mo, d, h, mi = start.year, start.month, start.day, start.hour, start.minute
        limit = (y + HORIZON_YEARS, mo, d)
        # Each step either accepts a field or jumps to the next value it could take, resetting
        # the smaller fields: a non-matching month costs one step, a day one, an hour one.
        while (y, mo, d) <= limit:
            if mo not in self.months:
                i = bisect_right(self.months, mo)
                if i == len(self.months):
                    y, i = y + 1, 0
                mo, d, h, mi = self.months[i], 1, 0, 0
            elif not self._day_matches(y, mo, d):
                y, mo, d = _next_day(y, mo, d)
                h = mi = 0
            elif h not in self.hours:
                i = bisect_left(self.hours, h)
                if i == len(self.hours):
                    y, mo, d = _next_day(y, mo, d)
                    h = 0
                else:
                    h = self.hours[i]
                mi = 0
            else:
                i = bisect_left(self.minutes, mi)
                if i < len(self.minutes):
                    return float(calendar.timegm((y, mo, d, h, self.minutes[i], 0)))
                h, mi = h + 1, 0
                if h == 24:
                    y, mo, d = _next_day(y, mo, d)
                    h = 0
        raise CronError(f"cron expression {self.text!r} fires at no time within "
                        f"{HORIZON_YEARS} years after {start:%Y-%m-%d %H:%M} UTC")

    def _day_matches(self, y: int, mo: int, d: int) -> bool:
        dom = d in self.days
        dow = (date(y, mo, d).weekday() + 1) % 7 in self.weekdays  # weekday(): Monday is 0
        return dom or dow if self.day_or else dom and dow


def _next_day(y: int, mo: int, d: int) -> tuple[int, int, int]:
    if d < calendar.monthrange(y, mo)[1]:
        return y, mo, d + 1
    return (y + 1, 1, 1) if mo == 12 else (y, mo + 1, 1)


def _split(text: str) -> list[str]:
    """The five fields of ``text``, with a macro replaced by what it stands for."""
    if not isinstance(text, str):
        raise CronError(f"cron expression must be a string, not {type(text).__name__}")
    if len(text) > MAX_LENGTH:
        raise CronError(f"cron expression is {len(text)} characters long, over {MAX_LENGTH}")
    stripped = text.strip()
    if stripped.startswith("@"):
        if stripped.lower() not in _MACROS:
            raise CronError(f"cron macro {stripped!r} is unknown (known: {', '.join(_MACROS)})")
        stripped = _MACROS[stripped.lower()]
    parts = stripped.split()
    if len(parts) != len(_FIELDS):
        raise CronError(f"cron expression needs {len(_FIELDS)} fields "
                        f"(minute hour day-of-month month day-of-week), got {len(parts)}")
    return parts


def _parse_field(text: str, spec: _Field) -> tuple[int, ...]:
    values: set[int] = set()
    for item in text.split(","):
        values.update(_parse_item(item, spec))
    return tuple(sorted(values))


def _fail(spec: _Field, why: str) -> CronError:
    return CronError(f"cron field {spec.name!r} {why}")


def _parse_item(item: str, spec: _Field) -> range:
    if not item:
        raise _fail(spec, "has an empty list item")
    base, slash, step_text = item.partition("/")
    step = 1
    if slash:
        span = spec.high - spec.low + 1
        if not _NUMBER.fullmatch(step_text):
            raise _fail(spec, f"step {step_text!r} is not a number")
        step = int(step_text)
        if not 1 <= step <= span:
            raise _fail(spec, f"step {step} is out of 1-{span}")
    if base == "*":
        low, high = spec.low, spec.high
    elif "-" in base:
        first, _, last = base.partition("-")
        low, high = _value(first, spec), _value(last, spec)
        if low > high:
            raise _fail(spec, f"range {base!r} is reversed ({low} > {high})")
    elif slash:
        raise _fail(spec, f"step in {item!r} needs '*' or a range 'a-b' before it")
    else:
        low = high = _value(base, spec)
    return range(low, high + 1, step)


def _value(token: str, spec: _Field) -> int:
    if _NUMBER.fullmatch(token):
        value = int(token)
        if not spec.low <= value <= spec.high:
            raise _fail(spec, f"value {value} is out of {spec.low}-{spec.high}")
        return value
    if not token:
        raise _fail(spec, "has a range with a missing end")
    if spec.names is None:
        raise _fail(spec, f"value {token!r} is not a number")
    if token.upper() not in spec.names:
        raise _fail(spec, f"name {token!r} is unknown (known: {', '.join(spec.names)})")
    return spec.names[token.upper()]
