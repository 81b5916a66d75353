"""Kite reuses an expired contract's instrument_token for a new one: the prices under that
token are then the new contract's. A position or an order in the old contract is never
priced, filled or squared off with the new one's prices, or traded in its place."""

from decimal import Decimal as D

import pytest

from oms import state
from oms.brokers.paper import paper_match
from oms.killswitch import kill_switch_set
from oms.models import Order, Position
from oms.monitor import risk_monitor_run
from tests.factories import InstrumentFactory
from tests.oms.helpers import place, price

pytestmark = pytest.mark.django_db


@pytest.fixture
def old_and_new(trader):
    old = InstrumentFactory(tradingsymbol="OLDFUT", instrument_token=5_000_001, is_active=True)
    price(old.instrument_token, "100.00")
    place(old, user=trader, quantity=10)
    resting = place(old, user=trader, order_type="LIMIT", price="95.00", quantity=5).order
    # The next dump no longer has it (a delisted contract never streams); its token names another now.
    old.is_listed, old.is_active = False, False
    old.save(update_fields=["is_listed", "is_active"])
    new = InstrumentFactory(tradingsymbol="NEWFUT", instrument_token=old.instrument_token, is_active=True)
    price(new.instrument_token, "2000.00")  # the new contract's price, under the same token
    return old, new, resting


def test_the_old_contracts_position_is_not_marked_with_the_new_ones_price(old_and_new):
    old, _new, _ = old_and_new
    risk_monitor_run()
    position = Position.objects.get(instrument=old)
    assert position.last_price == D("100.00") and position.unrealised == 0


def test_the_old_contracts_orders_never_fill_at_the_new_ones_prices(old_and_new):
    old, new, resting = old_and_new
    paper_match({new.instrument_token: {"last_price": "90.00"}})
    resting.refresh_from_db()
    assert resting.filled_quantity == 0
    risk_monitor_run()
    resting.refresh_from_db()
    assert resting.status == state.CANCELLED and "no longer listed" in resting.status_message


def test_a_square_off_never_trades_the_new_contract(old_and_new, trader):
    old, new, _ = old_and_new
    kill_switch_set(state="HALTED", by=trader, reason="flatten", square_off=True)
    assert not Order.objects.filter(instrument=new).exists()
    square_off = Order.objects.get(source="kill_switch")
    assert square_off.instrument == old and square_off.status == state.RISK_REJECTED  # delisted: cannot trade
