"""End of day: each strategy's day closed from its orders and trades, with Zerodha's charges;
idempotent, caught up when missed, and served by GET /api/stats/daily/."""

import logging
from datetime import date, datetime, time, timedelta
from decimal import Decimal as D
from zoneinfo import ZoneInfo

import pytest
from django.forms.models import model_to_dict
from django.utils import timezone
from django_q.models import Schedule
from rest_framework.test import APIClient

from oms import state
from oms.endofday import daily_stats_close, end_of_day_run, trading_day
from oms.models import DailyStats, Order, Strategy, StrategyAccess, Trade
from tests.factories import InstrumentFactory
from tests.oms.helpers import place, price
from tests.tradingportal.test_schedules import run_as_the_cluster_would

pytestmark = pytest.mark.django_db
IST = ZoneInfo("Asia/Kolkata")
MONDAY = date(2026, 6, 1)


def at(day: date, clock: str) -> datetime:
    return datetime.combine(day, time.fromisoformat(clock), tzinfo=IST)


def today() -> date:
    return timezone.localdate(timezone.now(), IST)


def intraday_round_trip(reliance, trader):
    """Bought 100 RELIANCE MIS at 2500, sold at 2510 (paper fills), and one order refused."""
    price(reliance.instrument_token, "2500.00")
    place(reliance, user=trader, quantity=100)
    place(reliance, user=trader, quantity=1, order_type="LIMIT", price="2500.01")  # off the 0.05 tick
    price(reliance.instrument_token, "2510.00")
    place(reliance, user=trader, quantity=100, transaction_type="SELL")


def test_closing_the_day_writes_counts_pnl_and_the_charges_of_a_contract_note(manual, reliance, trader):
    intraday_round_trip(reliance, trader)
    assert Order.objects.filter(status=state.RISK_REJECTED).count() == 1
    now = at(today(), "15:45")

    counts = daily_stats_close(day=today(), now=now)

    assert counts == {"closed": 1, "unchanged": 0, "charges_failed": 0}
    stats = DailyStats.objects.get(strategy=manual, day=today())
    assert (stats.orders, stats.rejected, stats.trades) == (3, 1, 2)
    assert stats.turnover == D("501000") and stats.realised == D("1000") and stats.unrealised == 0
    # Hand-computed contract note (NSE, intraday): brokerage 20 + 20 (0.03% is above the cap);
    # STT 0.025% of the 251000 sold = 62.75 -> 63 (rupee); exchange 0.00307% of 501000 = 15.3807
    # -> 15.38; SEBI 10/crore = 0.501 -> 0.50; stamp 0.003% of the 250000 bought = 7.5 -> 8
    # (rupee, half up); GST 18% of (40 + 15.38 + 0.50) = 10.0584 -> 10.06. Total 136.94.
    assert stats.charges == D("136.94")
    assert stats.charges_detail == {
        "brokerage": "40.00", "stt": "63.00", "exchange": "15.38", "sebi": "0.50", "stamp": "8.00", "gst": "10.06",
        "turnover": "501000.0000", "orders": 2, "total": "136.94", "schedule": "default",
    }  # fmt: skip
    assert stats.net_pnl == D("863.06")
    assert stats.order_to_trade_ratio == D("1.50")
    assert stats.closed_at == now == stats.updated_at


def test_closing_twice_gives_the_same_row(manual, reliance, trader):
    intraday_round_trip(reliance, trader)
    daily_stats_close(day=today(), now=at(today(), "15:45"))
    first = model_to_dict(DailyStats.objects.get(strategy=manual))

    counts = daily_stats_close(day=today(), now=at(today(), "15:50"))

    assert counts == {"closed": 0, "unchanged": 1, "charges_failed": 0}
    assert model_to_dict(DailyStats.objects.get(strategy=manual)) == first


