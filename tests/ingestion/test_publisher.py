"""The publisher: coalescing, receive times, removals and failures, against the real
latest-tick store and a channel layer (in memory, or one that fails like Redis away)."""

import asyncio
import json

from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from django.test import override_settings

from ingestion.latest import latest_ticks
from ingestion.publisher import TICKS_GROUP, TickPublisher

BREAKABLE_LAYER = {"default": {"BACKEND": "tests.ingestion.layers.BreakableLayer", "CONFIG": {"expiry": 10}}}
META = {1: {"tradingsymbol": "ONE"}, 2: {"tradingsymbol": "TWO"}}
DB = sync_to_async(lambda fn, *a: fn(*a), thread_sensitive=True)


def tick(token, price):
    return {"instrument_token": token, "mode": "ltp", "last_price": price}


async def drain_channel(layer, channel):
    messages = []
    while True:
        try:
            messages.append(await asyncio.wait_for(layer.receive(channel), 0.2))
        except TimeoutError:
            return messages


async def joined(layer):
    channel = await layer.new_channel()
    await layer.group_add(TICKS_GROUP, channel)
    return channel


def test_the_stored_tick_is_stamped_with_when_it_was_received_not_when_it_was_stored(monkeypatch):
    clock = {"now": 1_764_560_100.0}
    monkeypatch.setattr("ingestion.publisher.time.time", lambda: clock["now"])

    async def run():
        publisher = TickPublisher(meta=lambda: META, db=DB)
        publisher.add([tick(1, "10.5")])  # received now
        clock["now"] += 5  # ...and published (then stored) five seconds later
        publisher.add([tick(2, "20")])
        await publisher.flush()
        await publisher.drain()

    asyncio.run(run())
    stored = latest_ticks([1, 2])
    # The batch carries the oldest receive time in it: an age is never under-stated.
    assert stored[1]["received_at"] == stored[2]["received_at"] == "2025-12-01T09:05:00.000+05:30"
    assert stored[1]["last_price"] == "10.5"


def test_ticks_of_instruments_not_streamed_are_ignored_and_coalesced_per_instrument():
    async def run():
        layer = get_channel_layer()
        channel = await joined(layer)
        publisher = TickPublisher(meta=lambda: META, db=DB)
        publisher.add([tick(1, "1"), tick(1, "2"), tick(3, "9"), tick(2, "5")])
        await publisher.flush()
        await publisher.drain()
        return await drain_channel(layer, channel)

    [message] = asyncio.run(run())
    assert message["type"] == "ticks.batch"
    assert {token: json.loads(text)["last_price"] for token, text in message["ticks"]} == {1: "2", 2: "5"}
    assert set(latest_ticks([1, 2, 3])) == {1, 2}


def test_removal_is_announced_before_later_ticks_and_the_latest_tick_dropped():
    meta = dict(META)

    async def run():
        layer = get_channel_layer()
        channel = await joined(layer)
        publisher = TickPublisher(meta=lambda: meta, db=DB)
        publisher.add([tick(1, "1"), tick(2, "2")])
        await publisher.flush()
        await publisher.drain()
        assert set(latest_ticks([1, 2])) == {1, 2}
        publisher.add([tick(2, "3")])  # pending when the feed stops streaming it
        del meta[2]
        publisher.remove([2])
        publisher.add([tick(1, "4"), tick(2, "5")])  # a late tick of the removed one
        await publisher.flush()
        await publisher.drain()
        return await drain_channel(layer, channel)

    first, removed, after = asyncio.run(run())
    assert first["type"] == "ticks.batch"
    assert removed == {"type": "ticks.removed", "tokens": [2]}
    assert after["type"] == "ticks.batch" and [token for token, _ in after["ticks"]] == [1]
    assert set(latest_ticks([1, 2])) == {1}


@override_settings(CHANNEL_LAYERS=BREAKABLE_LAYER)
def test_a_batch_that_could_not_be_published_goes_out_with_the_next_and_the_failure_is_counted():
    async def run():
        layer = get_channel_layer()
        channel = await joined(layer)
        publisher = TickPublisher(meta=lambda: META, db=DB)
        layer.broken = True
        publisher.add([tick(1, "1"), tick(2, "2")])
        await publisher.flush()
        assert publisher.publish_health.failing and publisher.publish_health.total == 1
        assert "ConnectionError" in publisher.publish_health.error
        layer.broken = False
        publisher.add([tick(2, "3")])  # newer than the one that failed
        await publisher.flush()
        await publisher.drain()
        assert not publisher.publish_health.failing and publisher.publish_health.total == 1
        return await drain_channel(layer, channel)

    [message] = asyncio.run(run())
    assert {token: json.loads(text)["last_price"] for token, text in message["ticks"]} == {1: "1", 2: "3"}


@override_settings(CHANNEL_LAYERS=BREAKABLE_LAYER)
def test_a_removal_that_could_not_be_announced_is_announced_again():
    meta = dict(META)

    async def run():
        layer = get_channel_layer()
        channel = await joined(layer)
        publisher = TickPublisher(meta=lambda: meta, db=DB)
        del meta[2]
        publisher.remove([2])
        layer.broken = True
        await publisher.flush()
        layer.broken = False
        await publisher.flush()
        await publisher.drain()
        return await drain_channel(layer, channel)

    assert asyncio.run(run()) == [{"type": "ticks.removed", "tokens": [2]}]
