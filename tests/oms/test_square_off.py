"""Squaring off must go out and stay done: the position's own working orders are cancelled
first (they would reopen it), an order-rate limit delays it but never drops it, and
engaging the switch waits for placements already past their risk check."""

import threading
from decimal import Decimal as D

import pytest
from django.db import connection, connections, transaction
from django.test import override_settings
from django.utils import timezone

from oms import state
from oms.brokers.paper import paper_match
from oms.killswitch import kill_switch_set
from oms.models import Order, Position, Strategy
from oms.monitor import risk_monitor_run
from tests.factories import InstrumentFactory
from tests.helpers import wait_for
from tests.oms.helpers import place, price

pytestmark = pytest.mark.django_db


def test_a_square_off_cancels_the_positions_working_orders_first(reliance, trader):
    price(reliance.instrument_token, "100.00")
    place(reliance, user=trader, quantity=10)
    target = place(reliance, user=trader, order_type="LIMIT", price="105.00", quantity=10,
                   transaction_type="SELL").order  # fmt: skip
    kill_switch_set(state="HALTED", by=trader, reason="flatten", square_off=True)
    target.refresh_from_db()
    assert target.status == state.CANCELLED
    assert Position.objects.get(instrument=reliance).quantity == 0
    paper_match({reliance.instrument_token: {"last_price": "106.00"}})
    assert Position.objects.get(instrument=reliance).quantity == 0  # not reopened short


def test_a_square_off_held_back_by_the_order_rate_still_goes_out(trader):
    stocks = [InstrumentFactory(is_active=True) for _ in range(5)]
    for stock in stocks:
        price(stock.instrument_token, "50.00")
        place(stock, user=trader, quantity=4)
    with override_settings(OMS_ORDERS_PER_SECOND=2):
        event = kill_switch_set(state="HALTED", by=trader, reason="flatten", square_off=True)
        assert event.result["square_off_orders"] <= 2  # the rest held back by the rate

        def flat():
            for stock in stocks:
                price(stock.instrument_token, "50.00")  # the feed keeps prices live
            risk_monitor_run()
            return not Position.objects.exclude(quantity=0).exists()

        wait_for(flat, timeout=30, what="every position squared off")
    assert Order.objects.filter(source="kill_switch", status=state.COMPLETE).count() == 5


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_engaging_waits_for_a_placement_already_past_its_checks(reliance, trader):
    """A placement holding its strategy's lock (checked ACTIVE, not yet committed) is either
    refused or seen by cancel_open; it never slips through behind the switch."""
    manual = Strategy.objects.get(name="manual")
    locked, go, done = threading.Event(), threading.Event(), threading.Event()
    outcome = {}

    def placement_in_flight():
        try:
            with transaction.atomic():
                Strategy.objects.select_for_update().get(pk=manual.pk)
                locked.set()
                go.wait(30)
                now = timezone.now()
                outcome["order"] = Order.objects.create(
                    strategy=manual, instrument=reliance, exchange="NSE", tradingsymbol="RELIANCE",
                    instrument_token=738561, transaction_type="BUY", quantity=1, product="MIS", order_type="LIMIT",
                    price=D("95"), status=state.OPEN, broker_order_id="inflight-1", idempotency_key="inflight",
                    pending_quantity=1, placed_at=now, updated_at=now,
                )  # fmt: skip
        finally:
            connections.close_all()

    def engage():
        try:
            kill_switch_set(state="HALTED", by=None, reason="stop", cancel_open=True)
        finally:
            done.set()
            connections.close_all()

    placer = threading.Thread(target=placement_in_flight)
    placer.start()
    assert locked.wait(30)
    switch = threading.Thread(target=engage)
    switch.start()

    def switch_blocked_or_done():
        if done.is_set():
            return True
        with connection.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = "
                           "current_database()")  # fmt: skip
            return cursor.fetchone()[0] > 0

    wait_for(switch_blocked_or_done, timeout=30, what="the switch to wait for the lock (or finish)")
    go.set()
    placer.join(30)
    switch.join(30)
    order = Order.objects.get(pk=outcome["order"].pk)
    assert order.status == state.CANCELLED


def test_a_square_off_that_cannot_go_out_keeps_the_positions_stop(reliance, trader):
    """No live price: the square-off is refused before anything is cancelled, so the
    position is never left open without its stop."""
    from ingestion.latest import latest_discard

    price(reliance.instrument_token, "100.00")
    place(reliance, user=trader, quantity=10)
    stop = place(reliance, user=trader, order_type="SL-M", trigger_price="95.00", quantity=10,
                 transaction_type="SELL").order  # fmt: skip
    latest_discard([reliance.instrument_token])

    kill_switch_set(state="HALTED", by=trader, reason="flatten", square_off=True)

    stop.refresh_from_db()
    assert stop.status == state.TRIGGER_PENDING
    refused = Order.objects.get(source="kill_switch")
    assert refused.status == state.RISK_REJECTED and refused.risk_rule == "no_live_price"
    assert Position.objects.get(instrument=reliance).quantity == 10


@pytest.mark.parametrize("source", ["mis_square_off", "risk_monitor", "kill_switch"])
def test_a_square_off_on_its_way_is_not_cancelled_nor_doubled(reliance, trader, manual, source):
    """Any system square-off already working (the MIS square-off's too) is the one: another
    square-off neither cancels it nor sends a second (both filling would reverse the position)."""
    price(reliance.instrument_token, "100.00")
    place(reliance, user=trader, quantity=10)
    now = timezone.now()
    on_its_way = Order.objects.create(
        strategy=manual, instrument=reliance, exchange="NSE", tradingsymbol="RELIANCE", instrument_token=738561,
        transaction_type="SELL", quantity=10, product="MIS", order_type="MARKET", status=state.OPEN, source=source,
        idempotency_key=f"{source}-on-its-way", pending_quantity=10, placed_at=now, updated_at=now,
    )  # fmt: skip

    kill_switch_set(state="HALTED", by=trader, reason="flatten", square_off=True)

    on_its_way.refresh_from_db()
    assert on_its_way.status == state.OPEN
    assert Order.objects.filter(transaction_type="SELL").count() == 1
