"""Cron expressions: firing sequences checked by hand, malformed input, a brute-force reference."""
from __future__ import annotations

import random
from bisect import bisect_right
from collections.abc import Callable
from datetime import datetime, timedelta, timezone

import pytest

from fabric.tasks.cron import Cron, CronError


def utc(y: int, mo: int, d: int, h: int = 0, mi: int = 0) -> float:
    return datetime(y, mo, d, h, mi, tzinfo=timezone.utc).timestamp()


def firings(text: str, start: float, count: int) -> list[float]:
    cron, out, t = Cron.parse(text), [], start
    for _ in range(count):
        t = cron.next_after(t)
        out.append(t)
    return out


SEQUENCES = [
    ("*/15 * * * *", utc(2024, 1, 1, 0, 7),
     [utc(2024, 1, 1, 0, 15), utc(2024, 1, 1, 0, 30), utc(2024, 1, 1, 0, 45),
      utc(2024, 1, 1, 1, 0)]),
    # Months without a 31st are skipped whole.
    ("0 0 31 * *", utc(2024, 1, 31),
     [utc(2024, 3, 31), utc(2024, 5, 31), utc(2024, 7, 31), utc(2024, 8, 31),
      utc(2024, 10, 31), utc(2024, 12, 31), utc(2025, 1, 31)]),
    # Leap day: from one to the next leap year.
    ("0 0 29 2 *", utc(2023, 6, 1), [utc(2024, 2, 29), utc(2028, 2, 29), utc(2032, 2, 29)]),
    # Both day fields restricted: the 13th OR a Friday (Sep 13 2024 is both; Oct 13 a Sunday).
    ("30 12 13 * FRI", utc(2024, 9, 1),
     [utc(2024, 9, 6, 12, 30), utc(2024, 9, 13, 12, 30), utc(2024, 9, 20, 12, 30),
      utc(2024, 9, 27, 12, 30), utc(2024, 10, 4, 12, 30), utc(2024, 10, 11, 12, 30),
      utc(2024, 10, 13, 12, 30), utc(2024, 10, 18, 12, 30)]),
    # Range with a step, weekdays only: Friday afternoon to Monday morning.
    ("0 9-17/4 * * MON-FRI", utc(2024, 3, 8, 10),
     [utc(2024, 3, 8, 13), utc(2024, 3, 8, 17), utc(2024, 3, 11, 9), utc(2024, 3, 11, 13)]),
    # Names, any case, a list of months, over the year's end.
    ("0 6 * JAN,jul sun", utc(2024, 7, 20),
     [utc(2024, 7, 21, 6), utc(2024, 7, 28, 6), utc(2025, 1, 5, 6), utc(2025, 1, 12, 6)]),
    ("0 0 1 */3 *", utc(2024, 2, 1),
     [utc(2024, 4, 1), utc(2024, 7, 1), utc(2024, 10, 1), utc(2025, 1, 1)]),
    ("59 23 31 12 *", utc(2024, 12, 31, 23, 59), [utc(2025, 12, 31, 23, 59)]),
    # Day-of-week 5-7: Friday, Saturday, Sunday (7).
    ("0 0 * * 5-7", utc(2024, 1, 1),
     [utc(2024, 1, 5), utc(2024, 1, 6), utc(2024, 1, 7), utc(2024, 1, 12)]),
    # Vixie: a day field starting with '*' makes the day rule AND: odd days that are Mondays.
    ("0 0 */2 * MON", utc(2024, 1, 1),
     [utc(2024, 1, 15), utc(2024, 1, 29), utc(2024, 2, 5), utc(2024, 2, 19)]),
    # The night US (Mar 10) and EU (Mar 31) clocks jump: UTC has no gap.
    ("30 2 * * *", utc(2024, 3, 9),
     [utc(2024, 3, 9, 2, 30), utc(2024, 3, 10, 2, 30), utc(2024, 3, 11, 2, 30)]),
    ("30 1 31 3 *", utc(2024, 3, 1), [utc(2024, 3, 31, 1, 30), utc(2025, 3, 31, 1, 30)]),
    ("0 0 1 1 *", utc(1969, 6, 1), [0.0, utc(1971, 1, 1)]),
    ("@hourly", utc(2024, 12, 31, 23, 30), [utc(2025, 1, 1, 0), utc(2025, 1, 1, 1)]),
    ("@daily", utc(2024, 2, 28, 5), [utc(2024, 2, 29), utc(2024, 3, 1)]),
    ("@midnight", utc(2024, 2, 28, 5), [utc(2024, 2, 29), utc(2024, 3, 1)]),
    ("@weekly", utc(2024, 1, 3), [utc(2024, 1, 7), utc(2024, 1, 14)]),
    ("@monthly", utc(2024, 1, 31, 12), [utc(2024, 2, 1), utc(2024, 3, 1)]),
    ("@yearly", utc(2024, 6, 1), [utc(2025, 1, 1), utc(2026, 1, 1)]),
    ("@Annually", utc(2024, 6, 1), [utc(2025, 1, 1), utc(2026, 1, 1)]),
]


