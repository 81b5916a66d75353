"""``/healthz``: what the portal depends on, each check on its own short time limit.

Checks run concurrently, each within ``HEALTH_CHECK_TIMEOUT`` (1 s): an outage answers in
about a second, never after the sum of every client's timeouts. Blocking checks run on a
small thread pool of their own, at most one of each kind at a time, so a check stuck in a
dead socket neither piles up threads nor takes threads from the rest of the web process.

- **required** (HTTP 503 when one fails: this web process cannot serve): ``database``,
  ``cache``, ``channel_layer`` (a message sent and read back through the layer, on a
  channel of its own: it never waits behind the consumers' blocking read);
- **informational** (reported, the status turns ``degraded``, the code stays 200: a load
  balancer must not take every web process out of service because the worker or the feed
  is down): ``worker`` (``tradingportal.worker.worker_liveness``: does the django-q2
  cluster really run tasks) and ``ingestion`` (the feed's heartbeat).
- **kite** (a section of its own, not a check): the Kite session's state (``valid``,
  ``bootstrap``, ``login_needed``, ``not_configured``), user, expiry and detail, never the
  token. It changes neither the code nor ``status``: a login needed is the desk's to act on
  (the dashboard, the admin and an alert say so), not a reason to take the portal out of service.

A failing check is logged once, then at most once a minute while it keeps failing, then
once when it recovers. Errors pass through ``redact``.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from channels.layers import get_channel_layer
from django.conf import settings
from django.core.cache import cache
from django.db import connection

from tradingportal.logging import RepeatedFailure
from tradingportal.security import redact

logger = logging.getLogger(__name__)

Check = dict[str, Any]
REQUIRED = ("database", "cache", "channel_layer")
INFORMATIONAL = ("worker", "ingestion")

_pool = ThreadPoolExecutor(max_workers=len(REQUIRED) + len(INFORMATIONAL) + 1, thread_name_prefix="healthz")
_in_flight: dict[str, Future[Check]] = {}
_failures: dict[str, RepeatedFailure] = {}


class CheckFailed(Exception):
    """A dependency answered, but not as it should; ``details`` go into the report."""

    def __init__(self, reason: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(reason)
        self.details = details or {}


def _elapsed_ms(started: float) -> int:
    return round((time.monotonic() - started) * 1000)


def database_check() -> Check:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    finally:
        connection.close()  # no connection kept open in a side thread
    return {}


def cache_check() -> Check:
    key = f"healthz:{uuid.uuid4().hex}"
    cache.set(key, "1", timeout=5)
    if cache.get(key) != "1":
        raise CheckFailed("value written to the cache could not be read back")
    cache.delete(key)
    return {}


async def channel_layer_check() -> Check:
    """A message sent to a fresh channel and read back through the layer. A plain channel
    name (no ``!``): channels-redis reads it directly, not through the process's shared
    receive loop that the websocket consumers keep busy."""
    layer = get_channel_layer()
    if layer is None:
        raise CheckFailed("no channel layer is configured")
    channel = f"healthz.{uuid.uuid4().hex}"
    await layer.send(channel, {"type": "healthz.ping"})
    message = await layer.receive(channel)
    if message.get("type") != "healthz.ping":
        raise CheckFailed("channel layer returned an unexpected message")
    return {}


def worker_check() -> Check:
    from tradingportal.worker import worker_liveness

    liveness = worker_liveness()
    if not liveness["ok"]:
        raise CheckFailed(f"worker is {liveness['state']}", liveness)
    return liveness


def ingestion_check() -> Check:
    from ingestion.status import feed_status

    status = feed_status()
    if not status:
        raise CheckFailed("no ingestion has reported a heartbeat recently", {"status": {"running": False}})
    if not status.get("running"):
        raise CheckFailed(f"ingestion is {status.get('state', 'not running')}", {"status": status})
    return {"status": status}


def kite_session_section() -> dict[str, Any]:
    """The Kite session for ``/healthz`` (``kitesession.store.session_state``): never the token."""
    from kitesession.store import session_state

    try:
        body = session_state(with_version=False).as_dict()
    finally:
        connection.close()  # no connection kept open in a side thread
    body.pop("version", None)
    return body


async def _kite_section() -> dict[str, Any]:
    try:
        return await asyncio.wait_for(_in_thread("kite", kite_session_section), settings.HEALTH_CHECK_TIMEOUT)
    except Exception as exc:  # noqa: BLE001 - unknown, said so; it never changes the code
        if isinstance(exc, TimeoutError):
            reason = f"no answer within {settings.HEALTH_CHECK_TIMEOUT:g}s"
        else:
            reason = f"{type(exc).__name__}: {exc}"
        detail = redact(f"the Kite session could not be read: {reason}")[:300]
        return {"state": "unknown", "user_id": "", "expires_at": None, "detail": detail}


def _in_thread(name: str, check: Callable[[], Check]) -> Awaitable[Check]:
    future = _in_flight.get(name)
    if future is None or future.done():  # a check still stuck from an earlier call is awaited, not doubled
        future = _in_flight[name] = _pool.submit(check)
    # Shielded: a caller giving up must not cancel the check another caller awaits too.
    return asyncio.shield(asyncio.wrap_future(future))


async def _run(name: str, check: Awaitable[Check]) -> Check:
    started = time.monotonic()
    timeout = settings.HEALTH_CHECK_TIMEOUT
    failure = _failures.setdefault(name, RepeatedFailure(logger, f"health check {name!r}"))
    try:
        details = await asyncio.wait_for(check, timeout)
    except Exception as exc:  # noqa: BLE001 - any failure means "down"
        if isinstance(exc, TimeoutError):
            exc = CheckFailed(f"no answer within {timeout:g}s")
        # A dependency's own error is logged with its traceback (once); ours need none.
        failure.failed(exc.with_traceback(None) if isinstance(exc, CheckFailed) else exc)
        extra = exc.details if isinstance(exc, CheckFailed) else {}
        reason = str(exc) if isinstance(exc, CheckFailed) else f"{type(exc).__name__}: {exc}"
        return {**extra, "ok": False, "latency_ms": _elapsed_ms(started), "error": redact(reason)[:300]}
    failure.succeeded()
    return {"ok": True, "latency_ms": _elapsed_ms(started), **details}


async def health_report() -> dict[str, Any]:
    """Every check, with details. ``ok`` is true when every required check passes;
    ``status`` is ``ok``, ``degraded`` (an informational check fails) or ``failing``."""
    names = (*REQUIRED, *INFORMATIONAL)
    results = await asyncio.gather(
        _run("database", _in_thread("database", database_check)),
        _run("cache", _in_thread("cache", cache_check)),
        _run("channel_layer", channel_layer_check()),
        _run("worker", _in_thread("worker", worker_check)),
        _run("ingestion", _in_thread("ingestion", ingestion_check)),
        _kite_section(),
    )
    *checked, kite = results
    checks = dict(zip(names, checked, strict=True))
    ok = all(checks[name]["ok"] for name in REQUIRED)
    degraded = not all(checks[name]["ok"] for name in INFORMATIONAL)
    feed = checks["ingestion"].pop("status", None) or {"running": False}
    return {
        "ok": ok,
        "status": "failing" if not ok else "degraded" if degraded else "ok",
        "checks": checks,
        "ingestion": feed,
        "kite": kite,
    }


def public_report(report: dict[str, Any]) -> dict[str, Any]:
    """What anyone may see: the status, each check's ok/failed, and the Kite session's state
    word (so the person on call sees "login_needed"; its user, expiry and detail are not shown)."""
    return {
        "ok": report["ok"],
        "status": report["status"],
        "checks": {name: {"ok": check["ok"]} for name, check in report["checks"].items()},
        "kite": {"state": report["kite"]["state"]},
    }
