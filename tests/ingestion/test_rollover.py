"""Kite's morning token rollover, in one process: the feed client's rules for a refused token,
the engine following the Kite session store, and the broker's REST path.

Real servers only: the simulator (a Kite-protocol ticker on loopback) and the fake Kite REST
server (``tests/fakes/kite_rest.py``)."""

import asyncio
import logging

import pytest
from asgiref.sync import sync_to_async
from cryptography.fernet import Fernet
from django.db import connection

from ingestion import engine as engine_module
from ingestion.credentials import kite_credentials, kite_feed_configured
from ingestion.engine import IngestionEngine
from ingestion.feed.client import FeedConnection
from ingestion.feed.simulator import KiteSimulator
from kitesession.store import session_save, session_state
from tests.conftest import requires_postgres
from tests.factories import InstrumentFactory
from tests.helpers import eventually

pytest_plugins = ["tests.oms.live_fixtures"]  # kite, live, infy (a fake Kite REST server)
NSE = (1 << 8) | 1
FAST = {"INGESTION_PUBLISH_INTERVAL": 0.05, "INGESTION_POLL_SECONDS": 0.3}


class Reads:
    """Credentials a test changes, counting how often the connection asked for them."""

    def __init__(self, token: str) -> None:
        self.token, self.count = token, 0

    async def __call__(self) -> tuple[str, str]:
        self.count += 1
        return "key", self.token


async def connected_to(simulator, credentials, body, **options):
    refusals: list[tuple[str, str]] = []

    async def on_refused(token: str, detail: str) -> None:
        refusals.append((token, detail))

    connection = FeedConnection(index=0, url=simulator.url, credentials=credentials, on_ticks=list,
                                min_backoff=0.05, max_backoff=0.2, on_refused=on_refused, **options)  # fmt: skip
    connection.set_desired({NSE: "quote"})
    stop = asyncio.Event()
    task = asyncio.create_task(connection.run(stop))
    try:
        await body(connection, refusals)
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)
        await simulator.stop()


# --- the feed client's rules -------------------------------------------------------------------


def test_a_refused_token_is_not_sent_again_within_a_minute_however_often_woken():
    credentials = Reads("yesterday")

    async def body(connection, refusals):
        await eventually(lambda: connection.state == "auth_failed", what="refused")
        assert connection.error.startswith("Kite login needed") and "HTTP 403" in connection.error
        for woken in range(1, 6):  # e.g. the session changed for another reason (a logout, a refusal)
            reads = credentials.count
            connection.wake()
            await eventually(lambda reads=reads: credentials.count > reads, what=f"wake {woken}")
        assert simulator.refused == {"yesterday": 1}  # read five more times, never sent again
        assert connection.state == "auth_failed" and connection.error.startswith("Kite login needed")
        assert [token for token, _ in refusals] == ["yesterday"]

        credentials.token = "today"  # a new login
        connection.wake()
        await eventually(lambda: connection.state == "connected" and simulator.subscribed() == {NSE: "quote"},
                         what="connected with the new token")  # fmt: skip
        assert simulator.refused == {"yesterday": 1}

    simulator = KiteSimulator(api_key="key", access_token="today", interval=0.05)
    asyncio.run(start_and(simulator, connected_to(simulator, credentials, body)))


async def start_and(simulator, run):
    await simulator.start()
    await run


def test_the_same_token_is_tried_again_once_its_retry_delay_is_over_and_reported_once():
    credentials = Reads("yesterday")

    async def body(connection, refusals):
        await eventually(lambda: simulator.refused.get("yesterday", 0) >= 3, what="retried after the delay")
        assert [token for token, _ in refusals] == ["yesterday"]  # told once, not on every retry
        assert "HTTP 403" in refusals[0][1] and "yesterday" not in refusals[0][1]

    simulator = KiteSimulator(api_key="key", access_token="today", interval=0.05)
    asyncio.run(start_and(simulator, connected_to(simulator, credentials, body, auth_retry=0.1)))


