"""Kite's order rows from postbacks and the ticker, through the Kite adapter's converter
(``update_from_kite_order``: sequence, modifications, exact decimals) and matched to our
order by Kite's id, by our tag when Kite's answer was lost, and a slice to its parent."""

import hashlib
import json
from decimal import Decimal as D

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from oms import state
from oms.models import Order, OrderEvent
from oms.services import order_update_from_feed, order_update_from_postback

pytestmark = pytest.mark.django_db
pytest_plugins = ["tests.oms.live_fixtures"]  # live, infy, nifty_ce


def live_order(strategy, instrument, *, broker_order_id=None, quantity=10, price="1500", product="MIS"):
    now = timezone.now()
    return Order.objects.create(
        strategy=strategy, instrument=instrument, exchange=instrument.exchange, tradingsymbol=instrument.tradingsymbol,
        instrument_token=instrument.instrument_token, transaction_type="BUY", quantity=quantity, product=product,
        order_type="LIMIT", price=D(price), broker="kite", broker_order_id=broker_order_id,
        idempotency_key=f"row-{now.timestamp()}-{quantity}-{broker_order_id}", pending_quantity=quantity,
        placed_at=now, updated_at=now,
    )  # fmt: skip


def row(order, **fields):
    """A Kite order row (a postback's body, a ticker message's data), as Kite writes one."""
    body = {
        "order_id": "250616000000101", "exchange_order_id": "1100000000012345", "status": "OPEN",
        "status_message": None, "order_timestamp": "2025-06-16 09:20:01", "exchange_timestamp": "2025-06-16 09:20:01",
        "exchange_update_timestamp": "2025-06-16 09:20:01", "variety": "regular", "modified": False,
        "exchange": order.exchange, "tradingsymbol": order.tradingsymbol, "instrument_token": order.instrument_token,
        "order_type": "LIMIT", "transaction_type": "BUY", "validity": "DAY", "product": order.product,
        "quantity": order.quantity, "price": 1500, "trigger_price": 0, "average_price": 0, "filled_quantity": 0,
        "pending_quantity": order.quantity, "cancelled_quantity": 0, "tag": f"TP{order.pk}", "tags": [f"TP{order.pk}"],
    }  # fmt: skip
    body.update(fields)
    return body


def test_a_row_for_an_order_whose_placement_answer_was_lost_finds_it_by_its_tag(live, infy):
    order = live_order(live, infy)
    applied = order_update_from_postback(data=row(order))
    order.refresh_from_db()
    assert applied.order.pk == order.pk
    assert (order.broker_order_id, order.status, order.exchange_order_id) == (
        "250616000000101", state.OPEN, "1100000000012345")  # fmt: skip


def test_a_second_kite_order_with_our_tag_is_never_applied_to_ours(live, infy):
    order = live_order(live, infy, broker_order_id="250616000000101")
    applied = order_update_from_feed(data=row(order, order_id="250616000000999", status="COMPLETE"))
    order.refresh_from_db()
    assert applied.order is None and order.status == state.PUT_ORDER_REQ_RECEIVED
    assert OrderEvent.objects.get(kind=OrderEvent.Kind.UNKNOWN_ORDER).broker_order_id == "250616000000999"


def test_a_row_with_our_tag_on_another_instrument_is_not_ours(live, infy):
    order = live_order(live, infy)
    applied = order_update_from_postback(data=row(order, tradingsymbol="TCS"))
    order.refresh_from_db()
    assert applied.order is None and order.broker_order_id is None


def test_a_modification_comes_with_its_values_and_an_older_row_keeps_them(live, infy):
    order = live_order(live, infy, broker_order_id="250616000000101")
    order_update_from_feed(data=row(order, modified=True, quantity=15, price=1499.95, pending_quantity=15,
                                    exchange_update_timestamp="2025-06-16 09:21:00"))  # fmt: skip
    order.refresh_from_db()
    assert (order.quantity, order.price, order.pending_quantity) == (15, D("1499.95"), 15)
    older = order_update_from_postback(data=row(order, status="TRIGGER PENDING", modified=True, quantity=12,
                                                price=D("1499.50"), exchange_update_timestamp="2025-06-16 09:20:30"))  # fmt: skip
    order.refresh_from_db()
    assert (order.quantity, order.price, order.status) == (15, D("1499.95"), state.OPEN)
    assert older.kinds == [OrderEvent.Kind.STALE_UPDATE, OrderEvent.Kind.STALE_UPDATE]


def test_a_ticker_price_as_a_float_arrives_exact(live, infy):
    order = live_order(live, infy, broker_order_id="250616000000101")
    order_update_from_feed(data=json.loads(json.dumps(row(order, modified=True, price=1500.35))))
    order.refresh_from_db()
    assert order.price == D("1500.35")


def test_a_slice_of_an_autosliced_order_is_recorded_on_its_parent_and_changes_nothing(live, nifty_ce):
    parent = live_order(
        live, nifty_ce, broker_order_id="250616000000500", quantity=3600, price="12", product="NRML"
    )
    slice_row = row(parent, order_id="250616000000501", status="COMPLETE", quantity=1800, filled_quantity=1800,
                    modified=True, tags=[f"TP{parent.pk}", "autoslice", "autoslice:250616000000500"])  # fmt: skip
    applied = order_update_from_postback(data=slice_row)
    parent.refresh_from_db()
    assert (parent.status, parent.quantity, parent.filled_quantity) == (state.PUT_ORDER_REQ_RECEIVED, 3600, 0)
    [event] = applied.events
    assert (
        event.order_id == parent.pk
        and "slice 250616000000501" in event.message
        and "COMPLETE" in event.message
    )
    assert event.payload["order_id"] == "250616000000501"


def test_a_signed_postback_through_the_api_applies_kites_row(live, infy, settings):
    settings.KITE_API_SECRET = "postback-secret"
    order = live_order(live, infy, broker_order_id="250616000000101")
    body = row(order, status="CANCELLED", cancelled_quantity=10, pending_quantity=0)
    body["checksum"] = hashlib.sha256(
        f"{body['order_id']}{body['order_timestamp']}postback-secret".encode()
    ).hexdigest()
    answer = APIClient().post("/api/kite/postback/", data=json.dumps(body), content_type="application/json")
    assert answer.status_code == 200 and answer.json() == {"status": "ok", "known": True}
    order.refresh_from_db()
    assert (order.status, order.cancelled_quantity) == (state.CANCELLED, 10)
    event = OrderEvent.objects.get(order=order, kind=OrderEvent.Kind.STATUS)
    assert event.source == "postback" and event.payload["checksum"] == "********"
