"""Orders still working count towards the limits: many small resting orders cannot add up
to what one order may not do, and reducing mode cannot be used to flip a position."""

import pytest

from oms.killswitch import kill_switch_set
from oms.services import order_cancel
from tests.factories import InstrumentFactory
from tests.oms.helpers import place, price
from tests.oms.test_risk import accepted, refused

pytestmark = pytest.mark.django_db


@pytest.fixture
def live(reliance):
    price(reliance.instrument_token, "100.00")
    return reliance


def test_resting_orders_count_towards_the_position_limit(live, trader, manual):
    manual.max_position_quantity = 30
    manual.save()
    first = accepted(place(live, user=trader, order_type="LIMIT", price="95", quantity=20))
    assert "would be 40" in refused(place(live, user=trader, order_type="LIMIT", price="95", quantity=20),
                                    "max_position")  # fmt: skip
    accepted(place(live, user=trader, order_type="LIMIT", price="95", quantity=10))
    # Orders on the other side do not offset the worst case: both may fill.
    refused(place(live, user=trader, order_type="LIMIT", price="94", quantity=1), "max_position")
    order_cancel(order_id=first.pk, user=trader)
    accepted(place(live, user=trader, order_type="LIMIT", price="95", quantity=20))


def test_resting_sells_count_towards_a_short_limit(live, trader, manual):
    manual.max_position_quantity = 30
    manual.save()
    accepted(place(live, user=trader, order_type="LIMIT", price="105", quantity=25, transaction_type="SELL"))
    refused(place(live, user=trader, order_type="LIMIT", price="105", quantity=10, transaction_type="SELL"),
            "max_position")  # fmt: skip


def test_resting_orders_in_other_instruments_count_as_open_positions(live, trader, manual):
    manual.max_open_positions = 1
    manual.save()
    accepted(place(live, user=trader, order_type="LIMIT", price="95", quantity=5))
    other = InstrumentFactory(is_active=True)
    price(other.instrument_token, "50")
    refused(place(other, user=trader, order_type="LIMIT", price="49", quantity=1), "max_open_positions")
    accepted(
        place(live, user=trader, order_type="LIMIT", price="94", quantity=5)
    )  # the same instrument is fine


def test_reducing_mode_counts_the_reducing_orders_already_working(live, trader):
    accepted(place(live, user=trader, quantity=10))
    kill_switch_set(state="REDUCING", by=trader, reason="flatten only")
    accepted(place(live, user=trader, order_type="LIMIT", price="105", quantity=10, transaction_type="SELL"))
    # Long 10 with a sell of 10 working: another sell of 10 would leave the desk short.
    refused(place(live, user=trader, order_type="LIMIT", price="106", quantity=10, transaction_type="SELL"),
            "kill_switch")  # fmt: skip


def test_reducing_means_the_position_of_the_same_product(live, trader):
    accepted(place(live, user=trader, quantity=10, product="CNC"))
    kill_switch_set(state="REDUCING", by=trader, reason="flatten only")
    # Selling MIS against a CNC holding opens a MIS short (Kite keeps them apart).
    refused(place(live, user=trader, quantity=10, transaction_type="SELL", product="MIS"), "kill_switch")
    accepted(place(live, user=trader, quantity=10, transaction_type="SELL", product="CNC"))
