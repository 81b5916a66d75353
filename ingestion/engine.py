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
- on the Kite feed, follows the Kite session (``kitesession.store``), the one token source
  (``credentials.kite_credentials()``, read on every (re)connect): a token the ticker
  refuses (HTTP 403, the morning's rollover) is marked refused once (``token_refused``: the
  session shows "Kite login needed" and the desk is alerted) and is not sent again sooner
  than a minute later; a new session (a login at the portal, a rewritten
  ``KITE_ACCESS_TOKEN_FILE``) wakes the refused connections at once, so the feed streams
  again within seconds of the login, without a restart. It learns of the new session by
  NOTIFY ``kite_session`` on the LISTEN connection on PostgreSQL, and by reading
  ``session_version()`` every ``SESSION_POLL_SECONDS`` elsewhere (and, as a safety net,
  every ``LISTENING_POLL_SECONDS`` while LISTEN works);
- writes a heartbeat (``status.py``) to the cache every second and publishes it to the
  dashboards;
- hands order updates from the ticker to the OMS.

Each of those loops runs under a supervisor: one that raises (or returns while the feed
runs) is restarted with backoff, and every failure, inside a loop or of a whole loop, is
logged without flooding and counted in the heartbeat (``failures``, ``failing``), which
then says ``degraded`` rather than ``connected``: the heartbeat never claims health
that is not there.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import time
from collections.abc import Callable, Coroutine
from datetime import datetime
from typing import Any

from asgiref.sync import ThreadSensitiveContext, sync_to_async
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import DatabaseError, connection
from django.utils import timezone

from ingestion.active_set import NOTIFY_CHANNEL, active_set_listener, active_set_load
from ingestion.credentials import SIMULATOR_CREDENTIALS, kite_credentials
from ingestion.feed.client import CredentialsUnusable, FeedConnection, first_of
from ingestion.feed.simulator import KiteSimulator
from ingestion.latest import latest_tokens
from ingestion.publisher import LAYER_TIMEOUT, TICKS_GROUP, TickPublisher
from ingestion.sharding import shard
from ingestion.simulator_seeds import simulator_seeds
from ingestion.status import LoopHealth, status_store
from kitesession.store import SESSION_CHANNEL, session_version, token_refused
from tradingportal import metrics
from tradingportal.security import url_for_display

logger = logging.getLogger(__name__)

# A loop that died is restarted after this, doubling on each death in a row.
RESTART_MIN, RESTART_MAX = 0.5, 30.0
# A loop that ran this long before dying starts its backoff over.
RESTART_HEALTHY = 60.0
# A failed read of the active set is retried after this, doubling up to the poll interval.
RETRY_MIN = 0.1
# PostgreSQL: while LISTEN works, the set is also re-read at least this often.
LISTENING_POLL_SECONDS = 15.0
ALERT_CHECK_SECONDS = 30.0  # how often a feed that is down asks the alerts
# The Kite feed without LISTEN: how often the Kite session's version is read (a new login
# reaches the feed within this, plus a reconnect).
SESSION_POLL_SECONDS = 2.0


async def _sleep_unless(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)


Loop = Callable[[asyncio.Event], Coroutine[Any, Any, None]]