def test_the_simulators_rollover_drops_the_old_token_and_the_new_one_streams():
    credentials = Reads("yesterday")

    async def body(connection, refusals):
        await eventually(lambda: connection.state == "connected" and simulator.subscribed() == {NSE: "quote"},
                         what="streaming")  # fmt: skip
        await simulator.rollover(access_token="today")  # 06:00 IST
        await eventually(lambda: connection.state == "auth_failed", what="the reconnect refused")
        assert [token for token, _ in refusals] == ["yesterday"] and simulator.client_count == 0

        credentials.token = "today"
        connection.wake()
        await eventually(lambda: connection.state == "connected" and simulator.subscribed() == {NSE: "quote"},
                         what="streaming with the new token")  # fmt: skip

    simulator = KiteSimulator(api_key="key", access_token="yesterday", interval=0.05)
    asyncio.run(start_and(simulator, connected_to(simulator, credentials, body)))


def test_no_usable_token_says_kite_login_needed_and_calls_nothing():
    credentials = Reads("")

    async def body(connection, refusals):
        await eventually(lambda: connection.state == "auth_failed", what="no token")
        assert connection.error.startswith("Kite login needed") and "/kite/login/" in connection.error
        assert simulator.connections_total == 0 and simulator.refused == {} and refusals == []

    simulator = KiteSimulator(api_key="key", access_token="today", interval=0.05)
    asyncio.run(start_and(simulator, connected_to(simulator, credentials, body)))


# --- one token source --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "token", "token_file", "secret", "configured"),
    [("k", "t", "", "", True), ("k", "", "/var/run/kite-token", "", True), ("k", "", "", "s", True),
     ("k", "", "", "", False), ("", "t", "/var/run/kite-token", "s", False)],
)  # fmt: skip
def test_kite_is_configured_with_a_key_and_a_token_a_token_file_or_the_secret_to_log_in(
    settings, key, token, token_file, secret, configured
):
    settings.KITE_API_KEY, settings.KITE_ACCESS_TOKEN = key, token
    settings.KITE_ACCESS_TOKEN_FILE, settings.KITE_API_SECRET = token_file, secret
    assert kite_feed_configured() is configured


def test_the_runner_streams_from_kite_for_a_desk_that_logs_in_from_the_portal(settings, capsys):
    from tradingportal import runner

    settings.REDIS_URL = ""
    settings.KITE_API_KEY, settings.KITE_API_SECRET = "kite-key", "kite-secret"
    settings.KITE_ACCESS_TOKEN = settings.KITE_ACCESS_TOKEN_FILE = ""
    web, _ = runner.plan(env={})
    assert web.env["INGESTION_SIMULATE"] == "0"  # never the simulator for a Kite desk
    assert "feed: Kite at" in capsys.readouterr().out


@pytest.mark.django_db
def test_a_saved_session_wins_over_the_bootstrap_token(settings):
    settings.KITE_API_KEY, settings.KITE_TOKEN_KEY = "key", Fernet.generate_key().decode()
    settings.KITE_ACCESS_TOKEN, settings.KITE_ACCESS_TOKEN_FILE = "bootstrap-token", ""
    assert kite_credentials() == ("key", "bootstrap-token")
    session_save(access_token="logged-in-token", user_id="XX0000", actor="test")
    assert kite_credentials() == ("key", "logged-in-token")


# --- the engine follows the Kite session ------------------------------------------------------


async def _orm(fn):
    def run_and_close():
        try:
            return fn()
        finally:
            connection.close()  # this worker thread's own connection

    return await sync_to_async(run_and_close, thread_sensitive=False)()


async def until_true(read, *, what: str, timeout: float = 10.0) -> None:
    """``eventually`` for a condition that reads the database."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not await _orm(read):
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


def kite_desk(settings):
    """Kite configured with yesterday's bootstrap token and a key to store sessions."""
    settings.KITE_API_KEY, settings.KITE_TOKEN_KEY = "key", Fernet.generate_key().decode()
    settings.KITE_ACCESS_TOKEN, settings.KITE_ACCESS_TOKEN_FILE = "yesterday", ""
    for name, value in FAST.items():
        setattr(settings, name, value)
    InstrumentFactory(is_active=True)


