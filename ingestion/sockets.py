"""How many dashboard sockets each user holds open, counted across web workers.

Each open ``/ws/ticks/`` socket holds a *lease* (its channel name, with an expiry
``LEASE_SECONDS`` ahead) that the consumer renews every ``RENEW_SECONDS`` and releases
when it closes. A web worker that crashes cannot release its leases; they lapse on their
own, so a crash never locks a user out for longer than a lease.

With Redis: one sorted set per user (member: the socket, score: its lease expiry), and
claiming is one Lua script (drop lapsed leases, count, add), so two workers can never
both take the last slot. Without Redis there is only one web process (the in-memory
channel layer reaches no other): the leases are a dict in its local-memory cache, read
and written under a lock.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from django.core.cache import cache

LEASE_SECONDS = 60.0
RENEW_SECONDS = 20.0
KEY = "ws:sockets:{}"

_CLAIM = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if redis.call('ZSCORE', KEYS[1], ARGV[3]) == false and redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[4]) then
    return 0
end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[3])
redis.call('EXPIRE', KEYS[1], ARGV[5])
return 1
"""

_local_lock = threading.Lock()


def _redis() -> Any | None:
    client = getattr(cache, "client", None)
    if client is not None and hasattr(client, "get_client"):
        return client.get_client(write=True)
    return None


def socket_claim(*, user_id: int, socket_id: str, limit: int) -> bool:
    """Take a slot for ``socket_id``; False when ``user_id`` already holds ``limit``."""
    now = time.time()
    redis = _redis()
    if redis is not None:
        claimed = redis.eval(_CLAIM, 1, cache.make_key(KEY.format(user_id)), now, now + LEASE_SECONDS,
                             socket_id, limit, int(LEASE_SECONDS) + 1)  # fmt: skip
        return bool(claimed)
    with _local_lock:
        leases = {s: expires for s, expires in _local_leases(user_id).items() if expires > now}
        if socket_id not in leases and len(leases) >= limit:
            return False
        leases[socket_id] = now + LEASE_SECONDS
        _local_store(user_id, leases)
        return True


def _local_leases(user_id: int) -> dict[str, float]:
    return cache.get(KEY.format(user_id)) or {}


def _local_store(user_id: int, leases: dict[str, float]) -> None:
    if leases:
        cache.set(KEY.format(user_id), leases, timeout=int(LEASE_SECONDS) + 1)
    else:
        cache.delete(KEY.format(user_id))


def socket_renew(*, user_id: int, socket_id: str) -> None:
    """Extend the lease of an open socket."""
    expires = time.time() + LEASE_SECONDS
    redis = _redis()
    if redis is not None:
        key = cache.make_key(KEY.format(user_id))
        pipe = redis.pipeline(transaction=False)
        pipe.zadd(key, {socket_id: expires})
        pipe.expire(key, int(LEASE_SECONDS) + 1)
        pipe.execute()
        return
    with _local_lock:
        _local_store(user_id, {**_local_leases(user_id), socket_id: expires})


def socket_release(*, user_id: int, socket_id: str) -> None:
    """Give the slot back (the socket closed)."""
    redis = _redis()
    if redis is not None:
        redis.zrem(cache.make_key(KEY.format(user_id)), socket_id)
        return
    with _local_lock:
        leases = _local_leases(user_id)
        leases.pop(socket_id, None)
        _local_store(user_id, leases)


def sockets_open(*, user_id: int) -> int:
    """How many sockets ``user_id`` holds now (lapsed leases not counted)."""
    now = time.time()
    redis = _redis()
    if redis is not None:
        return int(redis.zcount(cache.make_key(KEY.format(user_id)), f"({now}", "+inf"))
    return sum(1 for expires in _local_leases(user_id).values() if expires > now)