@pytest.mark.parametrize("text, start, expected", SEQUENCES, ids=[s[0] for s in SEQUENCES])
def test_known_firing_sequences(text: str, start: float, expected: list[float]) -> None:
    got = firings(text, start, len(expected))
    assert [datetime.fromtimestamp(t, timezone.utc) for t in got] == \
        [datetime.fromtimestamp(t, timezone.utc) for t in expected]
    assert all(isinstance(t, float) for t in got)


def test_strictly_after_a_firing_and_fractions_of_a_second() -> None:
    cron = Cron.parse("*/10 * * * *")
    on = utc(2024, 5, 5, 10, 20)
    assert cron.next_after(on) == utc(2024, 5, 5, 10, 30)
    assert cron.next_after(on - 0.001) == on
    assert cron.next_after(on + 0.5) == utc(2024, 5, 5, 10, 30)
    assert cron.next_after(on - 60.5) == on


def test_sunday_is_0_7_and_sun() -> None:
    start = utc(2024, 1, 1)
    expected = firings("0 0 * * 0", start, 5)
    assert firings("0 0 * * 7", start, 5) == expected
    assert firings("0 0 * * sun", start, 5) == expected
    assert firings("@weekly", start, 5) == expected
    assert Cron.parse("0 0 * * 0,7").weekdays == (0,)


def test_text_str_and_equality() -> None:
    cron = Cron.parse(" 0 9 * * mon ")
    assert cron.text == " 0 9 * * mon " and str(cron) == " 0 9 * * mon "
    assert Cron.parse("@daily") == Cron("@daily") != Cron.parse("0 0 * * *")
    assert (cron.minutes, cron.hours, cron.weekdays) == ((0,), (9,), (1,))
    assert repr(Cron("@daily")) == "Cron(text='@daily')"


@pytest.mark.parametrize("text", ["0 0 30 2 *", "0 0 31 4,6,9,11 *", "0 0 30-31 feb *"])
def test_an_expression_that_never_fires_raises(text: str) -> None:
    cron = Cron.parse(text)  # well-formed: only the calendar rules it out
    with pytest.raises(CronError, match="no time within 5 years"):
        cron.next_after(utc(2024, 1, 1))


def test_non_finite_time_is_refused() -> None:
    with pytest.raises(ValueError, match="finite"):
        Cron.parse("* * * * *").next_after(float("nan"))


