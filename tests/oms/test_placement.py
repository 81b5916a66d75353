"""Placing orders on the paper broker: fills, positions, P&L, cancel and modify."""

from decimal import Decimal as D

import pytest

from oms import state
from oms.brokers.paper import paper_match
from oms.models import DailyStats, Order, OrderEvent, Position, Trade
from oms.services import order_cancel, order_modify
from tests.oms.helpers import place, price

pytestmark = pytest.mark.django_db


def test_a_market_buy_fills_at_the_ask_and_opens_a_position(reliance, trader):
    price(reliance.instrument_token, "2500.00", bid="2499.95", ask="2500.05")
    result = place(reliance, user=trader, quantity=10)
    order = result.order
    assert result.created and result.refusal is None
    assert order.status == state.COMPLETE and order.filled_quantity == 10 and order.pending_quantity == 0
    assert order.average_price == D("2500.05") and order.broker_order_id
    trade = Trade.objects.get(order=order)
    assert trade.quantity == 10 and trade.price == D("2500.05") and trade.trade_id.isdigit()
    position = Position.objects.get(strategy__name="manual", instrument=reliance)
    assert position.quantity == 10 and position.average_price == D("2500.05")
    kinds = list(order.events.values_list("kind", flat=True))
    assert kinds[0] == OrderEvent.Kind.PLACED and OrderEvent.Kind.FILL in kinds


def test_buy_then_sell_realises_pnl_and_leaves_a_flat_position(reliance, trader):
    price(reliance.instrument_token, "100.00")
    place(reliance, user=trader, quantity=10)
    price(reliance.instrument_token, "104.50")
    place(reliance, user=trader, quantity=10, transaction_type="SELL")
    position = Position.objects.get(instrument=reliance)
    assert position.quantity == 0 and position.realised == D("45.00") and position.unrealised == 0
    stats = DailyStats.objects.get(strategy__name="manual")
    assert stats.trades == 2 and stats.realised == D("45.00") and stats.orders == 2


def test_a_limit_rests_and_fills_at_its_price_when_the_market_crosses(reliance, trader):
    price(reliance.instrument_token, "100.00")
    order = place(reliance, user=trader, order_type="LIMIT", price="99.50").order
    assert order.status == state.OPEN and order.pending_quantity == 10
    assert paper_match({reliance.instrument_token: {"last_price": "99.80"}}) == 0
    assert paper_match({reliance.instrument_token: {"last_price": "99.40"}}) == 1
    order.refresh_from_db()
    assert order.status == state.COMPLETE and order.average_price == D("99.50")
    # The same tick again changes nothing: the order is done.
    assert paper_match({reliance.instrument_token: {"last_price": "99.40"}}) == 0
    assert Trade.objects.filter(order=order).count() == 1


def test_a_stop_waits_for_its_trigger_then_fills(reliance, trader):
    price(reliance.instrument_token, "100.00")
    order = place(reliance, user=trader, order_type="SL-M", trigger_price="101.00", quantity=5).order
    assert order.status == state.TRIGGER_PENDING
    paper_match({reliance.instrument_token: {"last_price": "100.50"}})
    order.refresh_from_db()
    assert order.status == state.TRIGGER_PENDING
    paper_match({reliance.instrument_token: {"last_price": "101.05"}})
    order.refresh_from_db()
    assert order.status == state.COMPLETE and order.average_price == D("101.05")


def test_cancel_and_modify_work_on_resting_orders(reliance, trader):
    price(reliance.instrument_token, "100.00")
    order = place(reliance, user=trader, order_type="LIMIT", price="95.00").order
    modified = order_modify(order_id=order.pk, user=trader, price=D("96.00"), quantity=20)
    assert modified.price == D("96.00") and modified.quantity == 20 and modified.pending_quantity == 20
    cancelled = order_cancel(order_id=order.pk, user=trader)
    assert cancelled.status == state.CANCELLED and cancelled.cancelled_quantity == 20
    assert paper_match({reliance.instrument_token: {"last_price": "90"}}) == 0  # nothing rests any more
    assert not Trade.objects.exists()


def test_a_modify_that_crosses_the_market_fills(reliance, trader):
    price(reliance.instrument_token, "100.00")
    order = place(reliance, user=trader, order_type="LIMIT", price="95.00").order
    modified = order_modify(order_id=order.pk, user=trader, price=D("100.50"))
    # A modified order meets the market anew: marketable, it trades at the market (100, no depth).
    assert modified.status == state.COMPLETE and modified.average_price == D("100.00")


def test_an_ioc_limit_that_cannot_fill_is_cancelled(reliance, trader):
    price(reliance.instrument_token, "100.00")
    order = place(reliance, user=trader, order_type="LIMIT", price="95.00", validity="IOC").order
    assert order.status == state.CANCELLED and order.cancelled_quantity == 10


def test_cover_orders_are_refused_by_the_paper_broker(reliance, trader):
    price(reliance.instrument_token, "100.00")
    order = place(reliance, user=trader, variety="co", order_type="LIMIT", price="100.00",
                  trigger_price="98.00").order  # fmt: skip
    assert order.status == state.REJECTED and "not simulated" in order.status_message


def test_orders_placed_without_prices_rest_until_prices_move(reliance, trader):
    order = place(reliance, user=trader, order_type="LIMIT", price="100.00").order
    assert order.status == state.OPEN
    paper_match({reliance.instrument_token: {"last_price": "99.00"}})
    order.refresh_from_db()
    assert order.status == state.COMPLETE


def test_a_fill_never_takes_an_order_past_its_quantity(reliance, trader):
    price(reliance.instrument_token, "100.00")
    order = place(reliance, user=trader).order
    assert Order.objects.get(pk=order.pk).filled_quantity == 10
    assert Position.objects.get(instrument=reliance).quantity == 10


@pytest.mark.parametrize("kind", ["LIMIT", "MARKET"])
def test_a_placement_costs_the_same_whatever_the_book(reliance, trader, kind, settings):
    """A fixed number of queries per placement (the risk book is one query), however many
    orders and positions the strategy has: the hot path of every order."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from tests.factories import InstrumentFactory

    settings.OMS_ORDERS_PER_SECOND = 10_000  # the test places orders faster than a desk may
    price(reliance.instrument_token, "100.00", bid="99.95", ask="100.05")
    fields = {"order_type": kind, "price": "99.00" if kind == "LIMIT" else None}
    fields = {k: v for k, v in fields.items() if v is not None}
    place(reliance, user=trader, **fields)
    with CaptureQueriesContext(connection) as few:
        assert place(reliance, user=trader, **fields).refusal is None
    for _ in range(5):
        other = InstrumentFactory(is_active=True)
        price(other.instrument_token, "50.00")
        place(other, user=trader)
        place(other, user=trader, order_type="LIMIT", price="49.00")
    with CaptureQueriesContext(connection) as many:
        assert place(reliance, user=trader, **fields).refusal is None
    assert len(many.captured_queries) == len(few.captured_queries)
    budget = 11 if kind == "LIMIT" else 16  # counted with the test's savepoints
    assert len(few.captured_queries) <= budget, [q["sql"][:80] for q in few.captured_queries]
