"""The ingestion engine against the simulator and the real database."""

import asyncio
import json
import time

import pytest
from channels.layers import get_channel_layer
from django.db import connection
from django.test import override_settings

from ingestion.engine import IngestionEngine
from ingestion.feed.simulator import KiteSimulator
from ingestion.latest import latest_ticks
from ingestion.publisher import TICKS_GROUP
from ingestion.status import feed_status
from instruments.models import Instrument
from tests.conftest import requires_postgres
from tests.factories import InstrumentFactory
from tests.helpers import eventually

pytestmark = pytest.mark.django_db(transaction=True)
FAST = {"INGESTION_PUBLISH_INTERVAL": 0.05, "INGESTION_POLL_SECONDS": 0.3}


async def run_engine(body, **simulator_options):
    simulator = await KiteSimulator(interval=0.05, **simulator_options).start()
    engine = IngestionEngine(url=simulator.url, credentials=lambda: ("key", "token"), feed="simulator")
    stop = asyncio.Event()
    task = asyncio.create_task(engine.run(stop))
    try:
        await body(engine, simulator)
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
        await simulator.stop()


def tokens_of(**filters):
    return set(Instrument.objects.filter(**filters).values_list("instrument_token", flat=True))


@override_settings(**FAST)
def test_streams_exactly_the_active_set_in_its_modes_and_publishes_batches():
    a = InstrumentFactory(is_active=True, stream_mode="full", tradingsymbol="RELIANCE", lot_size=1)
    b = InstrumentFactory(is_active=True, stream_mode="ltp")
    InstrumentFactory(is_active=False)
    layer = get_channel_layer()

    async def body(engine, simulator):
        channel = await layer.new_channel()
        await layer.group_add(TICKS_GROUP, channel)
        await eventually(lambda: (simulator.subscribed() == {a.instrument_token: "full", b.instrument_token: "ltp"}),
                         what="subscriptions")  # fmt: skip
        tick = None
        while tick is None:
            message = await asyncio.wait_for(layer.receive(channel), 5)
            if message["type"] != "ticks.batch":
                continue
            tokens = [token for token, _ in message["ticks"]]
            assert len(tokens) == len(set(tokens)) <= 2  # coalesced: the latest tick per instrument
            tick = next(
                (json.loads(text) for token, text in message["ticks"] if token == a.instrument_token), None
            )
        assert tick["tradingsymbol"] == "RELIANCE" and tick["exchange"] == "NSE" and "bid" in tick
        assert isinstance(tick["last_price"], str) and tick["mode"] == "full"
        await eventually(lambda: a.instrument_token in latest_ticks([a.instrument_token]), what="cache")
        latest = latest_ticks([a.instrument_token])[a.instrument_token]
        assert latest["mode"] == "full" and latest["bid"] and latest["ask_quantity"] > 0
        await eventually(lambda: (feed_status() or {}).get("subscribed") == 2, what="heartbeat")
        status = feed_status()
        assert status["state"] == "connected" and status["running"] and status["capacity"] == 9000

    asyncio.run(run_engine(body))


@override_settings(**FAST)
def test_follows_admin_style_changes_without_restart():
    a = InstrumentFactory(is_active=True)
    b = InstrumentFactory(is_active=False)

    async def body(engine, simulator):
        await eventually(lambda: set(simulator.subscribed()) == {a.instrument_token}, what="initial")
        started = time.monotonic()
        await _orm(lambda: Instrument.objects.filter(pk=b.pk).update(is_active=True, stream_mode="full"))
        await _orm(lambda: Instrument.objects.filter(pk=a.pk).update(is_active=False))
        await eventually(lambda: (simulator.subscribed() == {b.instrument_token: "full"}), timeout=3,
                         what="follow")  # fmt: skip
        assert time.monotonic() - started < 2.0
        assert simulator.connections_total == 1  # no reconnect

    asyncio.run(run_engine(body))


async def _orm(fn):
    from asgiref.sync import sync_to_async

    def run_and_close():
        try:
            return fn()
        finally:
            connection.close()  # this worker thread's own connection

    return await sync_to_async(run_and_close, thread_sensitive=False)()


def activate_by_raw_sql(pk):
    """What an operator typing into psql does: no Django, no signals."""
    with connection.cursor() as cursor:
        cursor.execute("UPDATE instruments SET is_active = TRUE WHERE id = %s", [pk])