MALFORMED = [
    ("", "needs 5 fields.*got 0"),
    ("* * * *", "needs 5 fields.*got 4"),
    ("* * * * * *", "needs 5 fields.*got 6"),
    ("61 * * * *", "'minute' value 61 is out of 0-59"),
    ("* 24 * * *", "'hour' value 24 is out of 0-23"),
    ("* * 0 * *", "'day-of-month' value 0 is out of 1-31"),
    ("* * 32 * *", "'day-of-month' value 32 is out of 1-31"),
    ("* * * 13 *", "'month' value 13 is out of 1-12"),
    ("* * * * 8", "'day-of-week' value 8 is out of 0-7"),
    ("5-1 * * * *", "'minute' range '5-1' is reversed"),
    ("* * * * SAT-SUN", "'day-of-week' range 'SAT-SUN' is reversed"),
    ("*/0 * * * *", "'minute' step 0 is out of 1-60"),
    ("* 1-5/0 * * *", "'hour' step 0 is out of 1-24"),
    ("*/61 * * * *", "'minute' step 61 is out of 1-60"),
    ("*/ * * * *", "'minute' step '' is not a number"),
    ("*/x * * * *", "'minute' step 'x' is not a number"),
    ("1/5 * * * *", "'minute' step in '1/5' needs"),
    ("* * * FOO *", "'month' name 'FOO' is unknown"),
    ("* * * JANUARY *", "'month' name 'JANUARY' is unknown"),
    ("* * * * funday", "'day-of-week' name 'funday' is unknown"),
    ("JAN * * * *", "'minute' value 'JAN' is not a number"),
    ("* * MON * *", "'day-of-month' value 'MON' is not a number"),
    ("1,,2 * * * *", "'minute' has an empty list item"),
    ("1, * * * *", "'minute' has an empty list item"),
    ("* ,3 * * *", "'hour' has an empty list item"),
    ("- * * * *", "'minute' has a range with a missing end"),
    ("1- * * * *", "'minute' has a range with a missing end"),
    ("1-2-3 * * * *", "'minute' value '2-3' is not a number"),
    ("1.5 * * * *", "'minute' value '1.5' is not a number"),
    ("+1 * * * *", "'minute' value '\\+1' is not a number"),
    ("-1 * * * *", "'minute' has a range with a missing end"),
    ("\u00b2 * * * *", "'minute' value '\u00b2' is not a number"),
    ("? * * * *", "'minute' value '\\?' is not a number"),
    ("@reboot", "macro '@reboot' is unknown"),
    ("@daily *", "macro '@daily \\*' is unknown"),
    ("* " * 128 + "*", "over 256"),
]


@pytest.mark.parametrize("text, message", MALFORMED, ids=[m[0][:20] for m in MALFORMED])
def test_malformed_expressions_raise_cron_error(text: str, message: str) -> None:
    with pytest.raises(CronError, match=message) as caught:
        Cron.parse(text)
    assert "\n" not in str(caught.value)
    assert isinstance(caught.value, ValueError)


def test_a_long_but_valid_expression_is_accepted() -> None:
    text = ",".join(str(m) for m in range(0, 60, 2)) + " " + ",".join(map(str, range(24)))
    text = (text + " * * *").ljust(256)
    assert len(text) == 256 and Cron.parse(text).minutes == tuple(range(0, 60, 2))


Match = Callable[[datetime], bool]

# Each expression with an independent reference predicate, and a window (a start, moved by up
# to 10 random days, and a length in days) over the boundary it should cross; the reference
# walks the window minute by minute.
REFERENCES: list[tuple[str, Match, datetime, int]] = [
    ("*/7 9-17 * * MON-FRI",
     lambda d: d.minute % 7 == 0 and 9 <= d.hour <= 17 and d.weekday() < 5,
     datetime(2024, 4, 20, tzinfo=timezone.utc), 20),
    ("15,45 */5 1,15 * SUN",  # day-of-month OR day-of-week, over the year's end
     lambda d: d.minute in (15, 45) and d.hour % 5 == 0
     and (d.day in (1, 15) or d.weekday() == 6),
     datetime(2024, 12, 1, tzinfo=timezone.utc), 45),
    ("0 0-23/6 */3 * *",  # '*/3' makes the day rule AND with the '*' day-of-week
     lambda d: d.minute == 0 and d.hour % 6 == 0 and d.day % 3 == 1,
     datetime(2025, 6, 1, tzinfo=timezone.utc), 70),
    ("*/10 4 28-31 * *",  # month ends of 31, 29 (leap February), 31 and 30 days
     lambda d: d.minute % 10 == 0 and d.hour == 4 and d.day >= 28,
     datetime(2024, 1, 15, tzinfo=timezone.utc), 110),
]


@pytest.mark.parametrize("text, matches, start, days", REFERENCES,
                         ids=[r[0] for r in REFERENCES])
def test_next_after_agrees_with_a_minute_by_minute_reference(
        text: str, matches: Match, start: datetime, days: int) -> None:
    rng = random.Random(text)
    cron = Cron.parse(text)
    first = start + timedelta(minutes=rng.randrange(10 * 1440))
    minute = timedelta(minutes=1)
    fires = [(first + minute * i).timestamp() for i in range(days * 1440)
             if matches(first + minute * i)]
    assert len(fires) > 20
    for _ in range(1000):
        t = rng.uniform(first.timestamp() - 60, fires[-1] - 1e-3)
        assert cron.next_after(t) == fires[bisect_right(fires, t)], datetime.fromtimestamp(
            t, timezone.utc)
