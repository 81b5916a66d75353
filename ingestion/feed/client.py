"""One connection to Kite's ticker (or anything speaking its protocol), kept alive.

Why not kiteconnect's ``KiteTicker``: it runs Twisted's reactor, which can be started
once per process and cannot host the asyncio loop that Channels and our publisher live
on; it rebuilds its URL from the access token it was constructed with, so a reconnect
after the morning token change would keep failing; and its parser is no faster than the
``struct`` one in ``protocol.py``. This client is asyncio end to end, reads the
credentials afresh on every (re)connect, and the URL is configuration.

The connection holds a *desired* subscription ({token: mode}); whenever it changes, only
the difference is sent (``unsubscribe``, ``subscribe``, ``mode``), and after a reconnect
everything is subscribed again with the right modes. Reconnects back off exponentially
with jitter. A rejected handshake (HTTP 401/403: the morning's expired token, or a wrong
key) puts the connection in ``auth_failed`` ("Kite login needed"), is reported once per
token (``on_refused``: the engine marks the Kite session refused), and the same token is
tried again no sooner than ``auth_retry`` (a minute) after its refusal, however often the
connection is woken; ``wake()`` with a new token (a new login) reconnects at once. A
socket that goes silent (no tick and no heartbeat for ``stale_after`` seconds) is dropped
and reconnected.

The access token travels in the URL's query, so it goes only over ``wss://``, or over
plain ``ws://`` to a loopback address (the simulator, tests); any other URL is refused
before connecting (state ``config_error``), and redirects are never followed (one could
lead the token anywhere). Every error string kept for the status (``/healthz``, the
admin, the dashboard) passes through ``redact``: exception text can carry the URL.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlencode, urlsplit

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from ingestion.feed.protocol import parse_frame
from tradingportal.logging import RepeatedFailure
from tradingportal.security import redact

logger = logging.getLogger(__name__)

Credentials = Callable[[], Awaitable[tuple[str, str]]]
Refused = Callable[[str, str], Awaitable[None]]  # (the refused access token, what the ticker said)
TicksHandler = Callable[[list[dict[str, Any]]], None]
TextHandler = Callable[[dict[str, Any]], None]

SUBSCRIBE_CHUNK = 1000
AUTH_RETRY_SECONDS = 60.0
HEALTHY_SECONDS = 30.0
ERROR_LENGTH = 300
LOGIN_NEEDED = "Kite login needed"
NO_TOKEN = (
    f"{LOGIN_NEEDED}: there is no usable access token; log in to Kite from the portal "
    "(/kite/login/) or save today's token in KITE_ACCESS_TOKEN_FILE"
)


def ticker_url_problem(url: str) -> str:
    """Why the access token must not be sent to ``url`` ("" when it may): only ``wss://``,
    or plain ``ws://`` to a loopback address."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
    except ValueError:
        return "KITE_TICKER_URL is not a valid URL"
    if parts.scheme not in ("ws", "wss") or not host:
        return "KITE_TICKER_URL must be a ws:// or wss:// URL with a host (Kite: wss://ws.kite.trade)"
    if parts.scheme == "ws" and not _is_loopback(host):
        return (
            f"refusing to send the access token in clear text to {host}: use wss:// "
            "(plain ws:// is allowed to loopback addresses only, e.g. the simulator)"
        )
    return ""


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class _connect(connect):  # noqa: N801 - websockets' own spelling: ``async with connect(...)``
    """websockets' ``connect`` that never follows a redirect: the URL carries the access
    token, and Kite's ticker does not redirect."""

    def process_redirect(self, exc: Exception) -> Exception | str:
        return exc


