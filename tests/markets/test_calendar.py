"""The market calendar at frozen clocks: every answer is for the ``at``/``day`` given."""

from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction

from markets.calendar import (
    holidays_known,
    is_trading_day,
    market_open,
    market_status,
    market_summary,
    markets_status,
    next_open,
    trading_hours,
)
from markets.models import MarketHoliday

pytestmark = pytest.mark.django_db
IST = ZoneInfo("Asia/Kolkata")


def ist(day: str, clock: str) -> datetime:
    return datetime.combine(date.fromisoformat(day), time.fromisoformat(clock), tzinfo=IST)


# --- NSE: weekends, holidays, hours --------------------------------------------------------------


def test_a_weekday_inside_the_hours_is_open_until_the_close():
    status = market_status(exchange="NSE", at=ist("2026-12-01", "10:00"))  # a Tuesday
    assert status.is_open and status.reason == "open"
    assert status.closes_at == ist("2026-12-01", "15:30")
    assert status.detail == "NSE open until 15:30 IST"


def test_1531_ist_is_after_the_close_and_the_next_open_is_tomorrow_morning():
    at = ist("2026-12-01", "15:31")
    assert not market_open(exchange="NSE", at=at)
    status = market_status(exchange="NSE", at=at)
    assert status.reason == "after_close" and not status.is_open
    assert status.next_open == ist("2026-12-02", "09:15")
    assert status.detail == "NSE closed: after the close (15:30 IST); opens Wed 02 Dec 09:15 IST"


def test_the_open_and_the_close_are_exact():
    assert not market_open(exchange="NSE", at=ist("2026-12-01", "09:14:59"))
    assert market_open(exchange="NSE", at=ist("2026-12-01", "09:15"))
    assert market_open(exchange="NSE", at=ist("2026-12-01", "15:29:59"))
    assert not market_open(exchange="NSE", at=ist("2026-12-01", "15:30"))
    before = market_status(exchange="NSE", at=ist("2026-12-01", "08:00"))
    assert before.reason == "before_open" and before.next_open == ist("2026-12-01", "09:15")
    assert before.detail == "NSE closed: before the open; opens 09:15 IST"


def test_a_weekend_is_closed_and_opens_on_monday():
    saturday = ist("2026-12-05", "11:00")
    assert not is_trading_day(exchange="NSE", day=saturday.date())
    status = market_status(exchange="NSE", at=saturday)
    assert status.reason == "weekend" and status.holiday == ""
    assert status.next_open == ist("2026-12-07", "09:15")
    assert status.detail == "NSE closed: weekend; opens Mon 07 Dec 09:15 IST"


def test_a_seeded_holiday_is_closed_with_its_name_and_the_next_open_skips_the_weekend():
    christmas = ist("2026-12-25", "11:00")  # a Friday
    assert not is_trading_day(exchange="NSE", day=christmas.date())
    status = market_status(exchange="NFO", at=christmas)
    assert status.reason == "holiday" and status.holiday == "Christmas"
    assert status.next_open == ist("2026-12-28", "09:15")
    assert status.detail == "NFO closed: holiday (Christmas); opens Mon 28 Dec 09:15 IST"


def test_a_holiday_on_the_eve_is_skipped_by_the_next_open():
    # Diwali-Balipratipada, Tuesday 10 Nov 2026: Monday evening's next open is Wednesday.
    assert next_open(exchange="NSE", at=ist("2026-11-09", "16:00")) == ist("2026-11-11", "09:15")


@pytest.mark.parametrize("exchange", ["NSE", "BSE", "NFO", "BFO", "CDS", "BCD"])
def test_nse_s_list_applies_to_the_equity_and_currency_segments(exchange):
    assert not is_trading_day(exchange=exchange, day=date(2026, 1, 26))
    assert is_trading_day(exchange=exchange, day=date(2026, 1, 27))


def test_the_seed_has_nse_s_fifteen_weekday_holidays_and_the_election_day():
    days = MarketHoliday.objects.filter(segment="NSE", day__year=2026).values_list("day", flat=True)
    assert len(days) == 16 and all(day.weekday() < 5 for day in days)
    assert date(2026, 1, 15) in days and holidays_known(year=2026)
    assert not holidays_known(year=2027)


