"""Ticks out: coalesce, publish to the dashboards, store the latest per instrument.

The feed hands every parsed tick to ``TickPublisher.add``; only the latest tick of each
instrument is kept. Every ``INGESTION_PUBLISH_INTERVAL`` seconds ``flush`` publishes
those to the channel layer group ``ticks`` in batches of ``MESSAGE_TICKS`` (never one
message per tick: channels-redis costs a round trip per ``group_send`` and drops past a
channel's capacity), then hands them to the latest-tick store (``latest.py``) in the
background, stamped with the time the oldest of them was received.

When the feed stops streaming instruments, ``remove(tokens)`` drops what is pending for
them, announces ``{"type": "ticks.removed", "tokens": [...]}`` on the group before any
later batch, and discards their latest ticks (after any write of them in flight).

Failures are counted, logged without flooding (``LoopHealth``) and retried: a batch that
could not be published goes out with the next one (unless a newer tick replaced it), a
store that failed is retried with backoff. Every channel-layer call has a time limit, so
a Redis that hangs shows as failures instead of a publisher that silently stops.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

from channels.layers import get_channel_layer

from ingestion.latest import latest_discard, latest_store
from ingestion.status import LoopHealth
from ingestion.ticks import dumps, present
from tradingportal import metrics

logger = logging.getLogger(__name__)

TICKS_GROUP = "ticks"
MESSAGE_TICKS = 250
# A channel-layer call taking longer than this counts as failed (Redis hung or away).
LAYER_TIMEOUT = 5.0
STORE_RETRY_MIN, STORE_RETRY_MAX = 0.5, 10.0

Db = Callable[..., Any]


class TickPublisher:
    def __init__(self, *, meta: Callable[[], dict[int, dict[str, Any]]], db: Db) -> None:
        self._meta = meta  # the engine's current metadata by token
        self._db = db
        self._layer = get_channel_layer()
        self.pending: dict[int, dict[str, Any]] = {}
        self._pending_since: float | None = None  # when the oldest pending tick arrived (epoch s)
        self._unsent: dict[int, str] = {}  # presented ticks whose publish failed
        self._removed: set[int] = set()  # tokens to announce as no longer streamed
        self._to_store: dict[int, str] = {}
        self._to_store_since: float | None = None
        self._to_discard: set[int] = set()
        self._writer: asyncio.Task[None] | None = None
        self.messages_published = 0
        # Called with each flush's presented ticks ({token: tick}); the engine hands them to
        # the paper broker's matcher.
        self.on_presented: Callable[[dict[int, dict[str, Any]]], None] | None = None
        self.publish_health = LoopHealth(logger, "publishing ticks to the channel layer")
        self.store_health = LoopHealth(logger, "storing the latest ticks")

    @property
    def layer(self) -> Any:
        return self._layer

    def add(self, ticks: list[dict[str, Any]]) -> None:
        pending, meta = self.pending, self._meta()
        before = len(pending)
        for tick in ticks:
            token = tick["instrument_token"]
            if token in meta:
                pending[token] = tick
        if self._pending_since is None and len(pending) != before:
            self._pending_since = time.time()

    def remove(self, tokens: Iterable[int]) -> None:
        """The feed no longer streams ``tokens``: tell the dashboards, forget their latest ticks."""
        tokens = set(tokens)
        if not tokens:
            return
        for token in tokens:
            self.pending.pop(token, None)
            self._unsent.pop(token, None)
            self._to_store.pop(token, None)
        self._removed |= tokens
        self._to_discard |= tokens
        self._start_writer()

    async def run(self, stop: asyncio.Event, interval: float) -> None:
        next_at = time.monotonic()
        while not stop.is_set():
            next_at += interval
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            await self.flush()
            if time.monotonic() > next_at + interval:
                next_at = time.monotonic()  # fell behind: do not try to catch up in a burst

    async def flush(self) -> None:
        """Publish the ticks that arrived since the last flush (the latest per instrument)
        to the dashboards first, then hand them to the cache writer in the background."""
        fresh: dict[int, str] = {}
        if self.pending:
            batch, self.pending = self.pending, {}
            since, self._pending_since = self._pending_since, None
            meta = self._meta()
            # Serialised once here, not once per browser: the message carries [token, JSON]
            # pairs that consumers merge by token and splice into their frames.
            presented = {token: present(tick, meta.get(token, {})) for token, tick in batch.items()}
            fresh = {token: dumps(tick) for token, tick in presented.items()}
            if self.on_presented is not None:
                self.on_presented(presented)
            self._queue_store(fresh, since if since is not None else time.time())
        removed, self._removed = self._removed, set()
        if self._layer is None:  # no channel layer configured: nobody to tell
            return
        outgoing, self._unsent = {**self._unsent, **fresh}, {}
        if not outgoing and not removed:
            return
        failure: BaseException | None = None
        if removed:
            # Before any batch: a row removed after a later tick would vanish while streaming.
            try:
                await self._send({"type": "ticks.removed", "tokens": sorted(removed)})
            except Exception as exc:  # noqa: BLE001 - announced again with the next flush
                failure = exc
                self._removed |= removed - set(self._meta())
        pairs = list(outgoing.items())
        chunks = [pairs[i : i + MESSAGE_TICKS] for i in range(0, len(pairs), MESSAGE_TICKS)]
        results = await asyncio.gather(
            *(self._send({"type": "ticks.batch", "ticks": chunk}) for chunk in chunks), return_exceptions=True
        )
        for chunk, result in zip(chunks, results, strict=True):
            if isinstance(result, BaseException):
                failure = failure or result
                for token, text in chunk:
                    self._unsent.setdefault(token, text)  # a newer tick, if one came, goes instead
            else:
                self.messages_published += 1
        metrics.ticks_published(chunks, results)
        if failure is not None:
            self.publish_health.failed(failure)
        else:
            self.publish_health.succeeded()

    async def _send(self, message: dict[str, Any]) -> None:
        await asyncio.wait_for(self._layer.group_send(TICKS_GROUP, message), LAYER_TIMEOUT)

    # --- the latest-tick store ---------------------------------------------------------------

    def _queue_store(self, ticks: dict[int, str], since: float) -> None:
        self._to_store.update(ticks)
        if self._to_store_since is None or since < self._to_store_since:
            self._to_store_since = since
        self._start_writer()

    def _start_writer(self) -> None:
        if self._writer is None or self._writer.done():
            self._writer = asyncio.get_running_loop().create_task(self._write(), name="latest-ticks-writer")

    async def _write(self) -> None:
        """Write (and discard) latest ticks until nothing is left, in order: a discard
        always follows any write of the same token that was already under way."""
        delay = STORE_RETRY_MIN
        while self._to_store or self._to_discard:
            discard, self._to_discard = self._to_discard, set()
            batch, self._to_store = self._to_store, {}
            since, self._to_store_since = self._to_store_since, None
            try:
                if discard:
                    await self._db(latest_discard, discard)
                if batch:
                    # Stamped with the oldest receive time in the batch: an age is never
                    # under-stated.
                    received_at = datetime.fromtimestamp(since or time.time(), tz=UTC)
                    await self._db(functools.partial(latest_store, batch, received_at=received_at))
            except Exception as exc:  # noqa: BLE001 - retried below; the status shows it
                self.store_health.failed(exc)
                self._to_discard = discard | self._to_discard
                self._to_store = {**batch, **self._to_store}
                if since is not None and (self._to_store_since is None or since < self._to_store_since):
                    self._to_store_since = since
                await asyncio.sleep(delay)
                delay = min(delay * 2, STORE_RETRY_MAX)
            else:
                self.store_health.succeeded()
                delay = STORE_RETRY_MIN

    async def drain(self, timeout: float = 5) -> None:
        """Publish what is pending and wait for the cache writer (on shutdown)."""
        try:
            await self.flush()
        except Exception:  # noqa: BLE001 - shutting down; the next run publishes afresh
            logger.warning("the last ticks were not published before stopping", exc_info=True)
        if self._writer is not None:
            try:
                await asyncio.wait_for(self._writer, timeout)
            except Exception:  # noqa: BLE001 - shutting down; the next run rewrites the cache
                logger.warning("the latest ticks were not all stored before stopping")