class FeedConnection:
    def __init__(self, *, index: int, url: str, credentials: Credentials, on_ticks: TicksHandler,
                 on_text: TextHandler | None = None, stale_after: float = 10.0, min_backoff: float = 1.0,
                 max_backoff: float = 30.0, auth_retry: float = AUTH_RETRY_SECONDS,
                 depth_levels: int = 5, on_refused: Refused | None = None) -> None:  # fmt: skip
        self.index = index
        self.url = url
        self.credentials = credentials
        self.on_ticks = on_ticks
        self.on_text = on_text
        self.on_refused = on_refused
        self.stale_after = stale_after
        self.min_backoff, self.max_backoff, self.auth_retry = min_backoff, max_backoff, auth_retry
        self.depth_levels = depth_levels
        self.desired: dict[int, str] = {}
        self.subscribed: dict[int, str] = {}
        self.state = "idle"
        self.error = ""
        self.reconnects = 0
        self.connected_at: float | None = None
        self.last_message_at: float | None = None
        self.ticks = 0
        self._changed = asyncio.Event()
        self._ws: ClientConnection | None = None
        self._wake = asyncio.Event()
        self._refused_token = ""  # the access token the ticker refused last, and when
        self._refused_at = 0.0
        # Logged once with a traceback, then at most once a minute with a count.
        self._unexpected = RepeatedFailure(logger, f"feed connection {index}")
        self._handler_failure = RepeatedFailure(logger, f"feed connection {index}: a tick handler")

    # --- what to stream ----------------------------------------------------------------

    def set_desired(self, modes: dict[int, str]) -> None:
        if modes != self.desired:
            self.desired = dict(modes)
            self._changed.set()

    def status(self) -> dict[str, Any]:
        now = time.monotonic()
        return {
            "index": self.index,
            "state": self.state,
            "subscribed": len(self.subscribed),
            "desired": len(self.desired),
            "reconnects": self.reconnects,
            "last_message_age": round(now - self.last_message_at, 1) if self.last_message_at else None,
            "error": self.error,
        }

    # --- the connection loop ---------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        problem = ticker_url_problem(self.url)
        if problem:
            # Configuration, not a network failure: nothing to retry until it is fixed.
            self._fail("config_error", problem)
            await stop.wait()
            self.state = "stopped"
            return
        attempt = 0
        while not stop.is_set():
            delay = 0.0
            access_token = ""
            self._wake.clear()  # a wake from now on (e.g. a login while connecting) is not lost
            try:
                api_key, access_token = await self.credentials()
                if not api_key or not access_token:
                    raise CredentialsUnusable(NO_TOKEN)
                too_soon = self._refused_wait(access_token)
                if too_soon > 0:
                    raise _RefusedRecently(too_soon)
                self.state = "connecting"
                query = urlencode({"api_key": api_key, "access_token": access_token})
                separator = "&" if "?" in self.url else "?"
                async with _connect(
                    f"{self.url}{separator}{query}",
                    additional_headers={"X-Kite-Version": "3"},
                    open_timeout=10, ping_interval=None, close_timeout=2, max_size=2**22, max_queue=64,
                    proxy=None, compression=None,
                ) as ws:  # fmt: skip
                    await self._serve(ws, stop)
            except _RefusedRecently as exc:
                # Woken, but the token is the one refused less than ``auth_retry`` ago: not
                # sent again before then (state and error stay those of the refusal).
                logger.info("feed connection %s: the access token refused last is not tried again for %.0fs "
                            "(unless a new one is saved)", self.index, exc.wait)  # fmt: skip
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(first_of(stop, self._wake), timeout=exc.wait)
                continue
            except CredentialsUnusable as exc:
                self._fail("auth_failed", str(exc))
                delay = self.auth_retry
            except InvalidStatus as exc:
                status = exc.response.status_code
                if status in (401, 403):
                    self._fail("auth_failed", f"{LOGIN_NEEDED}: the ticker refused the API key or access "
                               f"token (HTTP {status}; it expires every morning): log in to Kite from the "
                               "portal (/kite/login/) or save today's token in KITE_ACCESS_TOKEN_FILE")  # fmt: skip
                    delay = self.auth_retry
                    await self._refused(access_token)
                else:
                    self._fail("disconnected", f"the ticker answered the handshake with HTTP {status}")
            except _Stale as exc:
                self._fail("disconnected", str(exc))
            except (OSError, TimeoutError, ConnectionClosed, InvalidHandshake) as exc:
                self._fail("disconnected", f"{type(exc).__name__}: {exc}")
            except Exception as exc:  # noqa: BLE001 - never let the feed die silently
                self._unexpected.failed(exc)
                self._fail("disconnected", f"unexpected {type(exc).__name__}: {exc}")
            finally:
                if self.connected_at is not None and time.monotonic() - self.connected_at > HEALTHY_SECONDS:
                    attempt = 0  # it held for a while: start the backoff over
                self._ws = None
                self.subscribed = {}
                self.connected_at = None
            if stop.is_set():
                break
            self.reconnects += 1
            if not delay:
                delay = min(self.max_backoff, self.min_backoff * 2**attempt) * (0.5 + random.random())  # noqa: S311
                attempt += 1
            self.state = self.state if self.state == "auth_failed" else "backoff"
            logger.info("feed connection %s reconnects in %.1fs", self.index, delay)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(first_of(stop, self._wake), timeout=delay)
        self.state = "stopped"

    def wake(self) -> None:
        """Retry now (e.g. a new Kite session was saved): with a new token, a connection is
        made at once; the token refused last waits out its ``auth_retry``."""
        self._wake.set()

    def _refused_wait(self, access_token: str) -> float:
        """Seconds before ``access_token`` may be sent again (0: now)."""
        if access_token != self._refused_token:
            return 0.0
        return max(0.0, self._refused_at + self.auth_retry - time.monotonic())

    async def _refused(self, access_token: str) -> None:
        """The ticker refused ``access_token``: told to ``on_refused`` once per token."""
        first = access_token != self._refused_token
        self._refused_token, self._refused_at = access_token, time.monotonic()
        if first and self.on_refused is not None:
            try:
                await self.on_refused(access_token, self.error)
            except Exception as exc:  # noqa: BLE001 - the refusal is shown anyway; never kills the feed
                self._unexpected.failed(exc)

    def _fail(self, state: str, message: str) -> None:
        # Exception text can carry the URL, and with it the access token.
        self.state, self.error = state, redact(message)[:ERROR_LENGTH]
        log = logger.error if state in ("auth_failed", "config_error") else logger.warning
        log("feed connection %s: %s", self.index, self.error)

    async def _serve(self, ws: ClientConnection, stop: asyncio.Event) -> None:
        self._ws = ws
        self.state = "connected"
        self.error = ""
        self._unexpected.succeeded()
        self.connected_at = self.last_message_at = time.monotonic()
        logger.info("feed connection %s connected", self.index)
        self._changed.set()
        syncer = asyncio.create_task(self._sync_loop(ws))
        stopper = asyncio.create_task(stop.wait())
        try:
            while not stop.is_set():
                receive = asyncio.create_task(ws.recv())
                done, _ = await asyncio.wait({receive, stopper, syncer}, timeout=self.stale_after,
                                             return_when=asyncio.FIRST_COMPLETED)  # fmt: skip
                if receive not in done:
                    receive.cancel()
                    with contextlib.suppress(asyncio.CancelledError, ConnectionClosed):
                        await receive
                    if stopper in done:
                        break
                    if syncer in done:
                        syncer.result()  # raises what broke the subscription sync
                    raise _Stale(f"no data or heartbeat for {self.stale_after:.0f}s; reconnecting")
                message = receive.result()
                self.last_message_at = time.monotonic()
                if isinstance(message, bytes):
                    ticks = parse_frame(message, self.depth_levels)
                    if ticks:
                        self.ticks += len(ticks)
                        self._deliver(self.on_ticks, ticks)
                else:
                    self._on_text(message)
        finally:
            for task in (syncer, stopper):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, ConnectionClosed):
                    await task
            with contextlib.suppress(Exception):
                await ws.close()

    def _deliver(self, handler: Callable[[Any], None], payload: Any) -> None:
        """A handler's bug is logged; it does not drop the connection."""
        try:
            handler(payload)
        except Exception as exc:  # noqa: BLE001
            self._handler_failure.failed(exc)
        else:
            self._handler_failure.succeeded()

    def _on_text(self, message: str) -> None:
        try:
            payload = json.loads(message)
        except ValueError:
            logger.warning("feed connection %s: ignored a text frame that is not JSON", self.index)
            return
        if isinstance(payload, dict) and payload.get("type") == "error":
            logger.warning("feed connection %s: ticker error: %s", self.index, payload.get("data"))
        if self.on_text and isinstance(payload, dict):
            self._deliver(self.on_text, payload)

    async def _sync_loop(self, ws: ClientConnection) -> None:
        while True:
            await self._changed.wait()
            self._changed.clear()
            await self._send_difference(ws)

    async def _send_difference(self, ws: ClientConnection) -> None:
        want, have = dict(self.desired), self.subscribed
        removed = [t for t in have if t not in want]
        added = [t for t in want if t not in have]
        by_mode: dict[str, list[int]] = {}
        for token, mode in want.items():
            if have.get(token) != mode:
                by_mode.setdefault(mode, []).append(token)
        for chunk in _chunks(removed):
            await ws.send(json.dumps({"a": "unsubscribe", "v": chunk}))
        for chunk in _chunks(added):
            await ws.send(json.dumps({"a": "subscribe", "v": chunk}))
        for mode, tokens in by_mode.items():
            for chunk in _chunks(tokens):
                await ws.send(json.dumps({"a": "mode", "v": [mode, chunk]}))
        self.subscribed = want
        if removed or added or by_mode:
            logger.info("feed connection %s: +%s -%s subscribed, %s mode changes, %s total", self.index,
                        len(added), len(removed), sum(len(t) for t in by_mode.values()), len(want))  # fmt: skip


class _Stale(Exception):
    pass


class CredentialsUnusable(Exception):
    """Raised by ``credentials()`` (or for an empty key or token): no usable credentials;
    the connection is ``auth_failed`` with this message until woken or ``auth_retry``."""


class _RefusedRecently(Exception):
    def __init__(self, wait: float) -> None:
        super().__init__(f"refused; retried in {wait:.0f}s")
        self.wait = wait


def _chunks(tokens: list[int]) -> list[list[int]]:
    return [tokens[i : i + SUBSCRIBE_CHUNK] for i in range(0, len(tokens), SUBSCRIBE_CHUNK)]


async def first_of(*events: asyncio.Event) -> None:
    """Return when any of ``events`` is set."""
    waiters = [asyncio.create_task(e.wait()) for e in events]
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