def test_a_fill_after_the_close_is_counted_when_the_day_is_closed_again(manual, reliance, trader):
    intraday_round_trip(reliance, trader)
    daily_stats_close(day=today(), now=at(today(), "15:45"))
    place(reliance, user=trader, quantity=10)  # a late fill (the counters move; the close is stale)

    daily_stats_close(day=today(), now=at(today(), "23:00"))

    stats = DailyStats.objects.get(strategy=manual)
    assert (stats.orders, stats.trades, stats.turnover) == (4, 3, D("526100"))
    assert stats.closed_at == at(today(), "23:00")


def test_counters_that_drifted_are_corrected_from_the_trades_and_logged(manual, reliance, trader, caplog):
    intraday_round_trip(reliance, trader)
    DailyStats.objects.filter(strategy=manual).update(trades=7, realised=D("5"))

    with caplog.at_level(logging.WARNING, logger="oms.endofday"):
        daily_stats_close(day=today(), now=at(today(), "15:45"))

    stats = DailyStats.objects.get(strategy=manual)
    assert (stats.trades, stats.realised) == (2, D("1000"))
    assert "running counters differed" in caplog.text and "'trades': (7, 2)" in caplog.text


def test_open_positions_count_as_unrealised_at_the_close(manual, reliance, trader):
    price(reliance.instrument_token, "2500.00")
    place(reliance, user=trader, quantity=10, product="CNC")
    from oms.monitor import risk_monitor_run

    price(reliance.instrument_token, "2520.00")
    risk_monitor_run()  # marks the position: +200 unrealised

    daily_stats_close(day=today(), now=at(today(), "15:45"))

    stats = DailyStats.objects.get(strategy=manual)
    assert stats.realised == 0 and stats.unrealised == D("200")
    assert stats.pnl == D("200") and stats.net_pnl == D("200") - stats.charges
    assert stats.peak_pnl >= D("200")


def test_charges_that_cannot_be_computed_are_left_null_with_the_reason_never_zero(manual, reliance, trader,
                                                                                 caplog):  # fmt: skip
    price(reliance.instrument_token, "2500.00")
    place(reliance, user=trader, quantity=10, product="NRML")  # NRML does not trade on NSE

    with caplog.at_level(logging.WARNING, logger="oms.endofday"):
        counts = daily_stats_close(day=today(), now=at(today(), "15:45"))

    stats = DailyStats.objects.get(strategy=manual)
    assert counts["charges_failed"] == 1
    assert stats.charges is None and stats.net_pnl is None and stats.closed_at is not None
    assert "product 'NRML' does not trade on NSE" in stats.charges_detail["error"]
    assert "cannot be computed" in caplog.text and "product 'NRML'" in caplog.text


def test_a_day_without_trades_has_zero_charges_and_no_ratio(manual):
    DailyStats.objects.create(strategy=manual, day=MONDAY, updated_at=at(MONDAY, "10:00"))

    daily_stats_close(day=MONDAY, now=at(MONDAY, "15:45"))

    stats = DailyStats.objects.get(strategy=manual)
    assert stats.charges == 0 and stats.order_to_trade_ratio is None and stats.net_pnl == 0


# --- the schedule's run: trading days, catch-up -------------------------------------------------


def _filled(strategy, instrument, *, side, quantity, price, when, realised="0"):
    """A fill recorded on a past day (as the update service would have, counters aside)."""
    order = Order.objects.create(
        strategy=strategy, instrument=instrument, exchange=instrument.exchange,
        tradingsymbol=instrument.tradingsymbol, instrument_token=instrument.instrument_token,
        transaction_type=side, quantity=quantity, product="MIS", order_type="MARKET", status=state.COMPLETE,
        filled_quantity=quantity, idempotency_key=f"past-{Order.objects.count()}", placed_at=when, updated_at=when,
    )  # fmt: skip
    Trade.objects.create(
        order=order, trade_id=f"P{Trade.objects.count()}", strategy=strategy, instrument=instrument,
        exchange=instrument.exchange, tradingsymbol=instrument.tradingsymbol,
        instrument_token=instrument.instrument_token, product="MIS", transaction_type=side, quantity=quantity,
        price=D(price), realised=D(realised), filled_at=when,
    )  # fmt: skip


