"""MIS square-off at a frozen clock: open MIS positions are flattened by market orders through
the normal path when their exchange is due (equity and F&O at MIS_SQUARE_OFF_AT, currency at
its own time), working MIS entries are cancelled, and what cannot be squared off is alerted."""

from datetime import date, datetime, time, timedelta
from decimal import Decimal as D
from zoneinfo import ZoneInfo

import pytest
from django.core.cache import cache
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings
from django.utils import timezone
from django_q.models import Schedule

from alerts.models import Alert, Kind
from ingestion.latest import latest_discard
from oms import state
from oms.endofday import mis_square_off
from oms.killswitch import kill_switch_set
from oms.models import Order, OrderEvent, Position
from oms.risk.rate import RATE_KEY
from tests.factories import InstrumentFactory
from tests.helpers import child_env, manage
from tests.oms.helpers import place, price
from tradingportal.schedules import schedules_register

pytest_plugins = ["tests.oms.live_fixtures"]  # kite, live, infy
pytestmark = pytest.mark.django_db
IST = ZoneInfo("Asia/Kolkata")
MONDAY = date(2026, 6, 1)


def at(clock: str, day: date = MONDAY) -> datetime:
    return datetime.combine(day, time.fromisoformat(clock), tzinfo=IST)


@pytest.fixture
def usdinr(db):
    return InstrumentFactory(tradingsymbol="USDINR26JUNFUT", name="USDINR", exchange="CDS", segment="CDS-FUT",
                             instrument_type="FUT", tick_size="0.0025", lot_size=1, is_active=True)  # fmt: skip


def quantity(instrument, product="MIS") -> int:
    return Position.objects.get(instrument=instrument, product=product).quantity


def test_at_the_cut_off_mis_positions_are_squared_off_and_the_rest_kept(reliance, usdinr, trader):
    tcs = InstrumentFactory(tradingsymbol="TCS", is_active=True)
    price(reliance.instrument_token, "2500.00")
    price(usdinr.instrument_token, "83.5000")
    price(tcs.instrument_token, "3500.00")
    place(reliance, user=trader, quantity=10)
    place(reliance, user=trader, quantity=3, product="CNC")
    place(usdinr, user=trader, quantity=5, transaction_type="SELL")
    stop = place(reliance, user=trader, quantity=10, transaction_type="SELL", order_type="SL-M",
                 trigger_price="2450.00").order  # fmt: skip
    entry = place(tcs, user=trader, quantity=4, order_type="LIMIT", price="3400.00").order
    currency_entry = place(usdinr, user=trader, quantity=1, order_type="LIMIT", price="83.0000").order
    assert {stop.status, entry.status, currency_entry.status} <= {state.OPEN, state.TRIGGER_PENDING}

    assert mis_square_off(now=at("15:14")) == {"cancelled": 0, "cancel_failed": 0, "placed": 0, "already_flat": 0,
                                               "working": 0, "failed": [], "left_to_broker": []}  # fmt: skip
    assert quantity(reliance) == 10  # not yet due

    done = mis_square_off(now=at("15:15"))

    assert done["placed"] == 1 and done["cancelled"] == 1 and done["failed"] == []
    assert quantity(reliance) == 0
    assert quantity(reliance, "CNC") == 3  # delivery stays
    assert quantity(usdinr) == -5  # currency waits for its own time (16:30)
    for order in (stop, entry, currency_entry):
        order.refresh_from_db()
    assert entry.status == state.CANCELLED and "MIS square-off at 15:15" in entry.status_message
    assert stop.status == state.CANCELLED  # cancelled by the position's square-off, just before it
    assert currency_entry.status == state.OPEN
    order = Order.objects.get(source="mis_square_off", order_type="MARKET")
    assert (order.transaction_type, order.quantity, order.product, order.status) == (
        "SELL",
        10,
        "MIS",
        state.COMPLETE,
    )
    placed = order.events.get(kind=OrderEvent.Kind.PLACED)
    assert placed.actor == "mis_square_off"

    later = mis_square_off(now=at("16:30"))

    assert later["placed"] == 1 and quantity(usdinr) == 0
    currency_entry.refresh_from_db()
    assert currency_entry.status == state.CANCELLED  # the position's own order: cancelled by its square-off
    buy_back = Order.objects.get(source="mis_square_off", instrument=usdinr)
    assert (buy_back.transaction_type, buy_back.quantity) == ("BUY", 5)
    assert not Alert.objects.exists()


def test_a_second_pass_places_nothing_more(reliance, trader):
    price(reliance.instrument_token, "2500.00")
    place(reliance, user=trader, quantity=10)
    mis_square_off(now=at("15:15"))

    again = mis_square_off(now=at("15:16"))

    assert again["placed"] == 0 and again["failed"] == []
    assert Order.objects.filter(source="mis_square_off").count() == 1


def test_weekends_are_not_trading_days(reliance, trader):
    price(reliance.instrument_token, "2500.00")
    place(reliance, user=trader, quantity=10)
    saturday = MONDAY - timedelta(days=2)
    assert mis_square_off(now=at("15:15", saturday)) == {
        "skipped": "2026-05-30 is not a trading day (the market calendar: weekend or holiday)"
    }
    assert quantity(reliance) == 10


