"""Kite's order caps per API key, counted before an order is sent, across processes.

``KITE_ORDERS_PER_SECOND``, ``KITE_ORDERS_PER_MINUTE`` (sliding windows) and
``KITE_ORDERS_PER_DAY`` (Kite's trading day, IST). An order is counted only when it is
admitted, so refused orders never use up the caps. The counts live where every process
sees them: in Redis (one atomic script) when the cache is Redis; else in a file under
``var/locks/`` held with ``flock`` (one machine: the one-command mode's web and worker
share it). When the counts cannot be read, nothing is sent.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import time
import uuid
from datetime import datetime
from typing import Any

from django.conf import settings
from django.core.cache import cache, caches

from oms.brokers.kite.errors import BrokerRateLimited
from oms.brokers.kite.rows import IST

logger = logging.getLogger(__name__)

# KEYS: the last second's and the last minute's sends (sorted sets), the day's count.
# ARGV: now (ms), orders, the three caps, a unique member, the day count's lifetime (s).
# Returns the refusing window (1 second, 2 minute, 3 day), or 0 with the orders counted.
_SCRIPT = """
local now, n = tonumber(ARGV[1]), tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - 60000)
if redis.call('ZCARD', KEYS[1]) + n > tonumber(ARGV[3]) then return 1 end
if redis.call('ZCARD', KEYS[2]) + n > tonumber(ARGV[4]) then return 2 end
if tonumber(redis.call('GET', KEYS[3]) or '0') + n > tonumber(ARGV[5]) then return 3 end
for i = 1, n do
  redis.call('ZADD', KEYS[1], now, ARGV[6] .. ':' .. i)
  redis.call('ZADD', KEYS[2], now, ARGV[6] .. ':' .. i)
end
redis.call('PEXPIRE', KEYS[1], 2000)
redis.call('PEXPIRE', KEYS[2], 61000)
redis.call('INCRBY', KEYS[3], n)
redis.call('EXPIRE', KEYS[3], tonumber(ARGV[7]))
return 0
"""
WINDOWS = {1: "second", 2: "minute", 3: "day"}


def _redis() -> Any:
    """The raw Redis client behind the cache, or None when the cache is not django-redis."""
    if not type(caches["default"]).__module__.startswith("django_redis"):
        return None
    from django_redis import get_redis_connection

    return get_redis_connection("default")


class KiteOrderRate:
    def __init__(self, api_key: str) -> None:
        # The counts are per API key; the key itself is not written anywhere.
        self.key = hashlib.blake2b(api_key.encode(), digest_size=6).hexdigest()

    @staticmethod
    def caps() -> dict[int, int]:
        return {1: settings.KITE_ORDERS_PER_SECOND, 2: settings.KITE_ORDERS_PER_MINUTE,
                3: settings.KITE_ORDERS_PER_DAY}  # fmt: skip

    def admit(self, *, orders: int = 1, now: float | None = None) -> None:
        """Count ``orders`` about to be sent, or raise ``BrokerRateLimited`` (nothing counted)."""
        now = time.time() if now is None else now
        caps = self.caps()
        never = next((window for window, cap in caps.items() if orders > cap), 0)
        try:
            refused = never or self._count(orders, now, caps)
        except Exception as exc:  # noqa: BLE001 - the counts are unreachable: nothing goes out uncounted
            logger.exception("Kite's order rate cannot be counted")
            raise BrokerRateLimited(
                "Kite's order rate cannot be counted (the cache is unreachable): not sent; retry when it is back"
            ) from exc
        if refused:
            window = WINDOWS[refused]
            what = f"these {orders} orders" if orders > 1 else "this order"
            raise BrokerRateLimited(
                f"Kite allows {caps[refused]} orders a {window} per API key (KITE_ORDERS_PER_{window.upper()}); "
                f"{what} would exceed it: not sent"
            )

    def _count(self, orders: int, now: float, caps: dict[int, int]) -> int:
        day = datetime.fromtimestamp(now, IST).strftime("%Y%m%d")
        client = _redis()
        if client is None:
            return self._count_in_file(orders, now, caps, day)
        keys = [cache.make_key(f"kite:rate:{self.key}:{name}") for name in ("second", "minute", f"day:{day}")]
        args = [int(now * 1000), orders, caps[1], caps[2], caps[3], uuid.uuid4().hex, 2 * 86400]
        return int(client.register_script(_SCRIPT)(keys=keys, args=args))

    def _count_in_file(self, orders: int, now: float, caps: dict[int, int], day: str) -> int:
        descriptor = os.open(self.path(), os.O_RDWR | os.O_CREAT, 0o600)
        with open(descriptor, "r+", encoding="utf-8") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)  # released when the file is closed
            try:
                book = json.loads(handle.read() or "{}")
            except ValueError:
                book = {}
            sent = [t for t in book.get("sent", []) if t > now - 60]
            today = book.get("day_count", 0) if book.get("day") == day else 0
            counts = {1: sum(t > now - 1 for t in sent), 2: len(sent), 3: today}
            refused = next((window for window in (1, 2, 3) if counts[window] + orders > caps[window]), 0)
            if not refused:
                handle.seek(0)
                handle.truncate()
                handle.write(
                    json.dumps({"sent": sent + [now] * orders, "day": day, "day_count": today + orders})
                )
                handle.flush()
                os.fsync(handle.fileno())
            return refused

    def path(self) -> Any:
        from tradingportal.locks import lock_file

        return lock_file(f"kite-order-rate-{self.key}")

    def reset(self) -> None:
        """Forget the counted orders (tests; a new day's counts start by themselves)."""
        client = _redis()
        if client is not None:
            for key in client.scan_iter(cache.make_key(f"kite:rate:{self.key}:*")):
                client.delete(key)
        self.path().unlink(missing_ok=True)


def kite_order_rate_reset() -> None:
    """Forget the counted orders of the configured API key."""
    KiteOrderRate(settings.KITE_API_KEY).reset()
