"""A built-in Kite ticker: a real websocket server on loopback that speaks Kite's protocol.

Clients connect exactly as to Kite (``?api_key=...&access_token=...``), send JSON
``subscribe``/``unsubscribe``/``mode`` messages and receive binary frames: LTP, quote and
full packets (index packets for INDICES tokens, currency prices in 10^-7 rupee), and a
1-byte heartbeat every second when there is nothing else to send. Prices take a random
walk in tick-size steps from each instrument's last price, so a dashboard moves
plausibly. When ``api_key``/``access_token`` are configured, other credentials are
refused at the handshake with HTTP 403, as Kite does.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from decimal import Decimal
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from ingestion.feed.protocol import (
    DEFAULT_PLACES,
    HEARTBEAT,
    INDICES,
    PRICE_PLACES,
    build_frame,
    pack_units,
)

logger = logging.getLogger(__name__)

MAX_PER_CONNECTION = 3000
PACKETS_PER_FRAME = 500
SLICES = 10
PriceLookup = Callable[[list[int]], Awaitable[dict[int, Decimal]]]


@dataclass
class _Quote:
    """One instrument's simulated market, in integer price units (paise, or 10^-7 for CDS)."""

    places: int
    price: int
    close: int
    step: int
    volume: int = 0
    oi: int = 0

    def move(self, rng: random.Random) -> None:
        self.price = max(self.step, self.price + self.step * rng.randint(-3, 3))
        self.volume += rng.randint(1, 50) * 25
        self.oi = max(0, self.oi + rng.randint(-10, 10) * 25)


@dataclass(eq=False)
class _Client:
    connection: ServerConnection
    modes: dict[int, str] = field(default_factory=dict)


