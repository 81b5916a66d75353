"""The latest-tick store: receive times, "no older than", and discarding entries."""

from datetime import timedelta

import pytest
from django.core.cache import cache
from django.utils import timezone

from ingestion.latest import (
    HASH_KEY,
    KEY,
    _redis,
    latest_discard,
    latest_store,
    latest_tick,
    latest_ticks,
    latest_tokens,
)

TICK = '{"instrument_token":%d,"last_price":"101.5"}'


def test_a_stored_tick_carries_the_time_it_was_received():
    received = timezone.now() - timedelta(seconds=3)
    latest_store({256265: TICK % 256265}, received_at=received)
    tick = latest_tick(256265)
    assert tick["last_price"] == "101.5"
    assert abs((timezone.datetime.fromisoformat(tick["received_at"]) - received).total_seconds()) < 0.001
    assert tick["received_at"].endswith("+05:30")  # shown in exchange time


def test_readers_can_refuse_ticks_older_than_they_accept():
    now = timezone.now()
    latest_store({1: TICK % 1}, received_at=now - timedelta(hours=30))  # yesterday's price
    latest_store({2: TICK % 2}, received_at=now)
    assert set(latest_ticks([1, 2, 3])) == {1, 2}
    assert set(latest_ticks([1, 2, 3], max_age=5)) == {2}
    assert latest_tick(1, max_age=60) is None


def test_discarded_ticks_are_gone_and_others_stay():
    latest_store({1: TICK % 1, 2: TICK % 2})
    latest_discard([1, 99])
    assert set(latest_ticks([1, 2])) == {2}
    latest_discard([])  # nothing to do is not an error


def test_the_stored_tokens_can_be_listed_so_the_feed_can_prune_them():
    assert latest_tokens() == set()
    latest_store({1: TICK % 1, 2: TICK % 2})
    latest_store({3: TICK % 3})
    assert latest_tokens() == {1, 2, 3}
    latest_discard([2])
    assert latest_tokens() == {1, 3}


def test_a_value_without_a_receive_time_is_never_served():
    """Written by a version that did not stamp ticks: its age is unknown."""
    redis = _redis()
    if redis is not None:
        redis.hset(cache.make_key(HASH_KEY), mapping={7: TICK % 7})
    else:
        cache.set(KEY.format(7), TICK % 7)
    assert latest_ticks([7]) == {}


@pytest.mark.redis
def test_on_redis_the_hash_expires_a_day_after_the_last_write():
    redis = _redis()
    if redis is None:
        pytest.skip("needs Redis: set REDIS_URL=redis://...")
    latest_store({1: TICK % 1})
    assert 0 < redis.ttl(cache.make_key(HASH_KEY)) <= 24 * 3600
