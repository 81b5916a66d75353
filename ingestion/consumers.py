"""``/ws/ticks/``: live ticks for logged-in users.

The ingestion publishes coalesced batches to the ``ticks`` group. Each connection keeps
only the latest tick per instrument until its socket can take more, so a slow browser
never slows the others and never piles up memory: it skips to the latest state.

Client messages (JSON text): ``{"action": "subscribe", "tokens": [256265, ...]}``
narrows the stream to those instruments; ``{"action": "subscribe", "preset": "nifty"}``
to a preset's active instruments (``"watchlist"`` is accepted as an alias of
``"preset"``); ``{"action": "subscribe", "tokens": null}`` widens it to everything
again. Server messages: ``{"type": "ticks", "ticks": [...]}``, ``{"type": "status",
"status": {...}}`` (the feed's heartbeat, with ``market``: each exchange open or closed, why,
and its next open, by the server's clock), ``{"type": "removed", "tokens": [...]}`` (the
feed stopped streaming those instruments: drop their rows), ``{"type": "subscribed",
"tokens": [...] | null}`` acknowledging a selection (ticks after it honour it) and
``{"type": "error", "message": "..."}``.

Limits: a client message longer than ``MAX_MESSAGE_CHARS`` is answered with close code
1009, one nested deeper than ``MAX_NESTING`` with 1008 (both checked before parsing);
a user holding ``WS_MAX_CONNECTIONS_PER_USER`` sockets gets an error and close code
1008 on the next one. Whatever ends a socket (the client, a limit, a bug, the channel
layer failing), it leaves the group, stops its sender and gives its slot back; a failure
closes with 1011, never by dropping the connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import time
from typing import Any

from asgiref.sync import sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings

from ingestion.latest import latest_ticks
from ingestion.publisher import LAYER_TIMEOUT, TICKS_GROUP
from ingestion.sockets import RENEW_SECONDS, socket_claim, socket_release, socket_renew
from ingestion.status import feed_status as read_feed_status
from oms.broadcast import OMS_GROUP
from tradingportal import metrics
from tradingportal.logging import RepeatedFailure

logger = logging.getLogger(__name__)
MAX_TOKENS = 10000
# A subscription to MAX_TOKENS tokens is about 80,000 characters.
MAX_MESSAGE_CHARS = 128 * 1024
# {"action": "subscribe", "tokens": [...]} nests 2 deep.
MAX_NESTING = 4
CLOSE_POLICY, CLOSE_TOO_BIG, CLOSE_ERROR = 1008, 1009, 1011

# Shared by every socket of this process: a Redis outage fails them all at once; logged
# once with a traceback, then at most once a minute with a count.
_socket_failure = RepeatedFailure(logger, "a dashboard socket")
_snapshot_failure = RepeatedFailure(logger, "sending the snapshot of latest ticks")
_slot_failure = RepeatedFailure(logger, "counting open sockets per user")
_market_failure = RepeatedFailure(logger, "reading the market calendar for the dashboard")
# The market status rides on every status frame; computed at most once a second per process.
MARKET_EVERY_SECONDS = 1.0
_market: dict[str, Any] = {"at": -MARKET_EVERY_SECONDS, "status": None}

_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"?', re.S)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")


def nests_deeper(text: str, limit: int) -> bool:
    """Whether JSON ``text`` nests arrays and objects deeper than ``limit`` (brackets in
    strings do not count), found without parsing it: ``json.loads`` recurses per level."""
    depth = 0
    for char in _NOT_BRACKET.sub("", _STRING.sub("", text)):
        if char in "[{":
            depth += 1
            if depth > limit:
                return True
        else:
            depth -= 1
    return False


def _snapshot(tokens: list[int] | None) -> list[dict[str, Any]]:
    """The latest tick of each selected instrument that is active (all active ones for
    ``None``): never the last price of one the feed no longer streams."""
    from instruments.selectors import active_instrument_tokens

    active = active_instrument_tokens()
    wanted = active if tokens is None else sorted(set(tokens).intersection(active))
    return list(latest_ticks(wanted).values())


async def _with_market(status: dict[str, Any]) -> dict[str, Any]:
    """The feed's status with ``market``: whether each exchange trades now, and if not why
    (weekend, the holiday's name, before the open, after the close) and when it opens (the
    dashboard shows "market closed" instead of "stale" then). Without it when the calendar
    cannot be read."""
    from markets.calendar import markets_status

    now = time.monotonic()
    if now - _market["at"] >= MARKET_EVERY_SECONDS:
        _market["at"] = now
        try:
            _market["status"] = await sync_to_async(markets_status)()
        except Exception as exc:  # noqa: BLE001 - the ticks and the feed's state still go out
            _market_failure.failed(exc)
            _market["status"] = None
        else:
            _market_failure.succeeded()
    return {**status, "market": _market["status"]} if _market["status"] is not None else status


def _preset_tokens(name: str) -> list[int] | None:
    from instruments.models import Instrument
    from instruments.presets import PRESETS

    if name not in PRESETS:
        return None
    rows = Instrument.objects.filter(PRESETS[name](), is_active=True, is_listed=True, source="kite")
    return [token for token in rows.values_list("instrument_token", flat=True) if token is not None]


class TicksConsumer(AsyncWebsocketConsumer):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.tokens: set[int] | None = None
        self.pending: dict[int, str] = {}  # token -> its latest tick, as JSON
        self.removed: set[int] = set()  # tokens to tell the client it should drop
        self.oms_dirty = False  # an order or position changed since the last frame
        self.status: dict[str, Any] | None = None
        self.wakeup = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._joined = self._claimed = self._accepted = self._closed = False
        self._cleaned = False
        self._user_id = 0  # set on connect, before any slot is claimed

    # --- lifecycle -----------------------------------------------------------------------

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        except Exception as exc:  # noqa: BLE001 - logged (rarely), then closed properly
            # Without this the server drops the socket with no close frame.
            _socket_failure.failed(exc)
            if not self._closed:  # before the handshake completed, this refuses it (HTTP 403)
                with contextlib.suppress(Exception):
                    await self.close(code=CLOSE_ERROR if self._accepted else None)
        finally:
            await self._cleanup()

    async def accept(self, subprotocol: str | None = None, headers: Any = None) -> None:
        await super().accept(subprotocol, headers)
        self._accepted = True

    async def close(self, code: int | bool | None = None, reason: str | None = None) -> None:
        self._closed = True
        await super().close(code, reason)

    async def connect(self) -> None:
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close(code=4401)  # before accept: the handshake is refused (403)
            return
        self._user_id = user.pk
        limit = settings.WS_MAX_CONNECTIONS_PER_USER
        if not await self._claim(limit):
            await self.accept()
            await self._error(f"too many open live-data connections: at most {limit} per user; close some")
            await self.close(code=CLOSE_POLICY, reason="too many connections for this user")
            return
        await self.channel_layer.group_add(TICKS_GROUP, self.channel_name)
        await self.channel_layer.group_add(OMS_GROUP, self.channel_name)
        self._joined = True
        metrics.WEBSOCKET_CLIENTS.inc()  # given back by _cleanup, whatever ends the socket
        await self.accept()
        self._start(self._send_loop(), "send")
        self._start(self._renew_loop(), "renew")
        _socket_failure.succeeded()
        try:
            status = await sync_to_async(read_feed_status)()
            if status:
                self._queue_status(await _with_market(status))
            await self._queue_snapshot()
        except Exception as exc:  # noqa: BLE001 - live ticks still flow; the snapshot is a courtesy
            _snapshot_failure.failed(exc)
        else:
            _snapshot_failure.succeeded()

    async def _claim(self, limit: int) -> bool:
        try:
            claimed = await sync_to_async(socket_claim, thread_sensitive=False)(
                user_id=self._user_id, socket_id=self.channel_name, limit=limit
            )
        except Exception as exc:  # noqa: BLE001 - an unreachable counter must not lock users out
            _slot_failure.failed(exc)
            return True
        _slot_failure.succeeded()
        self._claimed = claimed
        return claimed

    async def disconnect(self, code: int) -> None:
        await self._cleanup()

    async def _cleanup(self) -> None:
        """Leave the group, stop the tasks, give the slot back; once, whatever happened."""
        if self._cleaned:
            return
        self._cleaned = True
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._joined:
            metrics.WEBSOCKET_CLIENTS.dec()
            for group in (TICKS_GROUP, OMS_GROUP):
                try:
                    await asyncio.wait_for(
                        self.channel_layer.group_discard(group, self.channel_name), LAYER_TIMEOUT
                    )
                except Exception:  # noqa: BLE001 - channels-redis expires group members by itself
                    logger.warning("could not leave the %s group", group, exc_info=True)
        if self._claimed:
            try:
                await sync_to_async(socket_release, thread_sensitive=False)(
                    user_id=self._user_id, socket_id=self.channel_name
                )
            except Exception as exc:  # noqa: BLE001 - the lease lapses by itself
                _slot_failure.failed(exc)

    def _start(self, coroutine: Any, name: str) -> None:
        task = asyncio.get_running_loop().create_task(coroutine, name=f"ws-ticks-{name}")
        task.add_done_callback(self._task_done)
        self._tasks.append(task)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            # Most often the client went away mid-send; the disconnect cleans up.
            logger.info("dashboard socket task %s ended: %r", task.get_name(), task.exception())

    async def _renew_loop(self) -> None:
        while True:
            await asyncio.sleep(RENEW_SECONDS)
            if not self._claimed:
                continue
            try:
                await sync_to_async(socket_renew, thread_sensitive=False)(
                    user_id=self._user_id, socket_id=self.channel_name
                )
            except Exception as exc:  # noqa: BLE001 - tried again at the next renewal
                _slot_failure.failed(exc)

    # --- from the client -------------------------------------------------------------------

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if text_data is None:
            await self._error("send JSON text frames, not binary")
            return
        if len(text_data) > MAX_MESSAGE_CHARS:
            await self._error(f"message too long: at most {MAX_MESSAGE_CHARS} characters")
            await self.close(code=CLOSE_TOO_BIG, reason="message too big")
            return
        if nests_deeper(text_data, MAX_NESTING):
            await self._error(f"message nested too deep: at most {MAX_NESTING} levels")
            await self.close(code=CLOSE_POLICY, reason="message nested too deep")
            return
        try:
            message = json.loads(text_data)
        except (ValueError, RecursionError):
            await self._error("messages must be JSON")
            return
        if not isinstance(message, dict) or message.get("action") != "subscribe":
            await self._error('unknown message; send {"action": "subscribe", "tokens": [...]}')
            return
        previous = self.tokens
        preset = message.get("preset", message.get("watchlist"))
        if preset is not None:
            tokens = await sync_to_async(_preset_tokens)(str(preset))
            if tokens is None:
                await self._error(f"unknown preset {str(preset)[:100]!r}")
                return
            self.tokens = set(tokens)
        elif message.get("tokens") is None:
            self.tokens = None
        else:
            raw = message["tokens"]
            if not isinstance(raw, list) or len(raw) > MAX_TOKENS or not all(type(t) is int for t in raw):
                await self._error(f"tokens must be a list of at most {MAX_TOKENS} integers, or null")
                return
            self.tokens = set(raw)
        if self.tokens is not None:
            self.pending = {t: text for t, text in self.pending.items() if t in self.tokens}
        # Acknowledge first: every tick after this message honours the new selection.
        shown = sorted(self.tokens) if self.tokens is not None else None
        await self.send(text_data=json.dumps({"type": "subscribed", "tokens": shown}))
        # Only instruments new to the selection need their latest state: the others are
        # already live here, and the cache may be a moment older than what was sent.
        if previous is not None:
            await self._queue_snapshot(exclude=previous)

    async def _error(self, message: str) -> None:
        await self.send(text_data=json.dumps({"type": "error", "message": message}))

    async def _queue_snapshot(self, exclude: set[int] | None = None) -> None:
        """Queue the cached latest tick of each selected instrument not in ``exclude``."""
        tokens = sorted(self.tokens) if self.tokens is not None else None
        for tick in await sync_to_async(_snapshot)(tokens):
            token = tick["instrument_token"]
            if exclude is None or token not in exclude:
                self.pending[token] = json.dumps(tick, separators=(",", ":"))
        self.wakeup.set()

    # --- from the channel layer ------------------------------------------------------------

    async def ticks_batch(self, event: dict[str, Any]) -> None:
        """``event["ticks"]``: [token, tick as JSON] pairs, serialised once by the ingestion."""
        tokens, pending = self.tokens, self.pending
        for token, text in event["ticks"]:
            if tokens is None or token in tokens:
                pending[token] = text
        if pending:
            self.wakeup.set()

    async def ticks_removed(self, event: dict[str, Any]) -> None:
        """The feed stopped streaming ``event["tokens"]``: their rows must go."""
        tokens = {t for t in event["tokens"] if self.tokens is None or t in self.tokens}
        if not tokens:
            return
        for token in tokens:
            self.pending.pop(token, None)
        self.removed |= tokens
        self.wakeup.set()

    async def feed_status(self, event: dict[str, Any]) -> None:
        self._queue_status(await _with_market(event["status"]))

    async def oms_changed(self, event: dict[str, Any]) -> None:
        """An order or position changed: the dashboard's panel re-reads the API (the frame
        says only that, never whose order, so a user sees nothing the API would not show)."""
        self.oms_dirty = True
        self.wakeup.set()

    def _queue_status(self, status: dict[str, Any]) -> None:
        self.status = status
        self.wakeup.set()

    async def _send_loop(self) -> None:
        while True:
            await self.wakeup.wait()
            self.wakeup.clear()
            if self.status is not None:
                status, self.status = self.status, None
                await self.send(text_data=json.dumps({"type": "status", "status": status}))
            if self.oms_dirty:
                self.oms_dirty = False
                await self.send(text_data='{"type":"oms"}')
            if self.removed:
                removed, self.removed = self.removed, set()
                await self.send(text_data=json.dumps({"type": "removed", "tokens": sorted(removed)}))
            if self.pending:
                ticks, self.pending = self.pending, {}
                await self.send(text_data='{"type":"ticks","ticks":[' + ",".join(ticks.values()) + "]}")
