"""Ticks out: coalesce, publish to the dashboards, store the latest per instrument.

The feed hands every parsed tick to ``TickPublisher.add``; only the latest tick of each
instrument is kept. Every ``INGESTION_PUBLISH_INTERVAL`` seconds ``flush`` publishes
those to the channel layer group ``ticks`` in batches of ``MESSAGE_TICKS`` (never one
message per tick: channels-redis costs a round trip per ``group_send`` and drops past a
channel's capacity), then hands them to the latest-tick store in the background.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from channels.layers import get_channel_layer

from ingestion.latest import latest_store
from ingestion.ticks import dumps, present

logger = logging.getLogger(__name__)

TICKS_GROUP = "ticks"
MESSAGE_TICKS = 250

Db = Callable[..., Any]


class TickPublisher:
    def __init__(self, *, meta: Callable[[], dict[int, dict[str, Any]]], db: Db) -> None:
        self._meta = meta  # the engine's current metadata by token
        self._db = db
        self._layer = get_channel_layer()
        self.pending: dict[int, dict[str, Any]] = {}
        self.messages_published = 0
        self._publish_errors = 0
        self._to_store: dict[int, str] = {}
        self._store_task: asyncio.Task[None] | None = None

    @property
    def layer(self) -> Any:
        return self._layer

    def add(self, ticks: list[dict[str, Any]]) -> None:
        pending, meta = self.pending, self._meta()
        for tick in ticks:
            token = tick["instrument_token"]
            if token in meta:
                pending[token] = tick

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
        if not self.pending:
            return
        batch, self.pending = self.pending, {}
        meta = self._meta()
        # Serialised once here, not once per browser: the message carries [token, JSON]
        # pairs that consumers merge by token and splice into their frames.
        pairs = [(token, dumps(present(tick, meta.get(token, {})))) for token, tick in batch.items()]
        self._to_store.update(pairs)
        if self._store_task is None or self._store_task.done():
            self._store_task = asyncio.create_task(self._store())
        if self._layer is None:
            return
        messages = [pairs[i : i + MESSAGE_TICKS] for i in range(0, len(pairs), MESSAGE_TICKS)]
        results = await asyncio.gather(
            *(
                self._layer.group_send(TICKS_GROUP, {"type": "ticks.batch", "ticks": ticks})
                for ticks in messages
            ),
            return_exceptions=True,
        )
        failures = [r for r in results if isinstance(r, BaseException)]
        self.messages_published += len(results) - len(failures)
        if failures:
            # The next batch carries the latest state anyway; say so without flooding the log.
            self._publish_errors += len(failures)
            if self._publish_errors == len(failures) or self._publish_errors % 1000 < len(failures):
                logger.error("publishing ticks to the channel layer failed (%s times): %r", self._publish_errors,
                             failures[0])  # fmt: skip
        else:
            self._publish_errors = 0

    async def _store(self) -> None:
        """Write the latest ticks to the cache until nothing is left to write."""
        while self._to_store:
            batch, self._to_store = self._to_store, {}
            try:
                await self._db(latest_store, batch)
            except Exception:  # noqa: BLE001
                logger.exception("could not store the latest ticks in the cache")

    async def drain(self, timeout: float = 5) -> None:
        """Publish what is pending and wait for the cache writer (on shutdown)."""
        await self.flush()
        if self._store_task is not None:
            try:
                await asyncio.wait_for(self._store_task, timeout)
            except Exception:  # noqa: BLE001 - shutting down; the next run rewrites the cache
                logger.warning("the latest ticks were not all stored before stopping")
