"""``crontab``: the syntax it accepts, the errors it raises, and the times it computes.

Pure arithmetic on explicit datetimes (no clock, no database): 5 and 6 fields,
aliases, Huey's keyword form, invalid fields, month ends, leap days, year
ends, time zones, the day-of-month / day-of-week OR of standard cron, and
daylight-saving transitions in Europe/Berlin and America/New_York (2026:
Berlin springs forward on March 29 and falls back on October 25, New York on
March 8 and November 1).
"""

from __future__ import annotations

import datetime as dt
import time
from collections import Counter
from collections.abc import Callable, Iterator
from itertools import pairwise
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from minique import Minique, crontab
from minique.crontab import Crontab

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")
UTC = dt.UTC


def fire_times(schedule: Crontab, after: dt.datetime, count: int) -> list[dt.datetime]:
    """The next ``count`` fire times, each computed from the one before."""
    times = []
    for _ in range(count):
        after = schedule.next(after)
        times.append(after)
    return times


def fire_timestamps(schedule: Crontab, zone: dt.tzinfo, start: dt.datetime,
                    end: dt.datetime) -> list[dt.datetime]:
    """Every fire time in ``[start, end)``, stepped in epoch seconds as the scheduler does."""
    times: list[dt.datetime] = []
    moment = start.timestamp()
    while True:
        moment = schedule.next_timestamp(moment, zone)
        if moment >= end.timestamp():
            return times
        times.append(dt.datetime.fromtimestamp(moment, zone))


@pytest.fixture
def local_tz(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[str], None]]:
    """Set the process's local zone (``$TZ`` + ``time.tzset()``); restored after the test."""

    def use(name: str) -> None:
        monkeypatch.setenv("TZ", name)
        time.tzset()

    yield use
    monkeypatch.undo()
    time.tzset()


# -- syntax ------------------------------------------------------------------------------


def test_five_field_expression_fires_at_each_matching_minute() -> None:
    # Given "every 15 minutes from 9 to 10, Monday to Friday"
    schedule = crontab("*/15 9-10 * * mon-fri")

    # When asked for its next times after Friday 2026-05-29 10:40
    times = fire_times(schedule, dt.datetime(2026, 5, 29, 10, 40), 3)

    # Then it finishes Friday's window and skips the weekend
    assert times == [dt.datetime(2026, 5, 29, 10, 45), dt.datetime(2026, 6, 1, 9, 0),
                     dt.datetime(2026, 6, 1, 9, 15)]


def test_six_field_expression_reads_seconds_from_the_sixth_field() -> None:
    # Given minutes */15 and, as the 6th field, seconds */20
    schedule = crontab("*/15 * * * * */20")

    # When asked for its next times after 12:00:00
    times = fire_times(schedule, dt.datetime(2026, 5, 28, 12, 0, 0), 4)

    # Then the seconds vary within each matching minute
    assert times == [dt.datetime(2026, 5, 28, 12, 0, 20), dt.datetime(2026, 5, 28, 12, 0, 40),
                     dt.datetime(2026, 5, 28, 12, 15, 0), dt.datetime(2026, 5, 28, 12, 15, 20)]


def test_every_second_expression_fires_each_second() -> None:
    schedule = crontab("* * * * * *")

    times = fire_times(schedule, dt.datetime(2026, 12, 31, 23, 59, 58, 500000), 3)

    assert times == [dt.datetime(2026, 12, 31, 23, 59, 59), dt.datetime(2027, 1, 1, 0, 0, 0),
                     dt.datetime(2027, 1, 1, 0, 0, 1)]


@pytest.mark.parametrize(("alias", "expected"), [
    ("@yearly", dt.datetime(2027, 1, 1)),
    ("@annually", dt.datetime(2027, 1, 1)),
    ("@monthly", dt.datetime(2026, 6, 1)),
    ("@weekly", dt.datetime(2026, 5, 31)),  # a Sunday
    ("@daily", dt.datetime(2026, 5, 29)),
    ("@midnight", dt.datetime(2026, 5, 29)),
    ("@hourly", dt.datetime(2026, 5, 28, 13)),
    ("@HOURLY", dt.datetime(2026, 5, 28, 13)),
])
def test_alias_fires_at_the_start_of_its_period(alias: str, expected: dt.datetime) -> None:
    # Given an alias, asked after Thursday 2026-05-28 12:30
    schedule = crontab(alias)

    # Then its next time is the start of the next period
    assert schedule.next(dt.datetime(2026, 5, 28, 12, 30)) == expected