async def refused_then_logged_in(*, after_refusal=None):
    """Yesterday's token refused by the ticker; then a login saves today's: streaming again."""
    simulator = await KiteSimulator(api_key="key", access_token="today", interval=0.05).start()
    engine = IngestionEngine(url=simulator.url, credentials=kite_credentials, feed="kite")
    stop = asyncio.Event()
    task = asyncio.create_task(engine.run(stop))
    try:
        await eventually(lambda: engine.status()["state"] == "auth_failed", timeout=10, what="refused")
        assert engine.status()["error"].startswith("Kite login needed")
        # The refusal reaches the store: the session says so, and the dead token is not handed out.
        await until_true(lambda: session_state().state == "login_needed", what="the session marked refused")
        assert await _orm(kite_credentials) == ("key", "")
        # The refusal changed the session's version: the feed was woken, read no token, sent nothing.
        await eventually(lambda: "no usable access token" in engine.status()["error"], timeout=10,
                         what="woken by the refusal")  # fmt: skip
        assert simulator.refused == {"yesterday": 1}
        if after_refusal is not None:
            await after_refusal(engine, simulator)
        # The retry delay is a minute: only the new session can wake the feed this early.
        await _orm(lambda: session_save(access_token="today", user_id="XX0000", actor="desk"))
        await eventually(lambda: engine.status()["state"] == "connected", timeout=10, what="the new session")
        assert simulator.refused == {"yesterday": 1}
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
        await simulator.stop()


@pytest.mark.django_db(transaction=True)
def test_a_new_session_reconnects_a_refused_feed_without_a_restart(settings):
    kite_desk(settings)
    asyncio.run(refused_then_logged_in())


@requires_postgres
@pytest.mark.django_db(transaction=True)
def test_on_postgresql_the_new_session_arrives_by_notify(settings, monkeypatch):
    kite_desk(settings)
    # No poll could see the new session within the test's wait: only the NOTIFY can.
    monkeypatch.setattr(engine_module, "SESSION_POLL_SECONDS", 600.0)
    monkeypatch.setattr(engine_module, "LISTENING_POLL_SECONDS", 600.0)

    async def listening(engine, simulator):
        await eventually(lambda: engine._listening, timeout=10, what="LISTEN")

    asyncio.run(refused_then_logged_in(after_refusal=listening))


@pytest.mark.django_db(transaction=True)
def test_without_listen_the_new_session_is_seen_by_the_short_poll(settings, monkeypatch):
    kite_desk(settings)
    # As on SQLite: whatever the database, nothing but the poll tells the feed.
    monkeypatch.setattr(IngestionEngine, "_listen_loop", _no_listen)
    asyncio.run(refused_then_logged_in())


async def _no_listen(self, stop):
    await stop.wait()


@pytest.mark.django_db(transaction=True)
def test_a_broken_session_read_is_counted_and_the_feed_goes_on(settings, monkeypatch, caplog):
    kite_desk(settings)
    settings.KITE_ACCESS_TOKEN = "today"
    calls = {"n": 0}
    real = engine_module.session_version

    def flaky():
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("the database went away")
        return real()

    monkeypatch.setattr(engine_module, "session_version", flaky)
    monkeypatch.setattr(engine_module, "SESSION_POLL_SECONDS", 0.05)
    monkeypatch.setattr(engine_module, "LISTENING_POLL_SECONDS", 0.05)

    async def run():
        simulator = await KiteSimulator(api_key="key", access_token="today", interval=0.05).start()
        engine = IngestionEngine(url=simulator.url, credentials=kite_credentials, feed="kite")
        stop = asyncio.Event()
        task = asyncio.create_task(engine.run(stop))
        try:
            await eventually(lambda: engine.status()["failures"]["session"] == 1 and calls["n"] > 3,
                             timeout=10, what="a failed read, then more")  # fmt: skip
            await eventually(lambda: engine.status()["state"] == "connected", timeout=10, what="streaming")
        finally:
            stop.set()
            await asyncio.wait_for(task, 10)
            await simulator.stop()

    caplog.set_level(logging.INFO)
    asyncio.run(run())


