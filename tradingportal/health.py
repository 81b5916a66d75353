"""Reachability checks for the services the portal depends on.

Each check returns ``{"ok": bool, "latency_ms": int, "error"?: str}``; errors name the
failure, never a connection string (they pass through ``redact``).
"""

import asyncio
import time
import uuid
from typing import Any

from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from django.core.cache import cache
from django.db import connection

from tradingportal.security import redact

Check = dict[str, Any]
_TIMEOUT = 3.0


def _failure(exc: BaseException, started: float) -> Check:
    return {
        "ok": False,
        "latency_ms": round((time.monotonic() - started) * 1000),
        "error": redact(f"{type(exc).__name__}: {exc}")[:300],
    }


def database_check() -> Check:
    started = time.monotonic()
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except Exception as exc:  # noqa: BLE001 - any failure means "down"
        return _failure(exc, started)
    finally:
        connection.close_if_unusable_or_obsolete()
    return {"ok": True, "latency_ms": round((time.monotonic() - started) * 1000)}


def cache_check() -> Check:
    started = time.monotonic()
    key = f"healthz:{uuid.uuid4().hex}"
    try:
        cache.set(key, "1", timeout=5)
        if cache.get(key) != "1":
            raise RuntimeError("value written to the cache could not be read back")
        cache.delete(key)
    except Exception as exc:  # noqa: BLE001
        return _failure(exc, started)
    return {"ok": True, "latency_ms": round((time.monotonic() - started) * 1000)}


async def channel_layer_check() -> Check:
    """Send a message to a fresh channel and read it back through the layer."""
    started = time.monotonic()
    try:
        layer = get_channel_layer()
        if layer is None:
            raise RuntimeError("no channel layer is configured")
        channel = await layer.new_channel("healthz.")
        await asyncio.wait_for(layer.send(channel, {"type": "healthz.ping"}), _TIMEOUT)
        message = await asyncio.wait_for(layer.receive(channel), _TIMEOUT)
        if message.get("type") != "healthz.ping":
            raise RuntimeError("channel layer returned an unexpected message")
    except Exception as exc:  # noqa: BLE001
        return _failure(exc, started)
    return {"ok": True, "latency_ms": round((time.monotonic() - started) * 1000)}


async def health_report() -> dict[str, Any]:
    """All checks; ``ok`` is true only when every dependency is reachable."""
    checks: dict[str, Check] = {
        "database": await sync_to_async(database_check, thread_sensitive=True)(),
        "cache": await sync_to_async(cache_check, thread_sensitive=False)(),
        "channel_layer": await channel_layer_check(),
    }
    return {"ok": all(c["ok"] for c in checks.values()), "checks": checks}
