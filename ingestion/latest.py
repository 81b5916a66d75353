"""The latest tick per instrument, shared by the ingestion (writer), the API and the
dashboard's snapshot (readers).

Ticks are stored as the JSON text the ingestion already made for the dashboards. With
django-redis they live in one Redis hash (one HSET per publish, one HMGET per read),
under the cache's key prefix; otherwise in the Django cache, one key per instrument.
"""

from __future__ import annotations

import json
from typing import Any

from django.core.cache import cache

HASH_KEY = "ticks:latest"
KEY = "ticks:latest:{}"
TTL = 24 * 3600


def _redis() -> Any | None:
    client = getattr(cache, "client", None)
    if client is not None and hasattr(client, "get_client"):
        return client.get_client(write=True)
    return None


def latest_store(ticks: dict[int, str]) -> None:
    """Store ``{token: tick JSON}``."""
    if not ticks:
        return
    redis = _redis()
    if redis is not None:
        redis.hset(cache.make_key(HASH_KEY), mapping=ticks)
        return
    cache.set_many({KEY.format(token): text for token, text in ticks.items()}, timeout=TTL)


def latest_ticks(tokens: list[int]) -> dict[int, dict[str, Any]]:
    """The latest tick of each token that has one."""
    if not tokens:
        return {}
    redis = _redis()
    if redis is not None:
        values = redis.hmget(cache.make_key(HASH_KEY), tokens)
        return {token: json.loads(value) for token, value in zip(tokens, values, strict=True) if value}
    found = cache.get_many([KEY.format(token) for token in tokens])
    return {token: json.loads(found[KEY.format(token)]) for token in tokens if KEY.format(token) in found}