# --- the broker's REST path ---------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_a_refused_token_rejects_live_orders_without_calling_kite_again_until_a_new_login(
    kite, live, infy, settings
):
    from oms import state
    from tests.oms.helpers import place, price

    settings.KITE_TOKEN_KEY = Fernet.generate_key().decode()
    price(infy.instrument_token, "1500.05")
    dead = kite.access_token
    kite.revoke(dead)  # 06:00 IST
    first = place(infy, strategy="live-desk", quantity=1).order
    first.refresh_from_db()
    assert first.status == state.REJECTED and first.status_message.startswith("Kite login needed")
    assert len(kite.calls) == 1
    assert session_state().state == "login_needed"

    second = place(infy, strategy="live-desk", quantity=1).order
    second.refresh_from_db()
    assert second.status == state.REJECTED and second.status_message.startswith("Kite login needed")
    assert len(kite.calls) == 1  # the dead token was not sent again

    fresh = "today-0123456789"
    kite.tokens.add(fresh)
    session_save(access_token=fresh, user_id="XX0000", actor="desk")
    third = place(infy, strategy="live-desk", quantity=1).order
    third.refresh_from_db()
    assert third.broker_order_id and third.status != state.REJECTED
    assert [call.headers["authorization"].endswith(fresh) for call in kite.calls] == [False, True]


@pytest.mark.django_db(transaction=True)
def test_a_feed_refused_all_morning_alerts_kite_login_needed_once_until_it_streams_again(settings):
    """The issue: "an alert fires once". The feed asks the alerts every ALERT_CHECK_SECONDS while
    it is down; a login-needed alert older than ALERT_REPEAT_MINUTES must not be sent again while
    the same outage lasts (nobody logged in yet). The next outage (tomorrow's rollover) alerts."""
    from datetime import timedelta

    from django.utils import timezone

    from alerts.models import Alert, Kind

    settings.KITE_API_KEY = "key"
    engine = IngestionEngine(url="ws://127.0.0.1:9/", credentials=kite_credentials, feed="kite")
    refused = {"state": "auth_failed", "error": "Kite login needed: 403 Forbidden"}

    def kite_alerts() -> int:
        return Alert.objects.filter(kind=Kind.KITE_LOGIN).count()

    async def check(status) -> None:
        engine._next_alert_check = 0.0  # as if ALERT_CHECK_SECONDS had passed
        await engine._alert_when_down(status)

    async def age_the_alerts() -> None:  # older than ALERT_REPEAT_MINUTES: a new one would be sent
        await sync_to_async(lambda: Alert.objects.update(created_at=timezone.now() - timedelta(hours=2)))()

    async def run() -> list[int]:
        counts = []
        try:
            await check(refused)
            counts.append(await sync_to_async(kite_alerts)())
            await age_the_alerts()
            await check(refused)  # two hours later, still nobody logged in
            counts.append(await sync_to_async(kite_alerts)())
            await check({"state": "connected"})  # logged in: streaming again
            await age_the_alerts()
            await check(refused)  # the next morning's rollover
            counts.append(await sync_to_async(kite_alerts)())
        finally:
            # The engine's database calls and these reads ran in asgiref's one thread for
            # thread-sensitive calls, which outlives the test; the engine closes its
            # connection there when ``run()`` ends, which this test never calls: close it
            # here (looked up in that thread: ``connection`` is per thread).
            await sync_to_async(lambda: connection.close())()
        return counts

    assert asyncio.run(run()) == [1, 1, 2]
