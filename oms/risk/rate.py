"""Rules on how fast orders go out (Kite allows 10 orders a second per API key)."""

from __future__ import annotations

import logging
from typing import Any

from django.conf import settings
from django.core.cache import cache, caches

from oms.risk.context import RiskContext, number

logger = logging.getLogger(__name__)
RATE_KEY = "oms:orders:second:{}"
REFUSED_KEY = "oms:orders:rate-refused:{}"


def _redis() -> Any:
    """The raw Redis client behind the cache, or None when the cache is not django-redis."""
    if not type(caches["default"]).__module__.startswith("django_redis"):
        return None
    from django_redis import get_redis_connection

    return get_redis_connection("default")


def _count(key: str, timeout: int) -> int:
    """Atomically add one to a counter shared by every process: on Redis one round trip
    (INCR and EXPIRE in one MULTI), elsewhere (locmem, in-process) add then incr."""
    client = _redis()
    if client is not None:
        full = cache.make_key(key)
        pipe = client.pipeline()
        pipe.incr(full)
        pipe.expire(full, timeout)
        count, _ = pipe.execute()
        return int(count)
    cache.add(key, 0, timeout=timeout)
    try:
        return int(cache.incr(key))
    except ValueError:  # expired between add and incr
        cache.set(key, 1, timeout=timeout)
        return 1


def rate_limit(ctx: RiskContext) -> str | None:
    """Run last: an order counts against the rate only when every other rule passed.
    Without its counter (the cache down) it refuses: no order goes out uncounted."""
    second = int(ctx.now.timestamp())
    limit = settings.OMS_ORDERS_PER_SECOND
    try:
        sent = _count(RATE_KEY.format(second), timeout=5)
    except Exception:  # noqa: BLE001 - the cache (Redis) is unreachable
        logger.exception("the order rate cannot be counted: the cache is unreachable")
        return "the order rate cannot be counted (the cache is unreachable): retry when it is back"
    if sent <= limit:
        return None
    if not ctx.square_off:  # a flatten held back by the rate is retried, not a runaway strategy
        refused = _count(REFUSED_KEY.format(second // 60), timeout=120)
        if refused == settings.OMS_RUNAWAY_REFUSALS_PER_MINUTE:
            ctx.runaway = True
    return f"more than {limit} orders in one second (Kite's limit per API key): slow down and retry"


def order_to_trade(ctx: RiskContext) -> str | None:
    """A warning, never a refusal: exchanges watch the ratio of orders to trades."""
    ratio_limit = ctx.limits.max_order_to_trade_ratio
    orders = ctx.orders_today + 1
    if ratio_limit and orders > 10 and orders / max(ctx.trades_today, 1) > ratio_limit:
        ctx.warnings.append(
            f"order-to-trade ratio today is {orders}:{ctx.trades_today}, above {number(ratio_limit)}:1"
        )
    return None
