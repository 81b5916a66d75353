"""The OMS tells the desk: the kill switch engaged, a LIVE order rejected, a failed square-off."""

from decimal import Decimal as D

import pytest
from django.utils import timezone

from alerts.models import Alert, Kind
from oms import state
from oms.killswitch import kill_switch_set
from oms.models import Order
from oms.updates import OrderUpdate, order_update
from tests.oms.helpers import place, price

pytestmark = pytest.mark.django_db


def test_engaging_the_kill_switch_alerts_once_and_releasing_does_not(
    trader, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        kill_switch_set(state="HALTED", by=trader, reason="fat finger on the desk")
        kill_switch_set(state="ACTIVE", by=trader)
    alert = Alert.objects.get(kind=Kind.KILL_SWITCH)
    assert "HALTED" in alert.subject and "fat finger" in alert.body and "strategist" in alert.body


def test_a_rejected_live_order_alerts_and_a_paper_one_does_not(manual, reliance, trader,
                                                               django_capture_on_commit_callbacks):  # fmt: skip
    now = timezone.now()
    Order.objects.create(
        strategy=manual, instrument=reliance, exchange="NSE", tradingsymbol="RELIANCE", instrument_token=738561,
        transaction_type="BUY", quantity=1, product="MIS", order_type="LIMIT", price=D("100"), broker="kite",
        broker_order_id="K1", idempotency_key="live-1", pending_quantity=1, placed_at=now, updated_at=now,
    )  # fmt: skip
    with django_capture_on_commit_callbacks(execute=True):
        order_update(update=OrderUpdate(broker_order_id="K1", status=state.REJECTED,
                                        status_message="Insufficient funds"), source="postback", broker="kite")  # fmt: skip
        price(reliance.instrument_token, "100")
        place(reliance, user=trader, variety="co", order_type="LIMIT", price="100.00", trigger_price="98.00")
    [alert] = Alert.objects.filter(kind=Kind.ORDER_REJECTED)
    assert "Insufficient funds" in alert.body and "RELIANCE" in alert.subject


def test_a_square_off_refused_for_no_price_alerts(reliance, trader, django_capture_on_commit_callbacks):
    price(reliance.instrument_token, "100")
    place(reliance, user=trader, quantity=5)
    from ingestion.latest import latest_discard

    latest_discard([reliance.instrument_token])  # the feed lost the price
    with django_capture_on_commit_callbacks(execute=True):
        event = kill_switch_set(state="HALTED", by=trader, reason="flatten", square_off=True)
    assert event.result["square_off_refused"] == 1
    assert Alert.objects.filter(kind=Kind.SQUARE_OFF).count() == 1