@pytest.mark.parametrize(("keywords", "expression"), [
    ({"minute": "0", "hour": "*/3"}, "0 */3 * * *"),
    ({"minute": "30", "hour": "9", "day_of_week": "mon-fri"}, "30 9 * * mon-fri"),
    ({"minute": "0", "hour": "0", "day": "1", "month": "1,7"}, "0 0 1 1,7 *"),
    ({"minute": 5, "hour": 4}, "5 4 * * *"),
    ({"second": "*/10"}, "* * * * * */10"),
])
def test_keyword_form_is_the_same_schedule_as_the_expression(
        keywords: dict[str, object], expression: str) -> None:
    # Given Huey's keyword form (unnamed fields are "*")
    by_keyword = crontab(**keywords)  # type: ignore[arg-type]

    # Then it fires exactly when the written-out expression does
    start = dt.datetime(2026, 5, 28, 12, 30, 5)
    assert by_keyword == crontab(expression)
    assert fire_times(by_keyword, start, 5) == fire_times(crontab(expression), start, 5)


def test_extra_spaces_between_fields_are_ignored() -> None:
    assert crontab("  0   3 *  * * ") == crontab("0 3 * * *")


# -- invalid expressions ------------------------------------------------------------------


@pytest.mark.parametrize(("expression", "field"), [
    ("60 * * * *", "minute"),
    ("a * * * *", "minute"),
    ("*/0 * * * *", "minute"),
    ("-1 * * * *", "minute"),
    ("1,2,,3 * * * *", "minute"),
    ("* 24 * * *", "hour"),
    ("* x * * *", "hour"),
    ("* 1-25 * * *", "hour"),
    ("* * 32 * *", "day"),
    ("* * 0 * *", "day"),
    ("* * L-40 * *", "day"),
    ("* * * 13 *", "month"),
    ("* * * 0 *", "month"),
    ("* * * foo *", "month"),
    ("* * * * 8", "day_of_week"),
    ("* * * * mon-xyz", "day_of_week"),
    ("* * * * funday", "day_of_week"),
    ("* * * * * 60", "second"),
    ("* * * * * a", "second"),
    ("* * * * * */0", "second"),
])
def test_invalid_field_raises_value_error_naming_it(expression: str, field: str) -> None:
    # When a crontab is built with one bad field
    with pytest.raises(ValueError) as raised:
        crontab(expression)

    # Then the error names that field and its value, at the call
    assert f"the {field} field" in str(raised.value)
    bad_value = expression.split()[("minute", "hour", "day", "month", "day_of_week",
                                     "second").index(field)]
    assert repr(bad_value) in str(raised.value)


@pytest.mark.parametrize(("keywords", "field"), [
    ({"minute": "61"}, "minute"),
    ({"hour": "25"}, "hour"),
    ({"day": "0"}, "day"),
    ({"month": "13"}, "month"),
    ({"day_of_week": "8"}, "day_of_week"),
    ({"second": "61"}, "second"),
])
def test_invalid_keyword_raises_value_error_naming_it(
        keywords: dict[str, str], field: str) -> None:
    with pytest.raises(ValueError, match=f"the {field} field"):
        crontab(**keywords)


@pytest.mark.parametrize(("expression", "message"), [
    ("* * * *", "it has 4 fields"),
    ("* * * * * * *", "it has 7 fields"),
    ("", "it has 1 fields"),
    ("@every", "unknown alias"),
    ("@reboot", "unknown alias"),
])
def test_wrong_shape_raises_value_error_saying_what_to_give(expression: str,
                                                            message: str) -> None:
    with pytest.raises(ValueError, match=message):
        crontab(expression)


def test_expression_that_is_not_a_string_raises_value_error() -> None:
    with pytest.raises(ValueError, match="must be a string"):
        crontab(5)  # type: ignore[arg-type]


def test_schedule_that_can_never_fire_raises_value_error_when_created() -> None:
    with pytest.raises(ValueError, match="day"):
        crontab("0 0 30 2 *")


# -- next(): calendar edges ----------------------------------------------------------------


