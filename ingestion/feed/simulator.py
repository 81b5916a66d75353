"""A built-in Kite ticker: a real websocket server on loopback that speaks Kite's protocol.

Clients connect exactly as to Kite (``?api_key=...&access_token=...``), send JSON
``subscribe``/``unsubscribe``/``mode`` messages and receive binary frames: LTP, quote and
full packets (index packets for INDICES tokens, currency prices in 10^-7 rupee), and a
1-byte heartbeat every second when there is nothing else to send. When
``api_key``/``access_token`` are configured, other credentials are refused at the
handshake with HTTP 403, as Kite does (``refused`` counts them per token); ``accepts``
(a test's predicate, e.g. the tokens a fake Kite REST server handed out) decides instead
when given. ``rollover()`` plays Kite's morning: from then on only the new token (or what
``accepts`` accepts now) is accepted, and the connections made with any other are closed.

Prices come from ``simulated_market.py``: spots walk from their last known price,
futures and options are priced off their underlying, and every packet's OHLC is
consistent. ``price_lookup(tokens)`` says where each instrument starts: a ``Seed`` per
token (``ingestion.simulator_seeds`` reads them from the database), or simply its last
price as a ``Decimal``; tokens it does not know start from a default.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from ingestion.feed.protocol import HEARTBEAT, build_frame, pack_units
from ingestion.feed.simulated_market import Seed, SimulatedMarket
from tradingportal.logging import RepeatedFailure

logger = logging.getLogger(__name__)

MAX_PER_CONNECTION = 3000
PACKETS_PER_FRAME = 500
SLICES = 10
PriceLookup = Callable[[list[int]], Awaitable[Mapping[int, Seed | Decimal]]]


@dataclass(eq=False)
class _Client:
    connection: ServerConnection
    access_token: str = ""
    modes: dict[int, str] = field(default_factory=dict)


class KiteSimulator:
    def __init__(self, *, host: str = "127.0.0.1", port: int = 0, api_key: str = "", access_token: str = "",
                 interval: float = 1.0, price_lookup: PriceLookup | None = None, seed: int | None = None,
                 stamp_send_time: bool = False,
                 accepts: Callable[[str], bool] | None = None) -> None:  # fmt: skip
        self.host, self.port = host, port
        self.api_key, self.access_token = api_key, access_token
        self.accepts = accepts
        self.interval = interval
        self.price_lookup = price_lookup
        self.stamp_send_time = stamp_send_time
        self._rng = random.Random(seed)
        self.market = SimulatedMarket(rng=self._rng, slices=SLICES)
        self._clients: set[_Client] = set()
        self._server: Server | None = None
        self._ticker: asyncio.Task[None] | None = None
        self.connections_total = 0
        self.frames_sent = 0
        self.received: list[dict[str, Any]] = []  # every client message, for tests and debugging
        self.refused: dict[str, int] = {}  # refused handshakes by access token, for tests

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

    async def rollover(self, *, access_token: str = "") -> None:
        """Kite's morning: accept only ``access_token`` from now on (with ``accepts``: what
        it accepts now), and close the connections made with any other token (a reconnect
        with it is refused)."""
        if access_token:
            self.access_token = access_token
        for client in list(self._clients):
            if not self._accepted(client.access_token):
                await client.connection.close(1000, "the access token expired")

    def _accepted(self, token: str) -> bool:
        if self.accepts is not None:
            return self.accepts(token)
        return not self.access_token or token == self.access_token

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
        if (self.api_key and key != self.api_key) or not self._accepted(token):
            self.refused[token] = self.refused.get(token, 0) + 1
            return connection.respond(HTTPStatus.FORBIDDEN, "Invalid api_key or access_token\n")
        return None

    async def _handle(self, connection: ServerConnection) -> None:
        assert connection.request is not None  # the handshake is done
        token = (parse_qs(urlsplit(connection.request.path).query).get("access_token") or [""])[0]
        client = _Client(connection, access_token=token)
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
        quotes = self.market.quotes
        missing = [t for t in tokens if t not in quotes]
        if not missing:
            return
        seeds: Mapping[int, Seed | Decimal] = {}
        if self.price_lookup:
            try:
                seeds = await self.price_lookup(missing)
            except Exception:  # noqa: BLE001 - a simulator without prices still ticks
                logger.exception("simulator could not read last prices")
        now = time.time()
        for token in missing:
            if token not in quotes:  # another subscription may have added it meanwhile
                self.market.add(token, seeds.get(token), now=now)

    # --- ticking ---------------------------------------------------------------------------

    def _packet(self, token: int, mode: str, now: int) -> bytes:
        quote = self.market.quotes[token]
        last, step, lot, rng = quote.last, quote.step, quote.lot, self._rng
        depth: list[int] = []
        if mode == "full":
            for side in (-1, 1):
                for level in range(1, 6):
                    price = last + side * step * level
                    if price > 0:
                        depth += [rng.randint(1, 40) * lot, price, rng.randint(1, 9)]
                    else:
                        depth += [0, 0, 0]  # no bid below one tick
        oi_day_low = int(time.time() * 1000) & 0xFFFFFFFF if self.stamp_send_time else quote.oi_low
        return pack_units(
            mode, token, last=last, close=quote.close, open_=quote.open, high=quote.high, low=quote.low,
            average=quote.average, volume=quote.volume, last_quantity=quote.last_quantity,
            buy_quantity=quote.volume // 3, sell_quantity=quote.volume // 4, last_trade_time=now, oi=quote.oi,
            oi_day_high=quote.oi_high, oi_day_low=oi_day_low, exchange_timestamp=now, depth=depth,
        )  # fmt: skip

    async def _tick_loop(self) -> None:
        """Every instrument ticks once per ``interval``, spread over ``SLICES`` steps as a
        real exchange feed is (not one burst a second); idle connections get heartbeats."""
        step_seconds = self.interval / SLICES
        next_at = time.monotonic()
        step = 0
        failures = RepeatedFailure(logger, "the simulator's tick loop")
        while True:
            next_at += step_seconds
            try:
                await self._tick_step(step)
            except Exception as exc:  # noqa: BLE001 - a simulator that stops ticking looks like a dead feed
                failures.failed(exc)
            else:
                failures.succeeded()
            step = (step + 1) % SLICES
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))

    async def _tick_step(self, step: int) -> None:
        clock = time.time()
        now = int(clock)
        quotes = self.market.quotes
        self.market.advance(step, clock)
        for client in list(self._clients):
            try:
                if not client.modes:
                    if step == 0:
                        await client.connection.send(HEARTBEAT)
                    continue
                items = [(t, m) for t, m in client.modes.items()
                         if (quote := quotes.get(t)) is not None and quote.slot == step]  # fmt: skip
                for start in range(0, len(items), PACKETS_PER_FRAME):
                    chunk = items[start : start + PACKETS_PER_FRAME]
                    await client.connection.send(build_frame([self._packet(t, m, now) for t, m in chunk]))
                    self.frames_sent += 1
            except ConnectionClosed:
                self._clients.discard(client)

    async def send_order_update(self, data: dict[str, Any]) -> None:
        """Send an order postback to every client, as Kite does on the ticker."""
        for client in list(self._clients):
            with contextlib.suppress(ConnectionClosed):
                await client.connection.send(json.dumps({"type": "order", "data": data}))
