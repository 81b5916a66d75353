"""Spreading the active set over the feed's connections (Kite: 3 x 3000 per API key)."""

from __future__ import annotations


def shard(ordered: list[tuple[int, str]], *, current: list[dict[int, str]], per_connection: int,
          max_connections: int) -> tuple[list[dict[int, str]], list[int]]:  # fmt: skip
    """Assign ``ordered`` (token, mode) pairs to at most ``max_connections`` shards of at
    most ``per_connection``; returns the shards and the tokens that do not fit.

    Sticky: a token stays on the connection that already streams it, so activating one
    instrument never moves others between connections. New tokens fill the first
    connection with room. What does not fit is cut in ``ordered``'s (stable) order.
    """
    capacity = per_connection * max_connections
    streamed, overflow = ordered[:capacity], [token for token, _ in ordered[capacity:]]
    wanted = dict(streamed)
    shards: list[dict[int, str]] = []
    for index in range(max_connections):
        previous = current[index] if index < len(current) else {}
        shards.append({token: wanted[token] for token in previous if token in wanted})
    placed = {token for s in shards for token in s}
    for token, mode in streamed:
        if token in placed:
            continue
        for s in shards:
            if len(s) < per_connection:
                s[token] = mode
                placed.add(token)
                break
    while shards and not shards[-1]:
        shards.pop()
    return shards, overflow