def test_next_crosses_month_ends_skipping_short_months() -> None:
    # Given "midnight on the 31st"
    schedule = crontab("0 0 31 * *")

    # Then months without a 31st are skipped
    assert fire_times(schedule, dt.datetime(2026, 5, 28), 4) == [
        dt.datetime(2026, 5, 31), dt.datetime(2026, 7, 31), dt.datetime(2026, 8, 31),
        dt.datetime(2026, 10, 31)]


def test_next_after_the_last_minute_of_a_month_is_the_first_of_the_next() -> None:
    assert crontab("*/10 * * * *").next(dt.datetime(2026, 2, 28, 23, 55)) == \
        dt.datetime(2026, 3, 1, 0, 0)
    assert crontab("0 0 1 * *").next(dt.datetime(2026, 4, 30, 23, 59, 59)) == \
        dt.datetime(2026, 5, 1)


def test_next_february_29th_is_in_the_next_leap_year() -> None:
    # Given "noon on February 29th", asked in 2026
    schedule = crontab("0 12 29 2 *")

    # Then it fires in 2028, then 2032
    assert fire_times(schedule, dt.datetime(2026, 5, 28), 2) == [
        dt.datetime(2028, 2, 29, 12), dt.datetime(2032, 2, 29, 12)]


def test_daily_job_in_a_leap_february_fires_on_the_29th_then_march_1st() -> None:
    times = fire_times(crontab("0 6 * * *"), dt.datetime(2028, 2, 28, 7), 2)

    assert times == [dt.datetime(2028, 2, 29, 6), dt.datetime(2028, 3, 1, 6)]


def test_next_crosses_the_year_end() -> None:
    assert fire_times(crontab("59 23 31 12 *"), dt.datetime(2026, 12, 31, 23, 59), 1) == [
        dt.datetime(2027, 12, 31, 23, 59)]
    assert crontab("0 * * * *").next(dt.datetime(2026, 12, 31, 23, 0)) == dt.datetime(2027, 1, 1)
    assert crontab("@yearly").next(dt.datetime(2027, 12, 31, 23, 59, 59)) == \
        dt.datetime(2028, 1, 1)


def test_next_is_strictly_after_a_matching_time() -> None:
    schedule = crontab("0 3 * * *")

    assert schedule.next(dt.datetime(2026, 5, 28, 3, 0)) == dt.datetime(2026, 5, 29, 3, 0)


# -- day of month OR day of week -----------------------------------------------------------


def test_day_and_day_of_week_both_restricted_fire_on_either() -> None:
    # Given "the 13th, or any Friday" (standard cron ORs them; Huey would AND them
    # and fire only on Friday the 13th)
    schedule = crontab("0 0 13 * fri")

    # When asked after Thursday 2026-05-28
    times = fire_times(schedule, dt.datetime(2026, 5, 28), 4)

    # Then Fridays fire, and so does Saturday June 13th
    assert times == [dt.datetime(2026, 5, 29), dt.datetime(2026, 6, 5),
                     dt.datetime(2026, 6, 12), dt.datetime(2026, 6, 13)]
    assert [t.strftime("%a %d") for t in times] == ["Fri 29", "Fri 05", "Fri 12", "Sat 13"]


def test_keyword_form_also_ors_day_and_day_of_week() -> None:
    schedule = crontab(minute="0", hour="0", day="1", day_of_week="mon")

    times = fire_times(schedule, dt.datetime(2026, 6, 23), 3)

    assert times == [dt.datetime(2026, 6, 29), dt.datetime(2026, 7, 1),
                     dt.datetime(2026, 7, 6)]


def test_only_day_of_week_restricted_fires_on_those_weekdays_only() -> None:
    times = fire_times(crontab("0 0 * * sun"), dt.datetime(2026, 5, 28), 2)

    assert times == [dt.datetime(2026, 5, 31), dt.datetime(2026, 6, 7)]


# -- time zones ----------------------------------------------------------------------------


def test_aware_datetime_is_read_in_its_own_zone_and_keeps_it() -> None:
    # Given "09:00" and an instant given in Tokyo time
    tokyo = ZoneInfo("Asia/Tokyo")
    after = dt.datetime(2026, 5, 28, 10, 0, tzinfo=tokyo)

    # When asked for the next time
    found = crontab("0 9 * * *").next(after)

    # Then it is 09:00 the next day in Tokyo, still a Tokyo datetime
    assert found == dt.datetime(2026, 5, 29, 9, 0, tzinfo=tokyo)
    assert found.tzinfo is tokyo
    assert found.utcoffset() == dt.timedelta(hours=9)


