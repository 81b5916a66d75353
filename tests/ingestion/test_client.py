"""The feed client against the simulator: a real websocket server on loopback."""

import asyncio
from http import HTTPStatus

import pytest
from websockets.asyncio.server import serve

from ingestion.feed.client import FeedConnection, ticker_url_problem
from ingestion.feed.simulator import KiteSimulator
from tests.helpers import eventually

NSE, INDEX, CDS = (1 << 8) | 1, 256265, (7 << 8) | 3


def creds(key="key", token="token"):
    async def read():
        return key, token

    return read


async def with_connection(simulator, body, *, credentials=None, **options):
    received = []
    connection = FeedConnection(index=0, url=simulator.url, credentials=credentials or creds(),
                                on_ticks=received.extend, min_backoff=0.05, max_backoff=0.2, **options)  # fmt: skip
    stop = asyncio.Event()
    task = asyncio.create_task(connection.run(stop))
    try:
        await body(connection, received)
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)
        await simulator.stop()


def test_subscribes_in_each_mode_and_receives_ticks():
    async def body(connection, received):
        connection.set_desired({NSE: "full", INDEX: "quote", CDS: "ltp"})
        await eventually(lambda: simulator.subscribed() == {NSE: "full", INDEX: "quote", CDS: "ltp"})
        await eventually(lambda: {t["instrument_token"] for t in received} == {NSE, INDEX, CDS})
        modes = {t["instrument_token"]: t["mode"] for t in received}
        assert modes == {NSE: "full", INDEX: "quote", CDS: "ltp"}
        assert connection.state == "connected"

    simulator = KiteSimulator(interval=0.05)
    asyncio.run(start_and(simulator, lambda: with_connection(simulator, body)))


async def start_and(simulator, run):
    await simulator.start()
    await run()


def test_only_the_difference_is_sent():
    async def body(connection, received):
        connection.set_desired({NSE: "quote", INDEX: "quote"})
        await eventually(lambda: len(simulator.subscribed()) == 2)
        simulator.received.clear()
        connection.set_desired({NSE: "full", CDS: "quote"})
        await eventually(lambda: simulator.subscribed() == {NSE: "full", CDS: "quote"})
        assert {"a": "unsubscribe", "v": [INDEX]} in simulator.received
        assert {"a": "subscribe", "v": [CDS]} in simulator.received
        assert {"a": "mode", "v": ["full", [NSE]]} in simulator.received
        assert not any(m["a"] == "subscribe" and NSE in m["v"] for m in simulator.received)

    simulator = KiteSimulator(interval=0.05)
    asyncio.run(start_and(simulator, lambda: with_connection(simulator, body)))


def test_reconnects_after_the_server_drops_and_resubscribes_with_modes():
    async def body(connection, received):
        connection.set_desired({NSE: "full", INDEX: "ltp"})
        await eventually(lambda: simulator.subscribed() == {NSE: "full", INDEX: "ltp"})
        await simulator.drop_all()
        await eventually(lambda: connection.reconnects >= 1)
        await eventually(
            lambda: simulator.subscribed() == {NSE: "full", INDEX: "ltp"} and connection.state == "connected"
        )
        count = len(received)
        await eventually(lambda: len(received) > count)
        assert simulator.connections_total == 2

    simulator = KiteSimulator(interval=0.05)
    asyncio.run(start_and(simulator, lambda: with_connection(simulator, body)))


def test_a_wrong_token_is_reported_and_retried_only_after_the_auth_delay(caplog):
    attempts = []  # handshakes that reached the server

    def refuse(connection, request):
        attempts.append(request.path)
        return connection.respond(HTTPStatus.FORBIDDEN, "invalid api_key or access_token\n")

    def waits():
        return [r.getMessage() for r in caplog.records if "reconnects in" in r.getMessage()]

    async def run():
        server = await serve(lambda ws: ws.wait_closed(), "127.0.0.1", 0, process_request=refuse)
        port = server.sockets[0].getsockname()[1]
        current = {"token": "expired"}

        async def read():
            return "key", current["token"]

        connection = FeedConnection(index=0, url=f"ws://127.0.0.1:{port}", credentials=read,
                                    on_ticks=list, min_backoff=0.01, max_backoff=0.01)  # fmt: skip
        stop = asyncio.Event()
        task = asyncio.create_task(connection.run(stop))
        try:
            await eventually(lambda: len(waits()) == 1, what="first refusal")
            assert connection.state == "auth_failed"
            assert "access token" in connection.error and "HTTP 403" in connection.error
            # Not the 0.01 s backoff of a dropped connection: a minute, or a new token.
            assert waits() == ["feed connection 0 reconnects in 60.0s"] and len(attempts) == 1
            current["token"] = "also-refused"  # e.g. the operator stored another token
            connection.wake()
            await eventually(lambda: len(waits()) == 2, what="second refusal")
            assert waits()[1] == "feed connection 0 reconnects in 60.0s" and len(attempts) == 2
        finally:
            stop.set()
            await asyncio.wait_for(task, 5)
            server.close()

    caplog.set_level("INFO", logger="ingestion.feed.client")
    asyncio.run(run())