async def supervise(*, name: str, loop: Loop, stop: asyncio.Event, health: LoopHealth) -> None:
    """Run ``loop(stop)`` until ``stop``; whenever it raises or returns early, count the
    failure in ``health`` and restart it with backoff."""
    delay = RESTART_MIN
    while not stop.is_set():
        started = time.monotonic()
        try:
            await loop(stop)
        except Exception as exc:  # noqa: BLE001 - counted, logged, restarted
            health.failed(exc)
        else:
            if stop.is_set():
                return
            health.failed(RuntimeError(f"the {name} loop ended while the feed runs"))
        if time.monotonic() - started > RESTART_HEALTHY:
            delay = RESTART_MIN
        logger.warning("ingestion: restarting the %s loop in %.1fs", name, delay)
        await _sleep_unless(stop, delay)
        delay = min(delay * 2, RESTART_MAX)


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
        self._to_match: dict[int, dict[str, Any]] = {}
        self._down_since: datetime | None = None  # when the feed last stopped streaming
        self._next_alert_check = 0.0
        # "Kite login needed" was raised for this outage: once, not every ALERT_REPEAT_MINUTES.
        self._kite_login_alerted = False
        self.publisher.on_presented = self._to_match.update
        self._rate = 0.0
        self._order_tasks: set[asyncio.Task[Any]] = set()
        self._token_mtime: float | None = None
        self._streamed: set[int] = set()  # the tokens the feed was last told to stream
        self._pruned = False  # latest ticks of tokens not streamed at start are dropped once
        self._listening = False
        self.health: dict[str, LoopHealth] = {
            "publish": self.publisher.publish_health,
            "store": self.publisher.store_health,
            "status": LoopHealth(logger, "publishing the feed status"),
            "oms": LoopHealth(logger, "matching paper orders and monitoring risk"),
            "follow": LoopHealth(logger, "reading the active instruments"),
            "listen": LoopHealth(logger, f"LISTEN {NOTIFY_CHANNEL}"),
        }
        self._session_changed = asyncio.Event()
        if feed == "kite":
            self.health["session"] = LoopHealth(logger, "following the Kite session")

    async def _credentials_async(self) -> tuple[str, str]:
        try:
            return await self._db(self._credentials)
        except ImproperlyConfigured as exc:  # KITE_TOKEN_KEY cannot read the stored session
            raise CredentialsUnusable(str(exc)) from None

    async def _token_refused(self, token: str, detail: str) -> None:
        """The ticker refused ``token``: the session store marks it (once per token)."""
        await self._db(functools.partial(token_refused, token=token, detail=detail, source="ticker"))
        self._session_changed.set()  # the refusal is a change too: re-read the version now

    # --- lifecycle ---------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        logger.info("ingestion starting: feed=%s url=%s", self.feed, url_for_display(self.url))
        loops: dict[str, Loop] = {
            "follow": self._follow,
            "publish": lambda stop: self.publisher.run(stop, self.publish_interval),
            "status": self._status_loop,
            "oms": self._oms_loop,
        }
        if connection.vendor == "postgresql":
            loops["listen"] = self._listen_loop
        if self.feed == "kite":
            loops["session"] = self._session_loop
        helpers = [
            asyncio.create_task(
                supervise(name=name, loop=loop, stop=stop, health=self.health[name]), name=f"ingestion-{name}"
            )
            for name, loop in loops.items()
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
        """PostgreSQL: LISTEN for the trigger's notifications; re-LISTEN at once if the
        connection breaks (with backoff while it keeps failing; the follow loop polls
        every ``INGESTION_POLL_SECONDS`` meanwhile), and re-read the set after every
        (re)start."""
        loop = asyncio.get_running_loop()
        health = self.health["listen"]
        delay = RESTART_MIN
        while not stop.is_set():
            try:
                listener = await self._db(self._listener)
            except Exception as exc:  # noqa: BLE001 - polling still follows the set
                health.failed(exc)
                await _sleep_unless(stop, delay)
                delay = min(delay * 2, RESTART_MAX)
                continue
            health.succeeded()
            delay = RESTART_MIN
            fd = listener.fileno()  # kept: a closed connection cannot say which fd it had
            broken = asyncio.Event()

            def readable(listener: Any = listener, broken: asyncio.Event = broken) -> None:
                try:
                    listener.poll()
                except Exception:  # noqa: BLE001
                    broken.set()
                    return
                if listener.notifies:
                    channels = {notify.channel for notify in listener.notifies}
                    listener.notifies.clear()
                    if SESSION_CHANNEL in channels:
                        self._session_changed.set()
                    if channels - {SESSION_CHANNEL}:
                        self._reload.set()

            loop.add_reader(fd, readable)
            self._listening = True
            self._reload.set()  # anything changed before LISTEN took effect
            self._session_changed.set()
            try:
                await first_of(stop, broken)
            finally:
                self._listening = False
                loop.remove_reader(fd)
                with contextlib.suppress(Exception):
                    listener.close()
            if broken.is_set():
                # The database went away or dropped us: the ORM connection in the database
                # thread is most likely dead too. Re-read now (the follow loop replaces a
                # broken connection and retries with backoff) and re-LISTEN at once.
                health.failed(ConnectionError("the LISTEN connection broke; re-listening"))
                self._reload.set()

    def _listener(self) -> Any:
        """The LISTEN connection: the active set, and on the Kite feed the Kite session."""
        listener = active_set_listener()
        if self.feed == "kite":
            try:
                with listener.cursor() as cursor:
                    cursor.execute(f"LISTEN {SESSION_CHANNEL}")
            except Exception:
                listener.close()
                raise
        return listener

    async def _session_loop(self, stop: asyncio.Event) -> None:
        """The Kite feed: whenever the Kite session's version changes (a login, a logout, a
        refusal, a rewritten token file), connections that do not stream retry at once with
        the token the store gives now (one still refused is not sent: see ``FeedConnection``)."""
        health = self.health["session"]
        version = await self._db(session_version)
        health.succeeded()
        while not stop.is_set():
            interval = LISTENING_POLL_SECONDS if self._listening else SESSION_POLL_SECONDS
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(first_of(stop, self._session_changed), timeout=interval)
            self._session_changed.clear()  # before reading: a change during the read triggers another
            if stop.is_set():
                return
            try:
                current = await self._db(session_version)
            except Exception as exc:  # noqa: BLE001 - counted and shown; the next read retries
                health.failed(exc)
                if isinstance(exc, DatabaseError):
                    await self._db(_close_db)
                continue
            health.succeeded()
            if current != version:
                version = current
                self._wake_waiting("the Kite session changed")

    def _wake_waiting(self, why: str) -> None:
        """Connections not streaming (refused, or connecting with what may be the old token)
        try again now with the token the store gives."""
        waiting = [c for c in self.connections if c.state != "connected"]
        if waiting:
            logger.info("%s; reconnecting %s feed connections that do not stream", why, len(waiting))
        for feed_connection in waiting:
            feed_connection.wake()

    async def _follow(self, stop: asyncio.Event) -> None:
        health = self.health["follow"]
        retry = RETRY_MIN
        while not stop.is_set():
            self._reload.clear()  # before reading: a change during the read triggers another
            # NOTIFY wakes this loop at once; the poll is the safety net (and the only way
            # without LISTEN).
            interval = (
                max(self.poll_seconds, LISTENING_POLL_SECONDS) if self._listening else self.poll_seconds
            )
            try:
                await self.reload()
            except Exception as exc:  # noqa: BLE001 - keep streaming what we have; retry soon
                health.failed(exc)
                wait, retry = min(retry, interval), min(retry * 2, interval)
            else:
                health.succeeded()
                wait, retry = interval, RETRY_MIN
            self._wake_on_new_token()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(first_of(stop, self._reload), timeout=wait)
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
            self._wake_waiting("KITE_ACCESS_TOKEN_FILE changed")
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
        # No longer streamed (deactivated, delisted, past the feed's capacity): their last
        # price must not stay on a dashboard or reach the OMS as if it were live.
        removed, self._streamed = self._streamed - streamed, streamed
        self.publisher.remove(removed)
        if not self._pruned:
            await self._prune(streamed)

    async def _prune(self, streamed: set[int]) -> None:
        """Once, at start: drop latest ticks of instruments deactivated while no feed ran."""
        try:
            stored = await self._db(latest_tokens)
        except Exception as exc:  # noqa: BLE001 - tried again on the next read of the set
            self.publisher.store_health.failed(exc)
            return
        self._pruned = True
        stale = stored - streamed
        if stale:
            logger.info("dropping the latest ticks of %s instruments no longer streamed", len(stale))
            self.publisher.remove(stale)

    @property
    def capacity(self) -> int:
        return self.per_connection * self.max_connections

    def _ensure_connection(self, index: int) -> FeedConnection:
        while len(self.connections) <= index:
            self.connections.append(FeedConnection(
                index=len(self.connections), url=self.url, credentials=self._credentials_async,
                on_ticks=self._on_ticks, on_text=self._on_text, stale_after=settings.FEED_STALE_SECONDS,
                depth_levels=1,  # the best bid and ask are all the dashboard and the OMS read
                on_refused=self._token_refused if self.feed == "kite" else None,
            ))  # fmt: skip
            self._tasks.append(None)
            self._stops.append(asyncio.Event())
        task = self._tasks[index]
        if task is not None and task.done() and not task.cancelled() and task.exception() is not None:
            logger.error("feed connection %s died; restarting it", index, exc_info=task.exception())
        if task is None or task.done():
            self._stops[index] = asyncio.Event()
            self._tasks[index] = asyncio.create_task(self.connections[index].run(self._stops[index]),
                                                     name=f"feed-connection-{index}")  # fmt: skip
        return self.connections[index]

    # --- ticks in ---------------------------------------------------------------------------

    def _on_ticks(self, ticks: list[dict[str, Any]]) -> None:
        self.publisher.add(ticks)
        self.ticks_total += len(ticks)
        metrics.ticks_received(len(ticks))
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
        failing = [name for name, health in self.health.items() if health.failing]
        if not connections:
            state = "idle"
        elif states == {"connected"}:
            state = "connected"
        elif "config_error" in states:
            state = "config_error"
        elif "auth_failed" in states:
            state = "auth_failed"
        elif "connected" in states:
            state = "degraded"
        else:
            state = "disconnected"
        if failing and state in ("connected", "idle"):
            state = "degraded"  # e.g. ticks arrive but do not reach the dashboards
        error = next((c["error"] for c in connections if c["error"]), "")
        if not error and failing:
            error = f"{failing[0]}: {self.health[failing[0]].error}"
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
            "error": error,
            "failing": failing,
            "failures": {name: health.total for name, health in self.health.items()},
            "pid": os.getpid(),
            "started_at": self.started_at.isoformat(),
            "updated_at": timezone.now().isoformat(),
        }

    # --- the OMS: paper fills and the risk monitor ---------------------------------------------

    async def _oms_loop(self, stop: asyncio.Event) -> None:
        """Resting paper orders meet every published price (``oms.brokers.paper``), and the
        risk monitor marks positions to market every ``OMS_RISK_MONITOR_SECONDS``
        (``oms.monitor``): both need the ticks this process has."""
        from oms.brokers.paper import paper_match
        from oms.monitor import risk_monitor_run

        health = self.health["oms"]
        next_monitor = time.monotonic()
        while not stop.is_set():
            await _sleep_unless(stop, self.publish_interval)
            batch = dict(self._to_match)
            self._to_match.clear()
            try:
                if batch:
                    await self._db(paper_match, batch)
                if time.monotonic() >= next_monitor:
                    next_monitor = time.monotonic() + settings.OMS_RISK_MONITOR_SECONDS
                    await self._db(risk_monitor_run)
            except Exception as exc:  # noqa: BLE001 - counted and shown; the next prices retry
                health.failed(exc)
                if isinstance(exc, DatabaseError):
                    await self._db(_close_db)  # a broken connection is replaced on the next use
            else:
                health.succeeded()

    async def _status_loop(self, stop: asyncio.Event) -> None:
        last_total, last_at = self.ticks_total, time.monotonic()
        layer = self.publisher.layer
        health = self.health["status"]
        while not stop.is_set():
            await _sleep_unless(stop, 1.0)
            if stop.is_set():
                return
            now = time.monotonic()
            self._rate = round((self.ticks_total - last_total) / max(now - last_at, 1e-6), 1)
            last_total, last_at = self.ticks_total, now
            status = self.status()
            try:
                await self._db(status_store, status)
                if layer is not None:
                    message = {"type": "feed.status", "status": status}
                    await asyncio.wait_for(layer.group_send(TICKS_GROUP, message), LAYER_TIMEOUT)
            except Exception as exc:  # noqa: BLE001 - counted; the next beat tries again
                health.failed(exc)
            else:
                health.succeeded()
            await self._alert_when_down(status)

    async def _alert_when_down(self, status: dict[str, Any]) -> None:
        """A feed that does not stream: alert when it has been down for a while in market
        hours, and at once when Kite refuses the token. Alerts deduplicate themselves; this
        only asks every ALERT_CHECK_SECONDS, never from the hot path."""
        from alerts.conditions import alert_feed_down, alert_kite_login_needed

        state = status["state"]
        if state in ("connected", "idle"):
            self._down_since = None
            self._kite_login_alerted = False
            return
        now = timezone.now()
        if self._down_since is None:
            self._down_since = now
        if time.monotonic() < self._next_alert_check:
            return
        self._next_alert_check = time.monotonic() + ALERT_CHECK_SECONDS
        if state == "auth_failed" and self.feed == "kite" and not self._kite_login_alerted:
            # Once per outage (the issue: "an alert fires once"), however long nobody logs in:
            # alert_raise alone would send it again every ALERT_REPEAT_MINUTES.
            alert = await self._db(functools.partial(alert_kite_login_needed, detail=status.get("error", "")))
            self._kite_login_alerted = alert is not None
        await self._db(functools.partial(alert_feed_down, state=state, down_since=self._down_since,
                                         error=status.get("error", "")))  # fmt: skip


async def ingestion_run(
    *, stop: asyncio.Event, simulate: bool | None = None, simulator_port: int = 0
) -> None:
    """Run the ingestion until ``stop``; with ``simulate``, against the built-in simulator.

    Its database work gets a thread of its own (``ThreadSensitiveContext``) instead of the
    one thread that every other thread-sensitive call of the process shares. In the web
    process (the embedded arrangement) the dashboards' sockets read the market calendar
    there: while a database call of the feed waited (the risk monitor's write behind an
    operator's transaction holding SQLite's lock), every row of every dashboard got no
    ticks.
    """
    async with ThreadSensitiveContext():
        await _ingestion_run(stop=stop, simulate=simulate, simulator_port=simulator_port)


async def _ingestion_run(*, stop: asyncio.Event, simulate: bool | None, simulator_port: int) -> None:
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
