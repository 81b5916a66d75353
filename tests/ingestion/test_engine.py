"""The ingestion engine against the simulator and the real database."""

import asyncio
import json
import logging
from datetime import timedelta

import pytest
from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from django.db import connection
from django.test import override_settings
from django.utils import timezone

from ingestion.engine import IngestionEngine, supervise
from ingestion.feed.simulator import KiteSimulator
from ingestion.latest import latest_store, latest_ticks
from ingestion.publisher import TICKS_GROUP
from ingestion.status import LoopHealth, feed_status
from instruments.models import Instrument
from tests.conftest import requires_postgres
from tests.factories import InstrumentFactory
from tests.helpers import eventually

pytestmark = pytest.mark.django_db(transaction=True)
FAST = {"INGESTION_PUBLISH_INTERVAL": 0.05, "INGESTION_POLL_SECONDS": 0.3}
BREAKABLE_LAYER = {"default": {"BACKEND": "tests.ingestion.layers.BreakableLayer", "CONFIG": {"expiry": 10}}}


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


class Listener:
    """Everything the ``ticks`` group receives, in order (what each dashboard consumer gets)."""

    def __init__(self, layer):
        self.layer, self.messages = layer, []

    async def __aenter__(self):
        self.channel = await self.layer.new_channel()
        await self.layer.group_add(TICKS_GROUP, self.channel)
        self._task = asyncio.create_task(self._read())
        return self

    async def _read(self):
        while True:
            self.messages.append(await self.layer.receive(self.channel))

    async def __aexit__(self, *exc):
        self._task.cancel()

    def batches(self):
        return [m for m in self.messages if m["type"] == "ticks.batch"]

    def tokens_in_batches(self, start=0):
        return {token for m in self.messages[start:] if m["type"] == "ticks.batch" for token, _ in m["ticks"]}


async def _orm(fn):
    def run_and_close():
        try:
            return fn()
        finally:
            connection.close()  # this worker thread's own connection

    return await sync_to_async(run_and_close, thread_sensitive=False)()


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
        assert status["failing"] == [] and set(status["failures"].values()) == {0}

    asyncio.run(run_engine(body))


@override_settings(**FAST)
def test_the_latest_tick_carries_the_time_it_was_received():
    a = InstrumentFactory(is_active=True)

    async def body(engine, simulator):
        started = timezone.now()
        await eventually(lambda: a.instrument_token in latest_ticks([a.instrument_token]), what="stored")
        received = timezone.datetime.fromisoformat(
            latest_ticks([a.instrument_token])[a.instrument_token]["received_at"]
        )
        # Never later than it was read, never before the feed ran: the time it arrived.
        assert started - timedelta(seconds=1) <= received <= timezone.now()
        assert latest_ticks([a.instrument_token], max_age=60)

    asyncio.run(run_engine(body))


@override_settings(**FAST)
def test_follows_admin_style_changes_without_restart():
    a = InstrumentFactory(is_active=True)
    b = InstrumentFactory(is_active=False)

    async def body(engine, simulator):
        await eventually(lambda: set(simulator.subscribed()) == {a.instrument_token}, what="initial")
        await _orm(lambda: Instrument.objects.filter(pk=b.pk).update(is_active=True, stream_mode="full"))
        await _orm(lambda: Instrument.objects.filter(pk=a.pk).update(is_active=False))
        await eventually(
            lambda: simulator.subscribed() == {b.instrument_token: "full"}, timeout=15, what="follow"
        )
        assert simulator.connections_total == 1  # no reconnect

    asyncio.run(run_engine(body))


@override_settings(**FAST)
def test_an_instrument_no_longer_streamed_is_removed_from_dashboards_and_the_latest_store():
    a, b = InstrumentFactory(is_active=True), InstrumentFactory(is_active=True)
    tokens = [a.instrument_token, b.instrument_token]

    async def body(engine, simulator):
        async with Listener(get_channel_layer()) as listener:
            await eventually(lambda: set(latest_ticks(tokens)) == set(tokens), what="both stored")
            await _orm(lambda: Instrument.objects.filter(pk=b.pk).update(is_active=False))
            await eventually(lambda: any(m["type"] == "ticks.removed" for m in listener.messages), timeout=15,
                             what="removed event")  # fmt: skip
            removed_at = next(i for i, m in enumerate(listener.messages) if m["type"] == "ticks.removed")
            assert listener.messages[removed_at]["tokens"] == [b.instrument_token]
            assert set(latest_ticks(tokens)) == {a.instrument_token}  # its last price is gone
            # Ticks go on for the other one, and never again for the removed one.
            await eventually(lambda: a.instrument_token in listener.tokens_in_batches(removed_at + 1),
                             what="ticks after the removal")  # fmt: skip
            assert b.instrument_token not in listener.tokens_in_batches(removed_at + 1)
            assert b.instrument_token not in latest_ticks(tokens)

    asyncio.run(run_engine(body))


