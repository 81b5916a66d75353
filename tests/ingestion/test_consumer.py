"""The consumer's back-pressure: a slow socket holds only the latest tick per instrument."""

import asyncio
import json

from ingestion.consumers import TicksConsumer


def consumer(tokens=None):
    instance = TicksConsumer()
    instance.tokens = tokens
    instance.pending = {}
    instance.wakeup = asyncio.Event()
    return instance


def batch(n):
    return {
        "type": "ticks.batch",
        "ticks": [[t, json.dumps({"instrument_token": t, "last_price": str(n)})] for t in range(1, 6)],
    }


def test_a_slow_client_keeps_only_the_latest_state():
    async def run():
        slow = consumer()
        for n in range(5000):  # the socket never drains meanwhile
            await slow.ticks_batch(batch(n))
        return slow

    slow = asyncio.run(run())
    assert len(slow.pending) == 5
    assert {json.loads(tick)["last_price"] for tick in slow.pending.values()} == {"4999"}
    assert slow.wakeup.is_set()


def test_a_narrowed_client_keeps_only_its_tokens():
    async def run():
        narrow = consumer(tokens={2, 4})
        await narrow.ticks_batch(batch(1))
        return narrow

    assert set(asyncio.run(run()).pending) == {2, 4}