@requires_postgres
@override_settings(INGESTION_PUBLISH_INTERVAL=0.05, INGESTION_POLL_SECONDS=60)
def test_follows_a_raw_sql_update_through_listen_notify():
    a = InstrumentFactory(is_active=False)

    async def body(engine, simulator):
        await asyncio.sleep(0.5)  # the first read is done, the next poll is a minute away
        assert simulator.subscribed() == {}
        started = time.monotonic()
        await _orm(lambda: activate_by_raw_sql(a.pk))
        await eventually(lambda: (set(simulator.subscribed()) == {a.instrument_token}), timeout=3,
                         what="notify")  # fmt: skip
        assert time.monotonic() - started < 2.0

    asyncio.run(run_engine(body))


@override_settings(KITE_TICKER_MAX_PER_CONNECTION=2, KITE_TICKER_MAX_CONNECTIONS=2, **FAST)
def test_spreads_over_connections_and_says_when_the_set_is_too_big(caplog):
    instruments = InstrumentFactory.create_batch(5, is_active=True)

    async def body(engine, simulator):
        await eventually(lambda: (simulator.client_count == 2 and len(simulator.subscribed()) == 4),
                         what="two connections")  # fmt: skip
        assert engine.overflow == [instruments[4].instrument_token]  # the last in stable (id) order
        await eventually(lambda: (feed_status() or {}).get("over_limit") == 1, what="status")

    asyncio.run(run_engine(body))
    assert "exceed the feed's capacity of 4" in caplog.text


@override_settings(**FAST)
def test_order_updates_reach_the_oms_hook(monkeypatch):
    calls = []
    monkeypatch.setattr("oms.services.order_update_from_feed", lambda *, data: calls.append(data))
    InstrumentFactory(is_active=True)

    async def body(engine, simulator):
        await eventually(lambda: simulator.client_count == 1, what="connected")
        await asyncio.sleep(0.2)
        await simulator.send_order_update({"order_id": "220303000308932", "status": "COMPLETE"})
        await eventually(lambda: bool(calls), what="hook")

    asyncio.run(run_engine(body))
    assert calls == [{"order_id": "220303000308932", "status": "COMPLETE"}]


@requires_postgres
@override_settings(INGESTION_PUBLISH_INTERVAL=0.05, INGESTION_POLL_SECONDS=60)
def test_a_broken_listen_connection_is_replaced():
    a = InstrumentFactory(is_active=False)

    def kill_listeners():
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE query ILIKE 'LISTEN instruments_active%%' AND pid <> pg_backend_pid()"
            )
            return cursor.rowcount

    async def body(engine, simulator):
        await asyncio.sleep(0.5)
        assert await _orm(kill_listeners) == 1
        await asyncio.sleep(0.5)
        await _orm(lambda: activate_by_raw_sql(a.pk))
        # Re-LISTEN (within seconds) re-reads the set: the change is not lost to a 60 s poll.
        await eventually(lambda: set(simulator.subscribed()) == {a.instrument_token}, timeout=10,
                         what="re-listen")  # fmt: skip
        assert simulator.connections_total == 1  # the feed connection itself was untouched

    asyncio.run(run_engine(body))


def test_a_rewritten_token_file_retries_a_refused_feed_at_once(tmp_path):
    from ingestion.credentials import kite_credentials
    from ingestion.feed.simulator import KiteSimulator

    InstrumentFactory(is_active=True)
    token_file = tmp_path / "kite_token"
    token_file.write_text("yesterday\n")

    async def run():
        simulator = await KiteSimulator(api_key="key", access_token="today", interval=0.05).start()
        engine = IngestionEngine(url=simulator.url, credentials=kite_credentials, feed="kite")
        stop = asyncio.Event()
        task = asyncio.create_task(engine.run(stop))
        try:
            await eventually(lambda: engine.status()["state"] == "auth_failed", what="refused")
            token_file.write_text("today\n")  # the morning login job
            # The refused connection waits a minute before retrying on its own; the
            # rewritten file wakes it well before that.
            await eventually(lambda: engine.status()["state"] == "connected", timeout=5, what="woken")
        finally:
            stop.set()
            await asyncio.wait_for(task, 10)
            await simulator.stop()

    with override_settings(KITE_API_KEY="key", KITE_ACCESS_TOKEN_FILE=str(token_file), **FAST):
        asyncio.run(run())