def test_holidays_are_not_trading_days(reliance, trader):
    price(reliance.instrument_token, "2500.00")
    place(reliance, user=trader, quantity=10)
    christmas = date(2026, 12, 25)  # a Friday: every exchange closed (the seeded calendar)
    assert mis_square_off(now=at("15:15", christmas)) == {
        "skipped": "2026-12-25 is not a trading day (the market calendar: weekend or holiday)"
    }
    assert quantity(reliance) == 10


def test_on_an_nse_holiday_only_the_exchanges_that_trade_are_squared_off(reliance, trader):
    crude = InstrumentFactory(tradingsymbol="CRUDEOIL26MARFUT", name="CRUDEOIL", exchange="MCX", segment="MCX-FUT",
                              instrument_type="FUT", tick_size="1", lot_size=1, is_active=True)  # fmt: skip
    price(reliance.instrument_token, "2500.00")
    price(crude.instrument_token, "6000")
    place(reliance, user=trader, quantity=10)
    place(crude, user=trader, quantity=2)
    holi = date(2026, 3, 3)  # NSE closed; MCX trades its evening session

    done = mis_square_off(now=at("22:50", holi))

    assert done["placed"] == 1 and done["failed"] == []
    assert quantity(crude) == 0 and quantity(reliance) == 10


def test_the_kill_switch_does_not_stop_the_square_off(reliance, trader):
    price(reliance.instrument_token, "2500.00")
    place(reliance, user=trader, quantity=10)
    kill_switch_set(state="HALTED", by=trader, reason="desk halted for the day")

    assert mis_square_off(now=at("15:15"))["placed"] == 1
    assert quantity(reliance) == 0


@override_settings(MIS_SQUARE_OFF_RETRY_SECONDS=0)
def test_a_position_that_cannot_be_squared_off_is_alerted(
    reliance, trader, django_capture_on_commit_callbacks
):
    price(reliance.instrument_token, "2500.00")
    position_order = place(reliance, user=trader, quantity=10).order
    latest_discard([reliance.instrument_token])  # the feed lost the price: a MARKET order is refused

    with django_capture_on_commit_callbacks(execute=True):
        done = mis_square_off(now=at("15:15"))

    position = Position.objects.get(instrument=reliance)
    assert done["failed"] == [position.pk] and position.quantity == 10
    refused = Order.objects.get(source="mis_square_off")
    assert refused.status == state.RISK_REJECTED and refused.risk_rule == "no_live_price"
    alert = Alert.objects.get(kind=Kind.SQUARE_OFF)
    assert "10 MIS NSE:RELIANCE" in alert.subject and "manual" in alert.subject
    assert "MIS square-off" in alert.body and "no_live_price" in alert.body
    assert position_order.pk != refused.pk


def test_the_order_rate_delays_square_offs_but_never_drops_them(trader):
    stocks = [InstrumentFactory(is_active=True) for _ in range(5)]
    for stock in stocks:
        price(stock.instrument_token, "50.00")
        place(stock, user=trader, quantity=4)

    # Other orders have used up this second's and the next second's rate already.
    second = int(timezone.now().timestamp())
    for busy in (second, second + 1):
        cache.set(RATE_KEY.format(busy), 2, timeout=5)

    with override_settings(OMS_ORDERS_PER_SECOND=2, MIS_SQUARE_OFF_RETRY_SECONDS=30):
        done = mis_square_off(now=at("15:15"))

    assert done["placed"] == 5 and done["failed"] == []
    assert not Position.objects.exclude(quantity=0).exists()
    refused = Order.objects.filter(source="mis_square_off", status=state.RISK_REJECTED)
    assert refused.exists() and set(refused.values_list("risk_rule", flat=True)) == {"rate_limit"}
    # At most one refusal per second (the rest wait with it), never one per position waiting.
    seconds = [int(order.placed_at.timestamp()) for order in refused]
    assert len(seconds) == len(set(seconds))
    assert not Alert.objects.filter(kind=Kind.SQUARE_OFF).exists()


def live_position(live, infy, quantity=10):
    price(infy.instrument_token, "1500.05")
    return Position.objects.create(
        strategy=live, instrument=infy, exchange="NSE", tradingsymbol="INFY", instrument_token=infy.instrument_token,
        product="MIS", quantity=quantity, average_price=D("1490"), open_cost=D("1490") * quantity,
        updated_at=timezone.now(),
    )  # fmt: skip


def test_a_live_position_after_the_brokers_own_square_off_is_alerted_not_traded(live, infy,
                                                                                 django_capture_on_commit_callbacks):  # fmt: skip
    position = live_position(live, infy)

    with django_capture_on_commit_callbacks(execute=True):
        done = mis_square_off(now=at("15:21"))  # Zerodha's own ran at 15:20

    assert done["left_to_broker"] == [position.pk] and done["placed"] == 0
    assert not Order.objects.exists()
    alert = Alert.objects.get(kind=Kind.SQUARE_OFF)
    assert "broker's own square-off time (15:20 IST)" in alert.body


