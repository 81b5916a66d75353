"""The feed's watchdog against sockets that stay open and say nothing.

Kite sends a heartbeat (a 1-byte binary frame) every second at any hour, market open or
not, so a connection with neither ticks nor heartbeats for ``stale_after`` seconds
(``FEED_STALE_SECONDS`` in the engine) is dead at any hour and is replaced. The servers
here are real, on loopback: one that completes the websocket handshake and then never
reads or writes another byte (not even a pong or a close frame), one that sends only
heartbeats, and one whose heartbeats stop while the socket stays open.
"""

import asyncio
import base64
import hashlib
import json

from websockets.asyncio.server import serve

from ingestion.feed.client import FeedConnection
from tests.helpers import eventually

WEBSOCKET_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
HEARTBEAT = b"\x00"


def creds():
    async def read():
        return "key", "token"

    return read


class SilentServer:
    """Accepts the websocket handshake, then holds the TCP connection open in silence."""

    def __init__(self) -> None:
        self.accepted = 0
        self._writers: list[asyncio.StreamWriter] = []
        self._server: asyncio.Server | None = None

    async def start(self) -> str:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return f"ws://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = await reader.readuntil(b"\r\n\r\n")
        key = next(
            line.split(b":", 1)[1].strip()
            for line in request.split(b"\r\n")
            if line.lower().startswith(b"sec-websocket-key:")
        )
        accept = base64.b64encode(hashlib.sha1(key + WEBSOCKET_GUID.encode()).digest())  # noqa: S324 - RFC 6455
        writer.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n")  # fmt: skip
        await writer.drain()
        self.accepted += 1
        self._writers.append(writer)  # kept open; nothing is ever read or written again

    async def stop(self) -> None:
        for writer in self._writers:
            writer.close()
        if self._server is not None:
            self._server.close()


async def running(connection: FeedConnection, body) -> None:
    stop = asyncio.Event()
    task = asyncio.create_task(connection.run(stop))
    try:
        await body()
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


def connection_to(url: str, **options) -> FeedConnection:
    return FeedConnection(index=0, url=url, credentials=creds(), on_ticks=list, min_backoff=0.05,
                          max_backoff=0.1, **options)  # fmt: skip


def test_a_socket_that_stays_open_and_silent_is_replaced(caplog):
    async def run():
        server = SilentServer()
        url = await server.start()
        connection = connection_to(url, stale_after=0.3)
        connection.set_desired({256265: "full"})

        async def body():
            # Each replacement is a new handshake on the same silent server.
            await eventually(lambda: server.accepted >= 3 and connection.reconnects >= 2, timeout=60)
            assert caplog.text.count("no data or heartbeat") >= 2

        try:
            await running(connection, body)
        finally:
            await server.stop()

    asyncio.run(run())


def test_heartbeats_alone_keep_the_connection_at_any_hour():
    sent = {"heartbeats": 0, "connections": 0}

    async def heartbeats_only(ws):
        sent["connections"] += 1
        while True:
            await ws.send(HEARTBEAT)
            sent["heartbeats"] += 1
            await asyncio.sleep(0.05)

    async def run():
        async with serve(heartbeats_only, "127.0.0.1", 0) as server:
            port = server.sockets[0].getsockname()[1]
            connection = connection_to(f"ws://127.0.0.1:{port}", stale_after=0.5)

            async def body():
                # Heartbeats for well over ten times the staleness limit, and no tick at all.
                await eventually(lambda: sent["heartbeats"] >= 120, timeout=60)
                assert connection.state == "connected" and connection.reconnects == 0
                assert sent["connections"] == 1 and connection.ticks == 0

            await running(connection, body)

    asyncio.run(run())


def test_when_the_heartbeats_stop_the_connection_is_replaced_and_subscribed_again():
    subscriptions: list[list[int]] = []
    connections = {"count": 0}

    async def beats_then_silence(ws):
        connections["count"] += 1
        first = connections["count"] == 1
        async for message in ws:
            request = json.loads(message)
            if request.get("a") == "subscribe":
                subscriptions.append(request["v"])
                break
        for _ in range(10 if first else 10**6):
            await ws.send(HEARTBEAT)
            await asyncio.sleep(0.05)
        await ws.wait_closed()  # open, answering pings, sending nothing, until the client goes

    async def run():
        async with serve(beats_then_silence, "127.0.0.1", 0) as server:
            port = server.sockets[0].getsockname()[1]
            connection = connection_to(f"ws://127.0.0.1:{port}", stale_after=0.4)
            connection.set_desired({256265: "full", 738561: "quote"})

            async def body():
                await eventually(lambda: connections["count"] >= 2 and len(subscriptions) >= 2, timeout=60)
                assert sorted(subscriptions[1]) == [256265, 738561]  # the new socket streams the same set
                await eventually(lambda: connection.state == "connected", timeout=30)
                assert connection.reconnects >= 1

            await running(connection, body)

    asyncio.run(run())