def test_the_same_instant_in_another_zone_gives_that_zones_wall_clock() -> None:
    # The instant 2026-05-28 01:00 UTC is 10:00 in Tokyo but 21:00 the day before in New York
    instant = dt.datetime(2026, 5, 28, 1, 0, tzinfo=UTC)
    schedule = crontab("0 9 * * *")

    in_tokyo = schedule.next(instant.astimezone(ZoneInfo("Asia/Tokyo")))
    in_new_york = schedule.next(instant.astimezone(NEW_YORK))
    in_utc = schedule.next(instant)

    assert in_tokyo.isoformat() == "2026-05-29T09:00:00+09:00"
    assert in_new_york.isoformat() == "2026-05-28T09:00:00-04:00"
    assert in_utc.isoformat() == "2026-05-28T09:00:00+00:00"


def test_naive_datetime_is_local_time(local_tz: Callable[[str], None]) -> None:
    # Given the machine's local zone is Berlin, where 02:30 does not exist on March 29th
    local_tz("Europe/Berlin")
    schedule = crontab("30 2 * * *")

    # When asked with a naive datetime
    found = schedule.next(dt.datetime(2026, 3, 28, 12, 0))

    # Then the answer is naive, in Berlin's wall clock: just after the skipped hour
    assert found.tzinfo is None
    assert found == dt.datetime(2026, 3, 29, 3, 0)
    assert found.timestamp() == dt.datetime(2026, 3, 29, 1, 0, tzinfo=UTC).timestamp()


def test_naive_datetime_follows_a_change_of_local_zone(local_tz: Callable[[str], None]) -> None:
    # Given the same question as above, but the machine's zone is UTC (no DST)
    local_tz("UTC")

    found = crontab("30 2 * * *").next(dt.datetime(2026, 3, 28, 12, 0))

    # Then 02:30 exists and is the answer
    assert found == dt.datetime(2026, 3, 29, 2, 30)


def test_naive_iteration_walks_through_the_repeated_hour(
        local_tz: Callable[[str], None]) -> None:
    # Given New York local time, where 01:00-02:00 happens twice on 2026-11-01
    local_tz("America/New_York")
    schedule = crontab("30 * * * *")

    # When next() is applied to its own answers (as a loop over fire times would)
    seen = []
    moment = dt.datetime(2026, 11, 1, 0, 45)
    for _ in range(6):
        moment = schedule.next(moment)
        seen.append((moment.strftime("%H:%M"), moment.fold))
        if moment.hour >= 3:
            break

    # Then it fires in both real 01:30s and moves on
    assert seen == [("01:30", 0), ("01:30", 1), ("02:30", 0), ("03:30", 0)]


# -- daylight saving time ----------------------------------------------------------------

DAILY_ACROSS_DST = [
    pytest.param(BERLIN, dt.datetime(2026, 3, 29), id="berlin-spring"),
    pytest.param(BERLIN, dt.datetime(2026, 10, 25), id="berlin-autumn"),
    pytest.param(NEW_YORK, dt.datetime(2026, 3, 8), id="new-york-spring"),
    pytest.param(NEW_YORK, dt.datetime(2026, 11, 1), id="new-york-autumn"),
]


@pytest.mark.parametrize("expression", ["30 2 * * *", "0 3 * * *", "0 1 * * *", "30 1 * * *",
                                        "0 2 * * *"])
@pytest.mark.parametrize(("zone", "day"), DAILY_ACROSS_DST)
def test_daily_job_fires_once_per_day_across_a_dst_change(
        zone: ZoneInfo, day: dt.datetime, expression: str) -> None:
    # Given a daily job, and the four days around a DST transition in that zone
    schedule = crontab(expression)
    start = (day - dt.timedelta(days=2)).replace(tzinfo=zone)
    end = (day + dt.timedelta(days=2)).replace(tzinfo=zone)

    # When its fire times are stepped through in epoch seconds
    times = fire_timestamps(schedule, zone, start, end)

    # Then every calendar day has exactly one: none skipped, none doubled
    per_day = Counter(t.date() for t in times)
    assert per_day == {(start + dt.timedelta(days=n)).date(): 1 for n in range(4)}, times