def test_the_run_skips_weekends_and_closes_a_day_the_worker_missed(manual, reliance):
    friday, saturday, monday = MONDAY - timedelta(days=3), MONDAY - timedelta(days=2), MONDAY
    _filled(manual, reliance, side="BUY", quantity=10, price="100", when=at(friday, "10:00"))
    _filled(manual, reliance, side="SELL", quantity=10, price="101", when=at(friday, "11:00"), realised="10")
    DailyStats.objects.create(strategy=manual, day=friday, orders=2, trades=2, updated_at=at(friday, "11:00"))

    assert end_of_day_run(now=at(saturday, "15:45")) == {
        "skipped": "2026-05-30 is not a trading day (the market calendar: weekend or holiday)"
    }
    assert DailyStats.objects.get(day=friday).closed_at is None

    done = end_of_day_run(now=at(monday, "15:45"))

    assert done == {"2026-05-29": {"closed": 1, "unchanged": 0, "charges_failed": 0},
                    "2026-06-01": {"closed": 0, "unchanged": 0, "charges_failed": 0}}  # fmt: skip
    closed = DailyStats.objects.get(day=friday)
    assert closed.closed_at == at(monday, "15:45") and closed.realised == D("10") and closed.charges > 0
    # Closed and unchanged since: the next run leaves it alone.
    assert end_of_day_run(now=at(monday + timedelta(days=1), "15:45")) == {
        "2026-06-02": {"closed": 0, "unchanged": 0, "charges_failed": 0}
    }


def test_the_run_skips_a_holiday_closed_everywhere_but_not_one_with_a_session_somewhere(manual):
    assert end_of_day_run(now=at(date(2026, 1, 26), "15:45")) == {
        "skipped": "2026-01-26 is not a trading day (the market calendar: weekend or holiday)"
    }  # Republic Day
    assert not trading_day(date(2026, 3, 3), exchange="NSE") and trading_day(date(2026, 3, 3), exchange="MCX")
    assert "2026-03-03" in end_of_day_run(now=at(date(2026, 3, 3), "23:59"))  # Holi: MCX's evening session


def test_the_end_of_day_schedule_runs_the_task_as_the_cluster_would(manual, reliance, trader):
    schedule = Schedule.objects.get(name="oms: end of day")
    assert schedule.schedule_type == Schedule.DAILY and schedule.func == "oms.tasks.end_of_day_task"
    assert schedule.next_run.astimezone(IST).strftime("%H:%M") == "15:45"
    intraday_round_trip(reliance, trader)

    task = run_as_the_cluster_would("oms: end of day")

    assert task.success, task.result
    if not trading_day(today()):
        assert set(task.result) == {"skipped"}
    else:
        assert task.result[today().isoformat()]["closed"] == 1
        assert DailyStats.objects.get(strategy=manual).charges == D("136.94")


# --- GET /api/stats/daily/ ------------------------------------------------------------------


@pytest.fixture
def week(manual):
    """Closed days of two strategies."""
    other = Strategy.objects.create(name="momentum")
    for offset in range(3):
        day = MONDAY + timedelta(days=offset)
        for strategy, realised in ((manual, "100.5"), (other, "-20")):
            DailyStats.objects.create(
                strategy=strategy, day=day, orders=4, trades=2, turnover=D("1000"), realised=D(realised),
                charges=D("12.34"), charges_detail={"total": "12.34"}, closed_at=at(day, "15:45"),
                updated_at=at(day, "15:45"),
            )  # fmt: skip
    return other


def api_for(user):
    client = APIClient()
    client.force_authenticate(user)
    return client


