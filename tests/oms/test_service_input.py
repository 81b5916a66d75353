"""The services refuse what the API's serializers would: a caller (admin, command, task)
gets an OrderError that says why, never a 500 or a half-written order."""

from decimal import Decimal as D

import pytest

from oms.models import Order
from oms.services import OrderError
from tests.oms.helpers import place, price

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"quantity": 0}, "quantity"),
        ({"quantity": -5}, "quantity"),
        ({"quantity": True}, "quantity"),
        ({"quantity": 2.0}, "quantity"),
        ({"order_type": "LIMIT", "price": 99.5}, "price"),  # a float
        ({"order_type": "LIMIT", "price": D("-1")}, "price"),
        ({"order_type": "LIMIT", "price": D("NaN")}, "price"),
        ({"order_type": "LIMIT", "price": D("Infinity")}, "price"),
        ({"order_type": "LIMIT", "price": D("99.123456")}, "price"),  # more places than stored
        ({"order_type": "LIMIT", "price": D(0)}, "price"),
        ({"order_type": "MARKET", "price": D("100")}, "price"),
        ({"order_type": "SL", "price": D("100"), "trigger_price": D(0)}, "trigger_price"),
        (
            {"order_type": "SL", "price": D("100"), "trigger_price": D("101")},
            "trigger_price",
        ),  # a buy stop above its limit
        (
            {"order_type": "SL", "transaction_type": "SELL", "price": D("100"), "trigger_price": D("99")},
            "trigger_price",
        ),
        ({"transaction_type": "HOLD"}, "transaction_type"),
        ({"product": "XYZ"}, "product"),
        ({"validity": "TTL"}, "validity_ttl"),
        ({"stop_loss": D("-3")}, "stop_loss"),
        ({"order_type": "LIMIT", "price": D("99999999999999"), "quantity": 10**9}, "value"),
    ],
)
def test_bad_requests_are_refused_with_the_reason(reliance, trader, fields, reason):
    price(reliance.instrument_token, "100.00")
    with pytest.raises(OrderError, match=reason):
        place(reliance, user=trader, **fields)
    assert not Order.objects.exists()


def test_system_orders_are_unique_per_key_in_the_database(reliance, manual):
    """Orders without a user (kill switch, risk monitor) are idempotent by a constraint too."""
    from django.db import IntegrityError, transaction
    from django.utils import timezone

    def row():
        now = timezone.now()
        return Order.objects.create(
            strategy=manual, instrument=reliance, exchange="NSE", tradingsymbol="RELIANCE", instrument_token=738561,
            transaction_type="SELL", quantity=1, product="MIS", order_type="MARKET", idempotency_key="kill-switch-1-1",
            placed_at=now, updated_at=now,
        )  # fmt: skip

    row()
    with pytest.raises(IntegrityError), transaction.atomic():
        row()