# --- currency: its own extra holidays and hours -----------------------------------------------------


def test_the_currency_segment_has_its_own_extra_holidays():
    gudi_padwa = date(2026, 3, 19)
    assert is_trading_day(exchange="NSE", day=gudi_padwa)
    assert not is_trading_day(exchange="CDS", day=gudi_padwa)
    assert market_status(exchange="BCD", at=ist("2026-03-19", "10:00")).holiday == "Gudi Padwa"


def test_the_currency_segment_trades_until_17_00():
    assert market_open(exchange="CDS", at=ist("2026-12-01", "16:59"))
    assert not market_open(exchange="CDS", at=ist("2026-12-01", "17:00"))
    assert market_open(exchange="CDS", at=ist("2026-12-01", "09:00"))


# --- MCX: sessions on holidays, the close with US daylight saving -----------------------------------


def test_mcx_trades_in_the_evening_of_a_morning_holiday():
    # Holi, Tuesday 3 Mar 2026: NSE closed; MCX's morning session closed, its evening open.
    assert not is_trading_day(exchange="NSE", day=date(2026, 3, 3))
    assert is_trading_day(exchange="MCX", day=date(2026, 3, 3))
    morning = market_status(exchange="MCX", at=ist("2026-03-03", "10:00"))
    assert morning.reason == "holiday" and morning.holiday == "Holi"
    assert morning.next_open == ist("2026-03-03", "17:00")
    assert morning.detail == "MCX closed: holiday (Holi); opens 17:00 IST"
    evening = market_status(exchange="MCX", at=ist("2026-03-03", "21:00"))
    assert evening.is_open and evening.closes_at == ist("2026-03-03", "23:55")  # US still on winter time
    assert evening.detail == "MCX open until 23:55 IST (Holi: evening only)"


def test_mcx_closes_at_23_30_while_the_us_is_on_summer_time_and_at_23_55_otherwise():
    # US daylight saving 2026: 8 March to 1 November.
    assert trading_hours(exchange="MCX", day=date(2026, 3, 6))[1] == ist("2026-03-06", "23:55")
    assert trading_hours(exchange="MCX", day=date(2026, 3, 9))[1] == ist("2026-03-09", "23:30")
    assert trading_hours(exchange="MCX", day=date(2026, 10, 30))[1] == ist("2026-10-30", "23:30")
    assert trading_hours(exchange="MCX", day=date(2026, 11, 2))[1] == ist("2026-11-02", "23:55")
    assert market_open(exchange="MCX", at=ist("2026-12-01", "23:40"))
    assert not market_open(exchange="MCX", at=ist("2026-07-01", "23:40"))


def test_mcx_in_the_evening_is_open_while_nse_is_closed():
    at = ist("2026-12-01", "20:00")
    sent = markets_status(at=at)
    assert sent["at"] == "2026-12-01T20:00:00+05:30"
    status = sent["exchanges"]
    assert status["MCX"]["open"] and not status["NSE"]["open"]
    assert status["NSE"]["reason"] == "after_close" and status["NSE"]["why"] == "after the close (15:30 IST)"
    assert status["NSE"]["opens"] == "Wed 02 Dec 09:15 IST"
    assert status["MCX"]["closes_at"] == "2026-12-01T23:55:00+05:30"
    assert market_summary(exchanges=["NSE", "MCX"], at=at) == {
        "open": True,
        "text": "market open: MCX open until 23:55 IST",
    }
    assert market_summary(exchanges=["NSE", "NFO"], at=at) == {
        "open": False,
        "text": "market closed: after the close (15:30 IST) (NFO opens Wed 02 Dec 09:15 IST)",
    }
    assert market_summary(exchanges=[], at=ist("2026-12-25", "10:00")) == {
        "open": False,
        "text": "market closed: holiday (Christmas) (NSE opens Mon 28 Dec 09:15 IST)",
    }


