"""``/ws/ticks/``: live ticks for logged-in users.

The ingestion publishes coalesced batches to the ``ticks`` group. Each connection keeps
only the latest tick per instrument until its socket can take more, so a slow browser
never slows the others and never piles up memory: it skips to the latest state.

Client messages (JSON): ``{"action": "subscribe", "tokens": [256265, ...]}`` narrows
the stream to those instruments; ``{"action": "subscribe", "watchlist": "nifty"}`` to a
preset's active instruments; ``{"action": "subscribe", "tokens": null}`` widens it to
everything again. Server messages: ``{"type": "ticks", "ticks": [...]}`` and
``{"type": "status", "status": {...}}`` (the feed's heartbeat), and
``{"type": "subscribed", "tokens": [...] | null}`` acknowledging a selection: ticks after
it honour the new selection.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Any

from asgiref.sync import sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer

from ingestion.latest import latest_ticks
from ingestion.publisher import TICKS_GROUP
from ingestion.status import feed_status as read_feed_status

logger = logging.getLogger(__name__)
MAX_TOKENS = 10000


def _snapshot(tokens: list[int] | None) -> list[dict[str, Any]]:
    from instruments.selectors import active_instrument_tokens

    wanted = tokens if tokens is not None else active_instrument_tokens()
    return list(latest_ticks(wanted).values())


def _watchlist_tokens(name: str) -> list[int] | None:
    from instruments.models import Instrument
    from instruments.presets import PRESETS

    if name not in PRESETS:
        return None
    rows = Instrument.objects.filter(PRESETS[name](), is_active=True, is_listed=True, source="kite")
    return [token for token in rows.values_list("instrument_token", flat=True) if token is not None]


class TicksConsumer(AsyncWebsocketConsumer):
    async def connect(self) -> None:
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close(code=4401)  # before accept: the handshake is refused (403)
            return
        self.tokens: set[int] | None = None
        self.pending: dict[int, str] = {}  # token -> its latest tick, as JSON
        self.status: dict[str, Any] | None = None
        self.wakeup = asyncio.Event()
        await self.channel_layer.group_add(TICKS_GROUP, self.channel_name)
        await self.accept()
        self.sender = asyncio.create_task(self._send_loop())
        try:
            status = await sync_to_async(read_feed_status)()
            if status:
                self._queue_status(status)
            await self._queue_snapshot()
        except Exception:  # noqa: BLE001 - live ticks still flow; the snapshot is a courtesy
            logger.exception("could not send the snapshot of latest ticks")

    async def disconnect(self, code: int) -> None:
        await self.channel_layer.group_discard(TICKS_GROUP, self.channel_name)
        sender = getattr(self, "sender", None)
        if sender is not None:
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await sender

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        try:
            message = json.loads(text_data or "")
        except ValueError:
            await self._error("messages must be JSON")
            return
        if not isinstance(message, dict) or message.get("action") != "subscribe":
            await self._error('unknown message; send {"action": "subscribe", "tokens": [...]}')
            return
        previous = self.tokens
        if "watchlist" in message:
            tokens = await sync_to_async(_watchlist_tokens)(str(message["watchlist"]))
            if tokens is None:
                await self._error(f"unknown watchlist {message['watchlist']!r}")
                return
            self.tokens = set(tokens)
        elif message.get("tokens") is None:
            self.tokens = None
        else:
            raw = message["tokens"]
            if not isinstance(raw, list) or len(raw) > MAX_TOKENS or not all(isinstance(t, int) for t in raw):
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

    async def feed_status(self, event: dict[str, Any]) -> None:
        self._queue_status(event["status"])

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
            if self.pending:
                ticks, self.pending = self.pending, {}
                await self.send(text_data='{"type":"ticks","ticks":[' + ",".join(ticks.values()) + "]}")
