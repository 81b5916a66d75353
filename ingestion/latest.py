"""The latest tick per instrument, shared by the ingestion (writer), the API, the
dashboard's snapshot and the OMS (readers).

Every stored tick carries the time the ingestion received it (``received_at``), so a
reader can ask for "no older than N seconds" (``max_age``) and never trade on a price
from yesterday, or from the contract that held the token before Kite reused it. Entries
are dropped (``latest_discard``) when the feed stops streaming an instrument and when a
sync moves a token to another contract.

Storage: with django-redis one Redis hash (one HSET per publish, one HMGET per read)
under the cache's key prefix, the hash itself expiring a day after the last write;
otherwise the Django cache, one key per instrument plus an index of the stored tokens
(so ``latest_tokens`` can list them). Each value is the tick's JSON (as the ingestion
already made it for the dashboards) wrapped with the receive time in epoch
milliseconds: ``{"r": 1764560100123, "t": {...tick...}}``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from django.core.cache import cache
from django.utils import timezone

HASH_KEY = "ticks:latest"
KEY = "ticks:latest:{}"
INDEX_KEY = "ticks:latest:index"
TTL = 24 * 3600


def _redis() -> Any | None:
    client = getattr(cache, "client", None)
    if client is not None and hasattr(client, "get_client"):
        return client.get_client(write=True)
    return None


def _wrap(received_ms: int, text: str) -> str:
    return f'{{"r":{received_ms},"t":{text}}}'


def latest_store(ticks: dict[int, str], *, received_at: datetime | None = None) -> None:
    """Store ``{token: tick JSON}``, stamped with ``received_at`` (default: now)."""
    if not ticks:
        return
    stamp = received_at or timezone.now()
    received_ms = int(stamp.timestamp() * 1000)
    values = {token: _wrap(received_ms, text) for token, text in ticks.items()}
    redis = _redis()
    if redis is not None:
        key = cache.make_key(HASH_KEY)
        pipe = redis.pipeline(transaction=False)
        pipe.hset(key, mapping=values)
        pipe.expire(key, TTL)
        pipe.execute()
        return
    cache.set_many({KEY.format(token): text for token, text in values.items()}, timeout=TTL)
    index = cache.get(INDEX_KEY) or set()
    if not index.issuperset(values):
        cache.set(INDEX_KEY, index | set(values), timeout=TTL)


def latest_discard(tokens: Iterable[int]) -> None:
    """Forget the latest tick of ``tokens`` (no longer streamed, or now another contract)."""
    tokens = list(tokens)
    if not tokens:
        return
    redis = _redis()
    if redis is not None:
        redis.hdel(cache.make_key(HASH_KEY), *tokens)
        return
    cache.delete_many([KEY.format(token) for token in tokens])
    index = cache.get(INDEX_KEY)
    if index and not index.isdisjoint(tokens):
        cache.set(INDEX_KEY, index - set(tokens), timeout=TTL)


def latest_tokens() -> set[int]:
    """The tokens that have a stored tick (the ingestion prunes what it no longer streams)."""
    redis = _redis()
    if redis is not None:
        return {int(token) for token in redis.hkeys(cache.make_key(HASH_KEY))}
    return set(cache.get(INDEX_KEY) or ())


def _unwrap(value: str | bytes, oldest_ms: int | None) -> dict[str, Any] | None:
    stored = json.loads(value)
    if not isinstance(stored, dict) or "r" not in stored or "t" not in stored:
        return None  # written by an older version: its age is unknown, so it is not used
    received_ms = stored["r"]
    if oldest_ms is not None and received_ms < oldest_ms:
        return None
    tick: dict[str, Any] = stored["t"]
    tick["received_at"] = timezone.localtime(datetime.fromtimestamp(received_ms / 1000, tz=UTC)).isoformat(
        timespec="milliseconds"
    )
    return tick


def latest_ticks(tokens: list[int], *, max_age: float | None = None) -> dict[int, dict[str, Any]]:
    """The latest tick of each token that has one, with its ``received_at`` (ISO, IST).

    ``max_age``: only ticks received at most this many seconds ago; older ones are
    treated as absent.
    """
    if not tokens:
        return {}
    oldest_ms = None if max_age is None else int((time.time() - max_age) * 1000)
    redis = _redis()
    found: Iterable[tuple[int, Any]]
    if redis is not None:
        values = redis.hmget(cache.make_key(HASH_KEY), tokens)
        found = zip(tokens, values, strict=True)
    else:
        stored = cache.get_many([KEY.format(token) for token in tokens])
        found = ((token, stored.get(KEY.format(token))) for token in tokens)
    ticks: dict[int, dict[str, Any]] = {}
    for token, value in found:
        if value:
            tick = _unwrap(value, oldest_ms)
            if tick is not None:
                ticks[token] = tick
    return ticks


def latest_tick(token: int, *, max_age: float | None = None) -> dict[str, Any] | None:
    """The latest tick of one instrument (see ``latest_ticks``), or None."""
    return latest_ticks([token], max_age=max_age).get(token)
