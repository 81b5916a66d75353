"""Paper orders always end: a DAY order with its trading day, a TTL order on time (prices or
not), and one left behind in PUT ORDER REQ RECEIVED is sent or can be cancelled."""

from datetime import timedelta
from decimal import Decimal as D

import pytest
from django.utils import timezone

from oms import state
from oms.brokers.paper import paper_match
from oms.models import Order
from oms.monitor import risk_monitor_run
from oms.services import order_cancel
from tests.oms.helpers import place, price

pytestmark = pytest.mark.django_db


def _age(order, **delta):
    """Move an order back in time, as if placed earlier (and met the market then)."""
    earlier = {
        "placed_at": order.placed_at - timedelta(**delta),
        "paper_rested_at": order.paper_rested_at - timedelta(**delta) if order.paper_rested_at else None,
    }
    Order.objects.filter(pk=order.pk).update(**earlier)


def test_a_day_order_ends_with_the_trading_day_it_met_the_market(reliance, trader):
    price(reliance.instrument_token, "100.00")
    order = place(reliance, user=trader, order_type="LIMIT", price="95.00").order
    today = place(reliance, user=trader, order_type="LIMIT", price="94.00").order
    _age(order, days=1)
    risk_monitor_run()
    order.refresh_from_db()
    today.refresh_from_db()
    assert (
        order.status == state.CANCELLED and "DAY" in order.status_message and order.cancelled_quantity == 10
    )
    assert today.status == state.OPEN


def test_an_order_placed_outside_market_hours_waits_for_prices(reliance, trader):
    order = place(reliance, user=trader, order_type="LIMIT", price="95.00").order
    _age(order, days=1)  # placed last night, no price since
    risk_monitor_run()
    order.refresh_from_db()
    assert order.status == state.OPEN
    paper_match({reliance.instrument_token: {"last_price": "94.00"}})
    order.refresh_from_db()
    assert order.status == state.COMPLETE


def test_a_ttl_order_expires_on_time_without_any_price(reliance, trader):
    order = place(
        reliance, user=trader, order_type="LIMIT", price="95.00", validity="TTL", validity_ttl=1
    ).order
    assert order.status == state.OPEN
    _age(order, minutes=2)
    risk_monitor_run()
    order.refresh_from_db()
    assert order.status == state.CANCELLED and "TTL" in order.status_message


def _left_behind(strategy, instrument, **fields):
    """A paper order committed but never handed to the broker (a crash in between)."""
    now = timezone.now() - timedelta(minutes=1)
    values = {
        "transaction_type": "BUY",
        "quantity": 5,
        "product": "MIS",
        "order_type": "LIMIT",
        "price": D("95"),
    }
    values.update(fields)
    return Order.objects.create(
        strategy=strategy, instrument=instrument, exchange=instrument.exchange, tradingsymbol=instrument.tradingsymbol,
        instrument_token=instrument.instrument_token, idempotency_key=f"left-{now.timestamp()}-{values['price']}",
        pending_quantity=values["quantity"], placed_at=now, updated_at=now, **values,
    )  # fmt: skip


def test_an_order_left_in_put_order_req_received_can_be_cancelled(manual, reliance, trader):
    order = _left_behind(manual, reliance)
    cancelled = order_cancel(order_id=order.pk, user=trader)
    assert cancelled.status == state.CANCELLED
    risk_monitor_run()  # and is never sent afterwards
    order.refresh_from_db()
    assert order.status == state.CANCELLED and not order.trades.exists()


def test_an_order_left_in_put_order_req_received_is_sent(manual, reliance):
    price(reliance.instrument_token, "100.00")
    resting = _left_behind(manual, reliance)
    filling = _left_behind(manual, reliance, price=D("101"))
    risk_monitor_run()
    resting.refresh_from_db()
    filling.refresh_from_db()
    assert resting.status == state.OPEN and resting.broker_order_id
    assert filling.status == state.COMPLETE and filling.average_price == D("100.00")