@override_settings(**FAST)
def test_latest_ticks_of_instruments_deactivated_while_no_feed_ran_are_dropped_at_start():
    a, gone = InstrumentFactory(is_active=True), InstrumentFactory(is_active=False)
    tick = json.dumps({"instrument_token": gone.instrument_token, "last_price": "5"})
    latest_store({gone.instrument_token: tick},
                 received_at=timezone.now() - timedelta(hours=20))  # fmt: skip
    assert latest_ticks([gone.instrument_token])

    async def body(engine, simulator):
        await eventually(lambda: not latest_ticks([gone.instrument_token]), what="stale tick dropped")
        await eventually(
            lambda: a.instrument_token in latest_ticks([a.instrument_token]), what="live one kept"
        )

    asyncio.run(run_engine(body))


@override_settings(CHANNEL_LAYERS=BREAKABLE_LAYER, **FAST)
def test_publishing_that_fails_is_shown_counted_and_resumes():
    a = InstrumentFactory(is_active=True)
    layer = get_channel_layer()

    async def body(engine, simulator):
        async with Listener(layer) as listener:
            await eventually(lambda: listener.batches(), what="ticks flowing")
            layer.broken = True  # Redis goes away
            # The heartbeat (stored in the cache) must not claim health that is not there.
            await eventually(lambda: (feed_status() or {}).get("state") == "degraded", what="degraded")
            status = feed_status()
            assert "publish" in status["failing"] and status["failures"]["publish"] >= 1
            assert "ConnectionError" in status["error"]
            before = len(listener.messages)
            layer.broken = False  # and comes back
            await eventually(
                lambda: a.instrument_token in listener.tokens_in_batches(before), what="ticks resume"
            )
            await eventually(lambda: (feed_status() or {}).get("state") == "connected", what="healthy again")
            status = feed_status()
            assert status["failing"] == [] and status["failures"]["publish"] >= 1  # counted, still

    asyncio.run(run_engine(body))


def test_a_loop_that_dies_is_restarted_and_its_death_counted(caplog):
    """The supervisor every engine loop runs under (the loops catch what they expect)."""
    runs = []

    async def loop(stop):
        runs.append(1)
        if len(runs) == 1:
            raise RuntimeError("a bug in the loop")
        await stop.wait()

    async def run():
        health = LoopHealth(logging.getLogger("ingestion.engine"), "the test loop")
        stop = asyncio.Event()
        task = asyncio.create_task(supervise(name="test", loop=loop, stop=stop, health=health))
        await eventually(lambda: len(runs) == 2, what="restarted")
        assert health.total == 1 and "RuntimeError: a bug in the loop" in health.error
        stop.set()
        await asyncio.wait_for(task, 5)
        return health

    asyncio.run(run())
    assert len(runs) == 2  # stopped for good once asked to
    assert "the test loop failed" in caplog.text


UNREACHABLE_CACHE = {
    "default": {
        "BACKEND": "django_redis.cache.RedisCache",
        "LOCATION": "redis://127.0.0.1:9/0",  # the discard port: nothing listens there
        "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 0.5, "SOCKET_TIMEOUT": 0.5},
    }
}


@override_settings(CACHES=UNREACHABLE_CACHE, **FAST)
def test_a_redis_outage_logs_one_traceback_per_loop_not_one_per_failure(caplog):
    InstrumentFactory(is_active=True)
    caplog.set_level(logging.INFO)

    async def body(engine, simulator):
        await eventually(lambda: engine.health["store"].total >= 3 and engine.health["status"].total >= 3,
                         timeout=30, what="repeated failures")  # fmt: skip
        status = engine.status()
        assert {"store", "status"} <= set(status["failing"]) and status["state"] == "degraded"

    asyncio.run(run_engine(body))
    tracebacks = [r for r in caplog.records if r.exc_info or r.exc_text]
    by_message = sorted(r.getMessage() for r in tracebacks)
    assert by_message.count("storing the latest ticks failed") == 1
    assert by_message.count("publishing the feed status failed") == 1
    assert len(tracebacks) <= 3, by_message  # nothing else floods either


def activate_by_raw_sql(pk):
    """What an operator typing into psql does: no Django, no signals."""
    with connection.cursor() as cursor:
        cursor.execute("UPDATE instruments SET is_active = TRUE WHERE id = %s", [pk])