@pytest.mark.parametrize(("zone", "day", "expected"), [
    pytest.param(BERLIN, dt.datetime(2026, 3, 29), "2026-03-29T03:00:00+02:00", id="berlin"),
    pytest.param(NEW_YORK, dt.datetime(2026, 3, 8), "2026-03-08T03:00:00-04:00", id="new-york"),
])
def test_daily_job_in_the_skipped_hour_fires_when_the_clock_jumps(
        zone: ZoneInfo, day: dt.datetime, expected: str) -> None:
    # Given "02:30 daily" and a spring night where 02:00-03:00 does not exist
    schedule = crontab("30 2 * * *")

    # Then that night it fires at 03:00 (as cron runs jobs of a skipped hour after the jump)
    found = schedule.next(day.replace(hour=0, tzinfo=zone))
    assert found.isoformat() == expected


@pytest.mark.parametrize(("zone", "day", "expression", "expected"), [
    pytest.param(BERLIN, dt.datetime(2026, 10, 25), "30 2 * * *", "2026-10-25T02:30:00+02:00",
                 id="berlin"),
    pytest.param(NEW_YORK, dt.datetime(2026, 11, 1), "30 1 * * *", "2026-11-01T01:30:00-04:00",
                 id="new-york"),
])
def test_daily_job_in_the_repeated_hour_fires_in_its_first_occurrence_only(
        zone: ZoneInfo, day: dt.datetime, expression: str, expected: str) -> None:
    # Given a daily job at a wall-clock time that happens twice this autumn night
    schedule = crontab(expression)

    # When its next two times are computed from midnight
    first, second = fire_times(schedule, day.replace(hour=0, tzinfo=zone), 2)

    # Then it fires in the first (summer-time) occurrence, then not until the next day
    assert first.isoformat() == expected
    assert second.date() == (day + dt.timedelta(days=1)).date()


@pytest.mark.parametrize(("zone", "day", "repeated"), [
    pytest.param(BERLIN, dt.datetime(2026, 10, 25), 2, id="berlin"),
    pytest.param(NEW_YORK, dt.datetime(2026, 11, 1), 1, id="new-york"),
])
def test_hourly_job_fires_in_both_real_hours_of_the_repeated_hour(
        zone: ZoneInfo, day: dt.datetime, repeated: int) -> None:
    # Given "every hour at :30" on the autumn night
    schedule = crontab("30 * * * *")

    # When stepped through that calendar day
    times = fire_timestamps(schedule, zone, day.replace(tzinfo=zone),
                            (day + dt.timedelta(days=1)).replace(tzinfo=zone))

    # Then the repeated wall-clock hour fires twice, an hour of real time apart: 25 runs
    in_repeated = [t for t in times if t.hour == repeated]
    assert len(times) == 25
    assert len(in_repeated) == 2
    assert in_repeated[1].timestamp() - in_repeated[0].timestamp() == 3600
    assert all(b.timestamp() - a.timestamp() == 3600 for a, b in pairwise(times))


@pytest.mark.parametrize(("zone", "day"), [
    pytest.param(BERLIN, dt.datetime(2026, 3, 29), id="berlin"),
    pytest.param(NEW_YORK, dt.datetime(2026, 3, 8), id="new-york"),
])
def test_hourly_job_has_no_run_in_the_skipped_hour(zone: ZoneInfo, day: dt.datetime) -> None:
    schedule = crontab("30 * * * *")

    times = fire_timestamps(schedule, zone, day.replace(tzinfo=zone),
                            (day + dt.timedelta(days=1)).replace(tzinfo=zone))

    # A 23-hour day: 23 runs, one real hour apart, none at 02:30
    assert len(times) == 23
    assert all(t.hour != 2 for t in times)
    assert all(b.timestamp() - a.timestamp() == 3600 for a, b in pairwise(times))


def test_queue_reads_crontabs_in_its_tz(tmp_path: Path) -> None:
    # Given a queue whose crontabs are read in Berlin time
    mq = Minique(tmp_path / "queue.db", tz="Europe/Berlin")
    schedule = crontab("0 9 * * *")

    # When the next fire time is computed in epoch seconds in that zone
    after = dt.datetime(2026, 7, 1, 12, 0, tzinfo=UTC).timestamp()
    found = schedule.next_timestamp(after, mq.zone)

    # Then it is 09:00 Berlin summer time, i.e. 07:00 UTC
    assert found == dt.datetime(2026, 7, 2, 7, 0, tzinfo=UTC).timestamp()