class KiteSimulator:
    def __init__(self, *, host: str = "127.0.0.1", port: int = 0, api_key: str = "", access_token: str = "",
                 interval: float = 1.0, price_lookup: PriceLookup | None = None, seed: int | None = None,
                 stamp_send_time: bool = False) -> None:  # fmt: skip
        self.host, self.port = host, port
        self.api_key, self.access_token = api_key, access_token
        self.interval = interval
        self.price_lookup = price_lookup
        self.stamp_send_time = stamp_send_time
        self._rng = random.Random(seed)
        self._quotes: dict[int, _Quote] = {}
        self._clients: set[_Client] = set()
        self._server: Server | None = None
        self._ticker: asyncio.Task[None] | None = None
        self.connections_total = 0
        self.frames_sent = 0
        self.received: list[dict[str, Any]] = []  # every client message, for tests and debugging

    # --- lifecycle -------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"ws://{self.host}:{self.port}"

    async def start(self) -> KiteSimulator:
        self._server = await serve(self._handle, self.host, self.port, process_request=self._authorize,
                                   max_size=2**20, ping_interval=None)  # fmt: skip
        self.port = self._server.sockets[0].getsockname()[1] if self.port == 0 else self.port
        self._ticker = asyncio.create_task(self._tick_loop(), name="simulator-ticks")
        logger.info("Kite simulator listening on %s", self.url)
        return self

    async def stop(self) -> None:
        if self._ticker:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
        if self._server:
            self._server.close()
            await self._server.wait_closed()

    async def drop_all(self, code: int = 1011) -> None:
        """Close every client connection (tests: the client must reconnect by itself)."""
        for client in list(self._clients):
            await client.connection.close(code, "simulator dropped the connection")

    def subscribed(self) -> dict[int, str]:
        merged: dict[int, str] = {}
        for client in self._clients:
            merged.update(client.modes)
        return merged

    @property
    def client_count(self) -> int:
        return len(self._clients)

    # --- connections -------------------------------------------------------------------

    def _authorize(self, connection: ServerConnection, request: Request) -> Response | None:
        query = parse_qs(urlsplit(request.path).query)
        key = (query.get("api_key") or [""])[0]
        token = (query.get("access_token") or [""])[0]
        if not key or not token:
            return connection.respond(HTTPStatus.FORBIDDEN, "api_key and access_token are required\n")
        if (self.api_key and key != self.api_key) or (self.access_token and token != self.access_token):
            return connection.respond(HTTPStatus.FORBIDDEN, "Invalid api_key or access_token\n")
        return None

    async def _handle(self, connection: ServerConnection) -> None:
        client = _Client(connection)
        self._clients.add(client)
        self.connections_total += 1
        try:
            async for message in connection:
                if isinstance(message, str):
                    await self._on_text(client, message)
        except ConnectionClosed:
            pass
        finally:
            self._clients.discard(client)

    async def _on_text(self, client: _Client, message: str) -> None:
        try:
            request = json.loads(message)
            action, value = request["a"], request["v"]
            if len(self.received) < 10_000:
                self.received.append(request)
        except (ValueError, KeyError, TypeError):
            await client.connection.send(json.dumps({"type": "error", "data": "Invalid message"}))
            return
        if action == "subscribe":
            tokens = [int(t) for t in value]
            room = MAX_PER_CONNECTION - len(client.modes)
            new = [t for t in tokens if t not in client.modes]
            if len(new) > room:
                await client.connection.send(json.dumps(
                    {"type": "error", "data": f"Subscription limit of {MAX_PER_CONNECTION} exceeded"}))  # fmt: skip
                new = new[: max(0, room)]
            await self._ensure_quotes(new)
            for token in new:
                client.modes[token] = "quote"
        elif action == "unsubscribe":
            for token in value:
                client.modes.pop(int(token), None)
        elif action == "mode":
            mode, tokens = value
            for token in tokens:
                if int(token) in client.modes and mode in ("ltp", "quote", "full"):
                    client.modes[int(token)] = mode

    async def _ensure_quotes(self, tokens: list[int]) -> None:
        missing = [t for t in tokens if t not in self._quotes]
        if not missing:
            return
        prices: dict[int, Decimal] = {}
        if self.price_lookup:
            try:
                prices = await self.price_lookup(missing)
            except Exception:  # noqa: BLE001 - a simulator without prices still ticks
                logger.exception("simulator could not read last prices")
        for token in missing:
            places = PRICE_PLACES.get(token & 0xFF, DEFAULT_PLACES)
            default = Decimal("10000") if token & 0xFF == INDICES else Decimal("100")
            price = prices.get(token) or default
            units = int(price.scaleb(places).to_integral_value())
            step = 5 * 10 ** (places - 2) if places >= 2 else 1  # 0.05 rupee
            if token & 0xFF == 3:
                step = 25_000  # CDS: 0.0025 rupee in 10^-7 units
            self._quotes[token] = _Quote(places=places, price=units, close=units, step=step,
                                         oi=self._rng.randint(1000, 100000) * 25)  # fmt: skip

    # --- ticking ---------------------------------------------------------------------------

    def _packet(self, token: int, mode: str, now: int) -> bytes:
        quote = self._quotes[token]
        quote.move(self._rng)
        last, step, rng = quote.price, quote.step, self._rng
        depth: list[int] = []
        for side in (-1, 1):
            for level in range(1, 6):
                depth += [rng.randint(1, 40) * 25, last + side * step * level, rng.randint(1, 9)]
        oi_day_low = int(time.time() * 1000) & 0xFFFFFFFF if self.stamp_send_time else quote.oi
        return pack_units(
            mode, token, last=last, close=quote.close, open_=quote.close, high=last + step * 10,
            low=last - step * 10, average=last, volume=quote.volume, last_quantity=25,
            buy_quantity=quote.volume // 3, sell_quantity=quote.volume // 4, last_trade_time=now, oi=quote.oi,
            oi_day_high=quote.oi, oi_day_low=oi_day_low, exchange_timestamp=now, depth=depth,
        )  # fmt: skip

    async def _tick_loop(self) -> None:
        """Every instrument ticks once per ``interval``, spread over ``SLICES`` steps as a
        real exchange feed is (not one burst a second); idle connections get heartbeats."""
        step_seconds = self.interval / SLICES
        next_at = time.monotonic()
        step = 0
        while True:
            next_at += step_seconds
            now = int(time.time())
            for client in list(self._clients):
                try:
                    if not client.modes:
                        if step == 0:
                            await client.connection.send(HEARTBEAT)
                        continue
                    items = [(t, m) for i, (t, m) in enumerate(client.modes.items())
                             if i % SLICES == step and t in self._quotes]  # fmt: skip
                    for start in range(0, len(items), PACKETS_PER_FRAME):
                        chunk = items[start : start + PACKETS_PER_FRAME]
                        await client.connection.send(build_frame([self._packet(t, m, now) for t, m in chunk]))
                        self.frames_sent += 1
                except ConnectionClosed:
                    self._clients.discard(client)
            step = (step + 1) % SLICES
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))

    async def send_order_update(self, data: dict[str, Any]) -> None:
        """Send an order postback to every client, as Kite does on the ticker."""
        for client in list(self._clients):
            with contextlib.suppress(ConnectionClosed):
                await client.connection.send(json.dumps({"type": "order", "data": data}))