async def until(read, expected, *, timeout=20.0, what=""):
    """Await ``read()`` until it gives ``expected`` (for values only a coroutine can read)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while (value := await read()) != expected:
        assert asyncio.get_running_loop().time() < deadline, f"{what}: still {value!r}"
        await asyncio.sleep(0.05)


def listening_backends():
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND query ILIKE 'LISTEN instruments_active%%'"
        )
        return cursor.fetchone()[0]


@requires_postgres
@override_settings(INGESTION_PUBLISH_INTERVAL=0.05, INGESTION_POLL_SECONDS=60)
def test_follows_a_raw_sql_update_through_listen_notify():
    a, b = InstrumentFactory(is_active=True), InstrumentFactory(is_active=False)

    async def body(engine, simulator):
        await eventually(lambda: set(simulator.subscribed()) == {a.instrument_token}, what="first read")
        await until(lambda: _orm(listening_backends), 1, what="listening")
        await _orm(lambda: activate_by_raw_sql(b.pk))
        # The next poll is a minute away: only the notification can bring this in time.
        await eventually(lambda: set(simulator.subscribed()) == {a.instrument_token, b.instrument_token},
                         timeout=20, what="notify")  # fmt: skip

    asyncio.run(run_engine(body))


@requires_postgres
@override_settings(INGESTION_PUBLISH_INTERVAL=0.05, INGESTION_POLL_SECONDS=60)
def test_after_its_database_connections_are_killed_it_follows_the_active_set_at_once():
    a, b = InstrumentFactory(is_active=True), InstrumentFactory(is_active=False)
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        test_pid = cursor.fetchone()[0]  # the test's own connection stays

    def kill_the_ingestions_backends():
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() "
                "AND pid NOT IN (pg_backend_pid(), %s)",
                [test_pid],
            )
            return cursor.rowcount

    async def body(engine, simulator):
        await eventually(lambda: set(simulator.subscribed()) == {a.instrument_token}, what="first read")
        await until(lambda: _orm(listening_backends), 1, what="listening")
        assert await _orm(kill_the_ingestions_backends) >= 2  # its ORM connection and its listener
        await _orm(lambda: activate_by_raw_sql(b.pk))
        # Re-LISTEN at once and a re-read that replaces the dead ORM connection: the change
        # is not lost to the poll a minute away.
        await eventually(lambda: set(simulator.subscribed()) == {a.instrument_token, b.instrument_token},
                         timeout=20, what="followed after the blip")  # fmt: skip
        # The first read on the dead connection (following the set, or the OMS beside it) is counted.
        assert engine.health["follow"].total + engine.health["oms"].total >= 1
        assert await _orm(listening_backends) == 1
        assert simulator.connections_total == 1  # the feed connection itself was untouched

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
    a = InstrumentFactory(is_active=True)

    async def body(engine, simulator):
        await eventually(lambda: set(simulator.subscribed()) == {a.instrument_token}, what="subscribed")
        await simulator.send_order_update({"order_id": "220303000308932", "status": "COMPLETE"})
        await eventually(lambda: bool(calls), what="hook")

    asyncio.run(run_engine(body))
    assert calls == [{"order_id": "220303000308932", "status": "COMPLETE"}]


def test_a_rewritten_token_file_retries_a_refused_feed_at_once(tmp_path):
    from ingestion.credentials import kite_credentials

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
            await eventually(lambda: engine.status()["state"] == "connected", timeout=20, what="woken")
        finally:
            stop.set()
            await asyncio.wait_for(task, 10)
            await simulator.stop()

    with override_settings(KITE_API_KEY="key", KITE_ACCESS_TOKEN_FILE=str(token_file), **FAST):
        asyncio.run(run())


@override_settings(KITE_API_KEY="key", KITE_ACCESS_TOKEN="tok-abcdef-0123456789", **FAST)
def test_a_plain_ws_url_to_a_remote_ticker_is_refused_and_shown():
    from ingestion.credentials import kite_credentials

    InstrumentFactory(is_active=True)
    asked = []

    def credentials():
        asked.append(1)
        return kite_credentials()

    async def run():
        engine = IngestionEngine(url="ws://ticker.example.com/", credentials=credentials, feed="kite")
        stop = asyncio.Event()
        task = asyncio.create_task(engine.run(stop))
        try:
            await eventually(lambda: engine.status()["state"] == "config_error", timeout=10, what="refused")
            assert "wss://" in engine.status()["error"]
        finally:
            stop.set()
            await asyncio.wait_for(task, 10)

    asyncio.run(run())
    assert asked == []  # the token was never even read for this URL


def test_a_refused_token_alerts_kite_login_needed_once(tmp_path):
    """The morning rollover: Kite refuses yesterday's token; the desk hears it once."""
    from alerts.models import Alert, Kind
    from ingestion.credentials import kite_credentials

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
            await until(lambda: _orm(lambda: Alert.objects.filter(kind=Kind.KITE_LOGIN).exists()), True,
                        what="the alert")  # fmt: skip
        finally:
            stop.set()
            await asyncio.wait_for(task, 10)
            await simulator.stop()

    with override_settings(KITE_API_KEY="key", KITE_ACCESS_TOKEN_FILE=str(token_file), **FAST):
        asyncio.run(run())
    alert = Alert.objects.get(kind=Kind.KITE_LOGIN)
    assert "refused" in alert.body and "yesterday" not in alert.body and "today" not in alert.subject
