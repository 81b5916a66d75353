"""The ingestion engine: follow the active set, hold the feed connections, publish ticks.

``ingestion_run(stop=...)`` runs until ``stop`` is set:

- reads the active, listed Kite instruments (``active_set.py``; stable order: id), caps
  them at the feed's capacity (saying so loudly when the set is larger), spreads them
  over up to ``KITE_TICKER_MAX_CONNECTIONS`` connections (``sharding.py``) and keeps each
  connection's subscription equal to its share, in each instrument's ``stream_mode``;
- follows changes to that set, whoever made them: on PostgreSQL a trigger NOTIFYs
  ``instruments_active`` and a re-read happens at once; elsewhere, and as a safety net,
  the set is re-read every ``INGESTION_POLL_SECONDS``;
- enriches every tick from the instrument metadata and publishes the latest per
  instrument in batches (``publisher.py``);
- writes a heartbeat (``status.py``) to the cache every second and publishes it to the
  dashboards;
- hands order updates from the ticker to the OMS.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import connection
from django.utils import timezone

from ingestion.active_set import NOTIFY_CHANNEL, active_set_listener, active_set_load
from ingestion.credentials import SIMULATOR_CREDENTIALS, kite_credentials
from ingestion.feed.client import FeedConnection, first_of
from ingestion.feed.simulator import KiteSimulator
from ingestion.publisher import TICKS_GROUP, TickPublisher
from ingestion.sharding import shard
from ingestion.simulator_seeds import simulator_seeds
from ingestion.status import status_store
from tradingportal.security import url_for_display

logger = logging.getLogger(__name__)


async def _sleep_unless(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)


def _close_db() -> None:
    connection.close()


def _order_update(data: dict[str, Any]) -> None:
    from oms.services import order_update_from_feed

    order_update_from_feed(data=data)


class IngestionEngine:
    def __init__(self, *, url: str, credentials: Callable[[], tuple[str, str]], feed: str) -> None:
        self.url = url
        self._credentials = credentials
        self.feed = feed
        self.per_connection = settings.KITE_TICKER_MAX_PER_CONNECTION
        self.max_connections = settings.KITE_TICKER_MAX_CONNECTIONS
        self.publish_interval = settings.INGESTION_PUBLISH_INTERVAL
        self.poll_seconds = settings.INGESTION_POLL_SECONDS
        self.connections: list[FeedConnection] = []
        self._tasks: list[asyncio.Task[None] | None] = []
        self._stops: list[asyncio.Event] = []
        self.meta: dict[int, dict[str, Any]] = {}
        self.active_total = 0
        self.overflow: list[int] = []
        self.ticks_total = 0
        self.last_tick_at: float | None = None
        self.started_at = timezone.now()
        self._reload = asyncio.Event()
        self._db = sync_to_async(lambda fn, *a: fn(*a), thread_sensitive=True)
        self.publisher = TickPublisher(meta=lambda: self.meta, db=self._db)
        self._rate = 0.0
        self._order_tasks: set[asyncio.Task[Any]] = set()
        self._token_mtime: float | None = None

    async def _credentials_async(self) -> tuple[str, str]:
        return await self._db(self._credentials)

    # --- lifecycle ---------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        logger.info("ingestion starting: feed=%s url=%s", self.feed, url_for_display(self.url))
        helpers = [
            asyncio.create_task(self._listen_loop(stop), name="listen"),
            asyncio.create_task(self._follow(stop), name="follow-active-set"),
            asyncio.create_task(self.publisher.run(stop, self.publish_interval), name="publish"),
            asyncio.create_task(self._status_loop(stop), name="status"),
        ]
        try:
            await stop.wait()
        finally:
            for event in self._stops:
                event.set()
            tasks = [t for t in self._tasks if t is not None]
            # Everything watches ``stop``: let each finish its own way (closing what it
            # opened) before cancelling what did not.
            await asyncio.wait(helpers + tasks, timeout=5)
            for task in helpers + tasks:
                task.cancel()
            for task in helpers + tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            if self._order_tasks:
                await asyncio.wait(self._order_tasks, timeout=5)
            await self.publisher.drain()
            with contextlib.suppress(Exception):
                await self._db(status_store, {**self.status(), "state": "stopped"})
            await self._db(_close_db)  # the worker thread's connection
            logger.info("ingestion stopped")

    # --- following the active set --------------------------------------------------------------

    async def _listen_loop(self, stop: asyncio.Event) -> None:
        """PostgreSQL: LISTEN for the trigger's notifications; re-LISTEN if the connection
        breaks (polling covers the gap), and re-read the set after every (re)start."""
        if connection.vendor != "postgresql":
            return
        loop = asyncio.get_running_loop()
        while not stop.is_set():
            try:
                listener = await self._db(active_set_listener)
            except Exception:  # noqa: BLE001 - polling still follows the set
                logger.exception("LISTEN %s failed; following the active set by polling", NOTIFY_CHANNEL)
                await _sleep_unless(stop, 30)
                continue
            fd = listener.fileno()  # kept: a closed connection cannot say which fd it had
            broken = asyncio.Event()

            def readable(listener: Any = listener, broken: asyncio.Event = broken) -> None:
                try:
                    listener.poll()
                except Exception:  # noqa: BLE001
                    broken.set()
                    return
                if listener.notifies:
                    listener.notifies.clear()
                    self._reload.set()

            loop.add_reader(fd, readable)
            self._reload.set()  # anything changed before LISTEN took effect
            try:
                await first_of(stop, broken)
            finally:
                loop.remove_reader(fd)
                with contextlib.suppress(Exception):
                    listener.close()
            if broken.is_set():
                logger.warning("the LISTEN connection broke; re-listening (polling meanwhile)")
                await _sleep_unless(stop, 5)

    async def _follow(self, stop: asyncio.Event) -> None:
        interval = self.poll_seconds if connection.vendor != "postgresql" else max(self.poll_seconds, 15.0)
        while not stop.is_set():
            self._reload.clear()  # before reading: a change during the read triggers another
            try:
                await self.reload()
            except Exception:  # noqa: BLE001 - keep streaming what we have
                logger.exception("could not read the active instruments; keeping the current subscriptions")
            self._wake_on_new_token()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(first_of(stop, self._reload), timeout=interval)
            await asyncio.sleep(0.05)  # let a burst of notifications settle

    def _wake_on_new_token(self) -> None:
        """A rewritten KITE_ACCESS_TOKEN_FILE retries refused connections at once."""
        path = settings.KITE_ACCESS_TOKEN_FILE
        if not path or self.feed != "kite":
            return
        try:
            mtime = os.stat(path).st_mtime
        except OSError:
            return
        if self._token_mtime is not None and mtime != self._token_mtime:
            logger.info("KITE_ACCESS_TOKEN_FILE changed; reconnecting refused feed connections")
            for feed_connection in self.connections:
                if feed_connection.state == "auth_failed":
                    feed_connection.wake()
        self._token_mtime = mtime

    async def reload(self) -> None:
        rows = await self._db(active_set_load)
        ordered = [(row["instrument_token"], row["stream_mode"]) for row in rows]
        current = [c.desired for c in self.connections]
        shards, overflow = shard(ordered, current=current, per_connection=self.per_connection,
                                 max_connections=self.max_connections)  # fmt: skip
        if len(overflow) != len(self.overflow):
            if overflow:
                logger.error(
                    "%s active instruments exceed the feed's capacity of %s (%s x %s): streaming the first %s, "
                    "not %s others. Deactivate some in the admin.", len(ordered), self.capacity,
                    self.max_connections, self.per_connection, self.capacity, len(overflow),
                )  # fmt: skip
            else:
                logger.info("the active set fits the feed again (%s instruments)", len(ordered))
        self.active_total, self.overflow = len(ordered), overflow
        streamed = {t for s in shards for t in s}
        self.meta = {row["instrument_token"]: row for row in rows if row["instrument_token"] in streamed}
        for index, modes in enumerate(shards):
            self._ensure_connection(index).set_desired(modes)
        for index in range(len(shards), len(self.connections)):
            # Kept open with nothing subscribed (heartbeats only): ready when the set grows.
            self.connections[index].set_desired({})

    @property
    def capacity(self) -> int:
        return self.per_connection * self.max_connections

    def _ensure_connection(self, index: int) -> FeedConnection:
        while len(self.connections) <= index:
            self.connections.append(FeedConnection(
                index=len(self.connections), url=self.url, credentials=self._credentials_async,
                on_ticks=self._on_ticks, on_text=self._on_text, stale_after=settings.FEED_STALE_SECONDS,
                depth_levels=1,  # the best bid and ask are all the dashboard and the OMS read
            ))  # fmt: skip
            self._tasks.append(None)
            self._stops.append(asyncio.Event())
        task = self._tasks[index]
        if task is None or task.done():
            self._stops[index] = asyncio.Event()
            self._tasks[index] = asyncio.create_task(self.connections[index].run(self._stops[index]),
                                                     name=f"feed-connection-{index}")  # fmt: skip
        return self.connections[index]

    # --- ticks in ---------------------------------------------------------------------------

    def _on_ticks(self, ticks: list[dict[str, Any]]) -> None:
        self.publisher.add(ticks)
        self.ticks_total += len(ticks)
        self.last_tick_at = time.monotonic()

    def _on_text(self, payload: dict[str, Any]) -> None:
        if payload.get("type") == "order" and isinstance(payload.get("data"), dict):
            task = asyncio.get_running_loop().create_task(self._db(_order_update, payload["data"]))
            self._order_tasks.add(task)
            task.add_done_callback(self._order_done)

    def _order_done(self, task: asyncio.Task[Any]) -> None:
        self._order_tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("the OMS could not take an order update", exc_info=task.exception())

    # --- health ------------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        now = time.monotonic()
        connections = [
            c.status() for c in self.connections if c.desired or c.state not in ("idle", "stopped")
        ]
        states = {c["state"] for c in connections}
        if not connections:
            state = "idle"
        elif states == {"connected"}:
            state = "connected"
        elif "auth_failed" in states:
            state = "auth_failed"
        elif "connected" in states:
            state = "degraded"
        else:
            state = "disconnected"
        return {
            "feed": self.feed,
            "url": url_for_display(self.url),
            "state": state,
            "connections": connections,
            "active": self.active_total,
            "subscribed": sum(c["subscribed"] for c in connections),
            "capacity": self.capacity,
            "over_limit": len(self.overflow),
            "ticks_per_second": self._rate,
            "ticks_total": self.ticks_total,
            "messages_published": self.publisher.messages_published,
            "last_tick_age": round(now - self.last_tick_at, 1) if self.last_tick_at else None,
            "reconnects": sum(c.reconnects for c in self.connections),
            "error": next((c["error"] for c in connections if c["error"]), ""),
            "pid": os.getpid(),
            "started_at": self.started_at.isoformat(),
            "updated_at": timezone.now().isoformat(),
        }

    async def _status_loop(self, stop: asyncio.Event) -> None:
        last_total, last_at = self.ticks_total, time.monotonic()
        layer = self.publisher.layer
        while not stop.is_set():
            await asyncio.sleep(1.0)
            now = time.monotonic()
            self._rate = round((self.ticks_total - last_total) / max(now - last_at, 1e-6), 1)
            last_total, last_at = self.ticks_total, now
            status = self.status()
            try:
                await self._db(status_store, status)
                if layer is not None:
                    await layer.group_send(TICKS_GROUP, {"type": "feed.status", "status": status})
            except Exception:  # noqa: BLE001
                logger.warning("could not publish the feed status", exc_info=True)


async def ingestion_run(
    *, stop: asyncio.Event, simulate: bool | None = None, simulator_port: int = 0
) -> None:
    """Run the ingestion until ``stop``; with ``simulate``, against the built-in simulator."""
    if simulate is None:
        simulate = settings.INGESTION_SIMULATE
    simulator: KiteSimulator | None = None
    if simulate:
        simulator = await KiteSimulator(
            port=simulator_port, api_key=SIMULATOR_CREDENTIALS[0], access_token=SIMULATOR_CREDENTIALS[1],
            price_lookup=sync_to_async(simulator_seeds, thread_sensitive=True),
        ).start()  # fmt: skip
        engine = IngestionEngine(
            url=simulator.url, credentials=lambda: SIMULATOR_CREDENTIALS, feed="simulator"
        )
    else:
        engine = IngestionEngine(url=settings.KITE_TICKER_URL, credentials=kite_credentials, feed="kite")
    try:
        await engine.run(stop)
    finally:
        if simulator is not None:
            await simulator.stop()
