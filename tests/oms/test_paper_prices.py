"""What a paper fill costs: a resting order the market comes to fills at its own limit; an
order meeting the market for the first time (placed without a price, an AMO at the open, a
triggered stop) trades as a marketable order would, at the market, never worse than its limit."""

from decimal import Decimal as D

import pytest

from oms import state
from oms.brokers.paper import paper_match
from oms.models import Position
from tests.oms.helpers import place, price

pytestmark = pytest.mark.django_db


def test_an_order_placed_without_a_price_fills_at_the_first_price_it_meets(reliance, trader):
    order = place(reliance, user=trader, order_type="LIMIT", price="150.00", quantity=3).order
    assert order.status == state.OPEN
    paper_match({reliance.instrument_token: {"last_price": "100.00", "bid": "99.95", "ask": "100.05"}})
    order.refresh_from_db()
    assert order.status == state.COMPLETE and order.average_price == D("100.05")  # not 150
    assert Position.objects.get(instrument=reliance).average_price == D("100.05")


def test_an_amo_fills_at_the_opening_price_when_it_is_better_than_its_limit(reliance, trader):
    order = place(reliance, user=trader, variety="amo", order_type="LIMIT", price="105.00", quantity=2).order
    assert order.status == state.AMO_REQ_RECEIVED
    paper_match({reliance.instrument_token: {"last_price": "101.00"}})
    order.refresh_from_db()
    assert order.status == state.COMPLETE and order.average_price == D("101.00")


def test_an_order_resting_in_the_book_fills_at_its_limit_when_the_market_gaps_through(reliance, trader):
    price(reliance.instrument_token, "100.00")
    order = place(reliance, user=trader, order_type="LIMIT", price="99.50").order
    assert order.status == state.OPEN and order.paper_rested_at is not None
    paper_match({reliance.instrument_token: {"last_price": "98.00"}})
    order.refresh_from_db()
    assert order.status == state.COMPLETE and order.average_price == D("99.50")


def test_an_order_first_met_without_crossing_then_rests_at_its_limit(reliance, trader):
    order = place(reliance, user=trader, order_type="LIMIT", price="99.50").order
    paper_match({reliance.instrument_token: {"last_price": "100.00"}})  # met the market: it rests now
    order.refresh_from_db()
    assert order.status == state.OPEN and order.paper_rested_at is not None
    paper_match({reliance.instrument_token: {"last_price": "98.00"}})
    order.refresh_from_db()
    assert order.average_price == D("99.50")