def test_the_daily_stats_api_serves_decimals_as_strings_newest_first(trader, week, django_assert_num_queries):
    with django_assert_num_queries(3):  # the user's strategy tie, the count, the page
        response = api_for(trader).get("/api/stats/daily/")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["count"] == 6
    first = body["results"][0]
    assert [row["day"] for row in body["results"]] == ["2026-06-03"] * 2 + ["2026-06-02"] * 2 + [
        "2026-06-01"
    ] * 2
    assert first == {
        "strategy": "manual", "day": "2026-06-03", "orders": 4, "rejected": 0, "trades": 2,
        "turnover": "1000.0000", "realised": "100.5000", "unrealised": "0.0000", "pnl": "100.5000",
        "charges": "12.3400", "charges_detail": {"total": "12.34"}, "net_pnl": "88.1600",
        "order_to_trade_ratio": "2.00", "peak_pnl": "0.0000", "max_drawdown": "0.0000",
        "closed_at": "2026-06-03T15:45:00+05:30", "updated_at": "2026-06-03T15:45:00+05:30",
    }  # fmt: skip


def test_the_daily_stats_api_filters_by_strategy_and_days(trader, week):
    client = api_for(trader)
    rows = client.get("/api/stats/daily/", {"strategy": "momentum", "day_from": "2026-06-02"}).json()[
        "results"
    ]
    assert [(r["strategy"], r["day"]) for r in rows] == [
        ("momentum", "2026-06-03"),
        ("momentum", "2026-06-02"),
    ]
    rows = client.get("/api/stats/daily/", {"day_from": "2026-06-02", "day_to": "2026-06-02"}).json()[
        "results"
    ]
    assert {r["strategy"] for r in rows} == {"manual", "momentum"} and {r["day"] for r in rows} == {
        "2026-06-02"
    }


@pytest.mark.parametrize(
    ("query", "field", "message"),
    [
        ({"day_from": "June 1"}, "day_from", "'June 1' is not a date; use YYYY-MM-DD (IST)"),
        ({"day_to": "2026-13-01"}, "day_to", "is not a date"),
        ({"day_from": "2026-06-03", "day_to": "2026-06-01"}, "day_to", "2026-06-01 is before day_from 2026-06-03"),
        ({"strategy": "no spaces"}, "strategy", "a strategy's name"),
        ({"page": "9"}, "page", "Invalid page"),
    ],
)  # fmt: skip
def test_bad_filters_answer_400_with_the_reason(trader, week, query, field, message):
    response = api_for(trader).get("/api/stats/daily/", query)
    assert response.status_code == 400
    assert message in str(response.json()[field])


def test_a_tied_api_user_sees_only_its_strategys_days(trader, week):
    StrategyAccess.objects.create(user=trader, strategy=week)
    client = api_for(trader)
    rows = client.get("/api/stats/daily/").json()["results"]
    assert len(rows) == 3 and {r["strategy"] for r in rows} == {"momentum"}
    assert client.get("/api/stats/daily/", {"strategy": "manual"}).json()["count"] == 0


def test_the_daily_stats_api_needs_a_login(week):
    assert APIClient().get("/api/stats/daily/").status_code == 401


def test_a_strategy_without_activity_gets_no_row(manual):
    InstrumentFactory(is_active=True)
    assert daily_stats_close(day=MONDAY, now=at(MONDAY, "15:45")) == {
        "closed": 0, "unchanged": 0, "charges_failed": 0
    }  # fmt: skip
    assert not DailyStats.objects.exists()


def test_the_schema_documents_the_daily_stats_endpoint():
    from drf_spectacular.generators import SchemaGenerator

    schema = SchemaGenerator().get_schema(request=None, public=True)
    operation = schema["paths"]["/api/stats/daily/"]["get"]
    assert {"strategy", "day_from", "day_to", "page", "page_size"} <= {
        p["name"] for p in operation["parameters"]
    }
    row = schema["components"]["schemas"]["DailyStats"]["properties"]
    assert (
        row["charges"]["type"] == "string"
        and row["charges"]["format"] == "decimal"
        and row["charges"]["nullable"]
    )
    assert (
        row["net_pnl"]["nullable"]
        and row["closed_at"]["nullable"]
        and row["order_to_trade_ratio"]["nullable"]
    )