def test_a_reconnect_reads_the_current_token():
    current = {"token": "yesterday"}

    async def read():
        return "key", current["token"]

    async def body(connection, received):
        connection.set_desired({NSE: "quote"})
        await eventually(lambda: connection.state == "auth_failed")
        current["token"] = "today"  # the morning login stored a new token
        connection.wake()
        await eventually(lambda: connection.state == "connected" and simulator.subscribed() == {NSE: "quote"})

    simulator = KiteSimulator(api_key="key", access_token="today", interval=0.05)
    asyncio.run(start_and(simulator, lambda: with_connection(simulator, body, credentials=read)))


def test_a_silent_socket_is_dropped_and_reconnected():
    async def silent(connection):
        await asyncio.sleep(30)

    async def run():
        server = await serve(silent, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        connection = FeedConnection(index=0, url=f"ws://127.0.0.1:{port}", credentials=creds(), on_ticks=list,
                                    stale_after=0.3, min_backoff=0.05, max_backoff=0.1)  # fmt: skip
        stop = asyncio.Event()
        task = asyncio.create_task(connection.run(stop))
        try:
            await eventually(lambda: connection.reconnects >= 2)
            assert "no data or heartbeat" in connection.error
        finally:
            stop.set()
            await asyncio.wait_for(task, 5)
            server.close()

    asyncio.run(run())


def test_a_failing_tick_handler_does_not_drop_the_connection():
    calls = []

    def broken_handler(ticks):
        calls.append(len(ticks))
        raise RuntimeError("a bug downstream")

    async def run():
        await simulator.start()
        connection = FeedConnection(index=0, url=simulator.url, credentials=creds(), on_ticks=broken_handler)
        stop = asyncio.Event()
        task = asyncio.create_task(connection.run(stop))
        try:
            connection.set_desired({NSE: "quote"})
            await eventually(lambda: len(calls) >= 3, what="ticks keep coming")
            assert connection.state == "connected" and connection.reconnects == 0
        finally:
            stop.set()
            await asyncio.wait_for(task, 5)
            await simulator.stop()

    simulator = KiteSimulator(interval=0.05)
    asyncio.run(run())


def test_an_error_shown_in_the_status_never_carries_the_access_token():
    """websockets' InvalidURI quotes the whole URL, query (and token) included."""

    async def run():
        connection = FeedConnection(index=0, url="ws://operator@127.0.0.1:9/", on_ticks=list,
                                    credentials=creds(token="tok-9f8e7d6c5b4a"), min_backoff=0.05, max_backoff=0.1)  # fmt: skip
        stop = asyncio.Event()
        task = asyncio.create_task(connection.run(stop))
        try:
            await eventually(lambda: "InvalidURI" in connection.error, what="the error")
            return connection.error
        finally:
            stop.set()
            await asyncio.wait_for(task, 5)

    error = asyncio.run(run())
    assert "access_token=********" in error
    assert "tok-9f8e7d6c5b4a" not in error


def test_a_redirect_is_never_followed():
    """The URL carries the token: a redirect must not take it to another server."""
    elsewhere = []

    async def run():
        other = await serve(lambda ws: elsewhere.append(ws.request.path) or ws.wait_closed(), "127.0.0.1", 0)
        other_port = other.sockets[0].getsockname()[1]

        def redirect(connection, request):
            response = connection.respond(HTTPStatus.FOUND, "")
            response.headers["Location"] = f"ws://127.0.0.1:{other_port}{request.path}"
            return response

        server = await serve(lambda ws: ws.wait_closed(), "127.0.0.1", 0, process_request=redirect)
        port = server.sockets[0].getsockname()[1]
        connection = FeedConnection(index=0, url=f"ws://127.0.0.1:{port}", credentials=creds(), on_ticks=list,
                                    min_backoff=0.05, max_backoff=0.1)  # fmt: skip
        stop = asyncio.Event()
        task = asyncio.create_task(connection.run(stop))
        try:
            await eventually(lambda: connection.reconnects >= 2, what="refused redirects")
            assert "HTTP 302" in connection.error and connection.state != "connected"
        finally:
            stop.set()
            await asyncio.wait_for(task, 5)
            server.close()
            other.close()

    asyncio.run(run())
    assert elsewhere == []


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        ("wss://ws.kite.trade", True),
        ("wss://ticker.example.com:8443/path", True),
        ("ws://127.0.0.1:8765", True),
        ("ws://localhost:8765", True),
        ("ws://[::1]:8765", True),
        ("ws://127.8.9.10:8765", True),
        ("ws://ws.kite.trade", False),
        ("ws://10.0.0.5:8765", False),
        ("ws://localhost.example.com", False),
        ("http://127.0.0.1:8765", False),
        ("wss://", False),
        ("not a url", False),
    ],
)
def test_the_token_is_sent_only_over_wss_or_to_loopback(url, allowed):
    assert (ticker_url_problem(url) == "") is allowed


def test_a_plain_ws_url_to_a_remote_host_is_refused_without_reading_the_token():
    asked = []

    async def credentials():
        asked.append(1)
        return "key", "token"

    async def run():
        connection = FeedConnection(
            index=0, url="ws://ticker.example.com", credentials=credentials, on_ticks=list
        )
        stop = asyncio.Event()
        task = asyncio.create_task(connection.run(stop))
        try:
            await eventually(lambda: connection.state == "config_error", what="refused")
            assert "wss://" in connection.error and "ticker.example.com" in connection.error
        finally:
            stop.set()
            await asyncio.wait_for(task, 5)
        assert connection.state == "stopped" and connection.reconnects == 0

    asyncio.run(run())
    assert asked == []