@pytest.mark.django_db(transaction=True)  # a LIVE order is sent after its placement commits
def test_a_live_position_is_squared_off_at_kite_once(kite, live, infy):
    live_position(live, infy)

    done = mis_square_off(now=at("15:15"))

    assert done["placed"] == 1 and done["failed"] == []
    [call] = kite.placements()
    order = Order.objects.get(source="mis_square_off")
    assert call.form["transaction_type"] == "SELL" and call.form["quantity"] == "10"
    assert call.form["order_type"] == "MARKET" and call.form["product"] == "MIS"
    assert call.form["tag"] == f"TP{order.pk}" and order.broker == "kite"
    # Kite has it and has not filled it yet: the next pass leaves it working, sends nothing more.
    assert mis_square_off(now=at("15:16"))["working"] == 1
    assert len(kite.placements()) == 1


@pytest.mark.django_db(transaction=True)
@override_settings(MIS_SQUARE_OFF_RETRY_SECONDS=30)
def test_a_square_off_kite_rejects_is_alerted_and_not_sent_again(kite, live, infy):
    position = live_position(live, infy)
    kite.fail_next("margin", method="POST")

    done = mis_square_off(now=at("15:15"))

    assert done["failed"] == [position.pk] and len(kite.placements()) == 1
    assert Order.objects.get(source="mis_square_off").status == state.REJECTED
    alert = Alert.objects.get(kind=Kind.SQUARE_OFF)
    assert "rejected by kite" in alert.body and "Insufficient funds" in alert.body


# --- schedules and settings ------------------------------------------------------------------


def test_a_daily_schedule_at_each_square_off_time():
    for name, clock in (("oms: MIS square-off 15:15", "15:15"), ("oms: MIS square-off 16:30", "16:30"),
                        ("oms: MIS square-off 22:50", "22:50")):  # fmt: skip
        schedule = Schedule.objects.get(name=name)
        assert schedule.schedule_type == Schedule.DAILY and schedule.func == "oms.tasks.mis_square_off_task"
        assert schedule.next_run.astimezone(IST).strftime("%H:%M") == clock
    with override_settings(MIS_SQUARE_OFF_AT="15:10", MIS_SQUARE_OFF_TIMES={"CDS": "16:30"}):
        outcome = schedules_register()
    assert outcome["oms: MIS square-off 15:10"] == "created"
    assert "oms: MIS square-off 22:50" not in outcome  # MCX now squares off with the rest, at 15:10


@pytest.mark.parametrize(
    ("variables", "message"),
    [
        ({"MIS_SQUARE_OFF_AT": "15:20"}, "The MIS square-off of NSE at 15:20 is not before the broker's own at 15:20"),
        ({"MIS_SQUARE_OFF_TIMES": "CDS=16:50"}, "The MIS square-off of CDS at 16:50 is not before the broker's"),
        ({"MIS_SQUARE_OFF_AT": "3:15pm"}, "MIS_SQUARE_OFF_AT='3:15pm' is not a time of day; use HH:MM"),
        ({"MIS_SQUARE_OFF_TIMES": "CDS"}, "MIS_SQUARE_OFF_TIMES (CDS)='' is not a time of day"),
        ({"EOD_STATS_AT": "25:00"}, "EOD_STATS_AT='25:00' is not a time of day"),
    ],
)  # fmt: skip
def test_start_up_refuses_a_square_off_after_the_brokers(variables, message):
    result = manage("check", env=child_env(**variables))
    assert result.returncode != 0 and message in result.stderr
    assert ImproperlyConfigured.__name__ in result.stderr


@pytest.mark.django_db(transaction=True)
@override_settings(MIS_SQUARE_OFF_RETRY_SECONDS=30)
def test_a_square_off_kite_rejects_after_its_stop_was_cancelled_says_the_position_has_no_stop(
    kite, live, infy
):
    from oms.risk import OrderRequest
    from oms.services import order_place

    position = live_position(live, infy)
    stop = order_place(request=OrderRequest(transaction_type="SELL", quantity=10, product="MIS", order_type="SL-M",
                                            trigger_price=D("1450.00")),
                       user=None, idempotency_key="live-stop", strategy_name=live.name, instrument=infy).order  # fmt: skip
    stop.refresh_from_db()
    assert stop.broker_order_id  # working at Kite (TRIGGER PENDING there)
    kite.fail_next("margin", method="POST")

    done = mis_square_off(now=at("15:15"))

    assert done["failed"] == [position.pk]
    stop.refresh_from_db()
    assert stop.status in (state.CANCEL_PENDING, state.CANCELLED)
    rejected = Order.objects.get(source="mis_square_off", transaction_type="SELL", order_type="MARKET")
    assert rejected.status == state.REJECTED
    note = rejected.events.get(kind=OrderEvent.Kind.WARNING)
    assert f"#{stop.pk}" in note.message and "no stop" in note.message
    alert = Alert.objects.get(kind=Kind.SQUARE_OFF)
    assert "Insufficient funds" in alert.body and "no stop" in alert.body
