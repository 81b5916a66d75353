"""Resting paper orders meet the prices the ingestion publishes, and the risk monitor runs
beside them: the real engine against the simulator and the real database."""

import asyncio
from decimal import Decimal as D

import pytest
from asgiref.sync import sync_to_async
from django.db import connection
from django.test import override_settings

from ingestion.engine import IngestionEngine
from ingestion.feed.simulator import KiteSimulator
from oms import state
from oms.models import Order, Position
from tests.factories import InstrumentFactory
from tests.oms.helpers import place

pytestmark = pytest.mark.django_db(transaction=True)


async def until(query, *, what, timeout=20.0):
    """Poll ``query`` (ORM, run in a thread with its own connection) until it is truthy."""

    def run():
        try:
            return query()
        finally:
            connection.close()

    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        value = await sync_to_async(run, thread_sensitive=False)()
        if value:
            return value
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


@override_settings(INGESTION_PUBLISH_INTERVAL=0.05, INGESTION_POLL_SECONDS=0.3, OMS_RISK_MONITOR_SECONDS=0.2)
def test_a_resting_limit_fills_when_the_simulated_market_reaches_it(trader):
    stock = InstrumentFactory(is_active=True, stream_mode="quote", last_price=D("100.00"))
    # Placed before any price exists: it rests, and a buy limit far above the market fills
    # as soon as the first tick is matched, at the market (as a marketable order would).
    order = place(stock, user=trader, order_type="LIMIT", price="150.00", quantity=3).order
    assert order.status == state.OPEN

    async def run():
        simulator = await KiteSimulator(interval=0.05, price_lookup=None).start()
        engine = IngestionEngine(url=simulator.url, credentials=lambda: ("key", "token"), feed="simulator")
        stop = asyncio.Event()
        task = asyncio.create_task(engine.run(stop))
        try:
            await until(lambda: Order.objects.get(pk=order.pk).status == state.COMPLETE, what="the fill")
            # The risk monitor marks the position from the published prices.
            position = await until(lambda: Position.objects.filter(instrument=stock, marked_at__isnull=False).first(),
                                   what="the mark to market")  # fmt: skip
            return position, engine.status()
        finally:
            stop.set()
            await asyncio.wait_for(task, 10)
            await simulator.stop()

    position, status = asyncio.run(run())
    order.refresh_from_db()
    assert order.status == state.COMPLETE and order.filled_quantity == 3 and order.average_price < D("150.00")
    assert order.average_price == order.trades.get().price
    assert position.quantity == 3 and position.marked_at is not None
    assert position.unrealised == (position.last_price - order.average_price) * 3
    assert status["failures"].get("oms", 0) == 0