def test_mcx_closes_after_the_morning_on_new_year_day():
    assert market_open(exchange="MCX", at=ist("2026-01-01", "16:59"))
    status = market_status(exchange="MCX", at=ist("2026-01-01", "17:30"))
    assert status.reason == "holiday" and status.holiday == "New Year Day"
    assert status.next_open == ist("2026-01-02", "09:00")


def test_mcx_is_closed_all_day_on_republic_day():
    assert not is_trading_day(exchange="MCX", day=date(2026, 1, 26))


# --- edits in the admin --------------------------------------------------------------------------


def test_a_holiday_added_later_is_seen_at_once():
    day = date(2026, 12, 3)
    assert is_trading_day(exchange="NSE", day=day)
    MarketHoliday.objects.create(segment="NSE", day=day, description="Unscheduled closure")
    assert not is_trading_day(exchange="NSE", day=day)
    assert market_status(exchange="NSE", at=ist("2026-12-03", "10:00")).holiday == "Unscheduled closure"


def test_a_special_session_makes_a_sunday_a_trading_day_for_its_hours():
    MarketHoliday.objects.create(segment="NSE", day=date(2026, 11, 8), description="Diwali Laxmi Pujan (Muhurat)",
                                 session="special", opens_at=time(18), closes_at=time(19, 15))  # fmt: skip
    sunday = date(2026, 11, 8)
    assert is_trading_day(exchange="NSE", day=sunday)
    assert market_open(exchange="NFO", at=ist("2026-11-08", "18:30"))
    assert not market_open(exchange="NSE", at=ist("2026-11-08", "10:00"))
    assert market_status(exchange="NSE", at=ist("2026-11-07", "12:00")).next_open == ist(
        "2026-11-08", "18:00"
    )
    assert market_status(exchange="NSE", at=ist("2026-11-08", "19:30")).reason == "after_close"


def test_one_row_per_segment_and_day():
    MarketHoliday.objects.create(segment="NSE", day=date(2026, 12, 3), description="One")
    with pytest.raises(IntegrityError), transaction.atomic():
        MarketHoliday.objects.create(segment="NSE", day=date(2026, 12, 3), description="Two")
    MarketHoliday.objects.create(segment="MCX", day=date(2026, 12, 3), description="MCX's own")


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"session": "special"}, "A special session needs"),
        ({"session": "special", "opens_at": time(19), "closes_at": time(18)}, "A special session needs"),
        ({"session": "closed", "opens_at": time(18)}, "for a special session only"),
        ({"segment": "NSE", "session": "evening_only"}, "Only MCX has morning and evening sessions"),
    ],
)
def test_a_row_that_makes_no_sense_is_refused_with_a_reason(fields, message):
    row = MarketHoliday(**{"segment": "MCX", "day": date(2026, 12, 3), "description": "x", **fields})
    with pytest.raises(ValidationError, match=message):
        row.full_clean()


def test_the_calendar_asks_the_database_once_per_year_not_per_call(django_assert_max_num_queries):
    market_status(exchange="NSE", at=ist("2026-12-01", "10:00"))
    with django_assert_max_num_queries(0):
        for minute in range(0, 600, 7):
            at = ist("2026-12-01", "09:00") + timedelta(minutes=minute)
            markets_status(at=at)
            market_open(exchange="MCX", at=at)


def test_an_operator_edits_holidays_in_the_admin(staff_client):
    response = staff_client.post("/admin/markets/marketholiday/add/", {
        "segment": "MCX", "day": "2026-12-03", "description": "Exchange closure", "session": "evening_only",
        "source": "MCX circular",
    })  # fmt: skip
    assert response.status_code == 302
    assert market_status(exchange="MCX", at=ist("2026-12-03", "10:00")).next_open == ist(
        "2026-12-03", "17:00"
    )
    refused = staff_client.post("/admin/markets/marketholiday/add/", {
        "segment": "NSE", "day": "2026-12-04", "description": "x", "session": "evening_only",
    })  # fmt: skip
    assert (
        refused.status_code == 200 and "Only MCX has morning and evening sessions" in refused.content.decode()
    )
    listing = staff_client.get("/admin/markets/marketholiday/?segment=MCX")
    assert listing.status_code == 200 and "Exchange closure" in listing.content.decode()
