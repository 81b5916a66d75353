"""Modify and cancel: a change is checked like a new order, and never lands on a finished one."""

from decimal import Decimal as D

import pytest

from oms import state
from oms.brokers.paper import paper_match
from oms.models import Order, OrderEvent, Trade
from oms.services import OrderError, order_modify
from oms.updates import OrderUpdate, order_update
from tests.oms.helpers import place, price

pytestmark = pytest.mark.django_db


@pytest.fixture
def live(reliance):
    price(reliance.instrument_token, "100.00")
    return reliance


def test_a_sell_limit_cannot_be_modified_to_price_zero(live, trader):
    order = place(live, user=trader, transaction_type="SELL", order_type="LIMIT", price="105.00").order
    assert order.status == state.OPEN
    with pytest.raises(OrderError, match="price"):
        order_modify(order_id=order.pk, user=trader, price=D(0))
    order.refresh_from_db()
    assert order.price == D("105.00") and order.status == state.OPEN
    assert not Trade.objects.exists()  # sold at 0.00 before the fix


def test_a_stop_cannot_lose_its_trigger(live, trader):
    order = place(live, user=trader, order_type="SL-M", trigger_price="101.00").order
    with pytest.raises(OrderError, match="trigger_price"):
        order_modify(order_id=order.pk, user=trader, trigger_price=D(0))
    order.refresh_from_db()
    assert order.trigger_price == D("101.00") and order.status == state.TRIGGER_PENDING
    assert not Trade.objects.exists()


def test_a_modification_never_lands_on_a_finished_order(live, trader):
    """The matcher fills the order between the user's read and the broker's answer."""
    order = place(live, user=trader, order_type="LIMIT", price="99.50").order
    paper_match({live.instrument_token: {"last_price": "99.00"}})
    late = order_update(order_id=order.pk, update=OrderUpdate(quantity=20, price=D("99.00")), source="api")
    order.refresh_from_db()
    assert order.status == state.COMPLETE and order.quantity == 10 and order.price == D("99.50")
    assert late.kinds == [OrderEvent.Kind.MODIFY_REFUSED]


def test_a_filled_order_cannot_be_modified_or_cancelled(live, trader):
    from oms.services import order_cancel

    order = place(live, user=trader).order
    with pytest.raises(OrderError, match="COMPLETE"):
        order_modify(order_id=order.pk, user=trader, quantity=20)
    with pytest.raises(OrderError, match="COMPLETE"):
        order_cancel(order_id=order.pk, user=trader)


def test_a_modified_quantity_counts_against_the_position_limit_but_not_twice(live, trader, manual):
    manual.max_position_quantity = 30
    manual.save()
    order = place(live, user=trader, order_type="LIMIT", price="95.00", quantity=20).order
    assert (
        order_modify(order_id=order.pk, user=trader, quantity=30).quantity == 30
    )  # itself not counted twice
    with pytest.raises(OrderError, match="max_position"):
        order_modify(order_id=order.pk, user=trader, quantity=31)
    assert Order.objects.get(pk=order.pk).quantity == 30


def test_a_modify_to_a_quantity_not_above_the_filled_is_refused(live, trader):
    order = place(live, user=trader, order_type="LIMIT", price="95.00", quantity=20).order
    with pytest.raises(OrderError, match="quantity"):
        order_modify(order_id=order.pk, user=trader, quantity=0)


def test_a_modify_that_crosses_fills_at_the_market_not_at_its_limit(reliance, trader):
    price(reliance.instrument_token, "100.00", bid="99.95", ask="100.05")
    order = place(reliance, user=trader, order_type="LIMIT", price="95.00").order
    modified = order_modify(order_id=order.pk, user=trader, price=D("101.00"))
    # A modified order is a new arrival at the exchange: marketable, it takes the ask.
    assert modified.status == state.COMPLETE and modified.average_price == D("100.05")
