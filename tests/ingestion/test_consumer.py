"""The consumer's back-pressure (a slow socket holds only the latest tick per instrument)
and removals; the socket's own handling (limits, origin, cleanup) is tested against a
real uvicorn in test_websocket.py."""

import asyncio
import json

from ingestion.consumers import TicksConsumer, nests_deeper
from tests.helpers import eventually


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


async def sent_by(instance, count):
    """Run the consumer's sender until it has sent ``count`` frames; the frames."""
    sent = []

    async def base_send(message):
        sent.append(json.loads(message["text"]))

    instance.base_send = base_send
    sender = asyncio.create_task(instance._send_loop())
    try:
        await eventually(lambda: len(sent) >= count, what=f"{count} frames")
    finally:
        sender.cancel()
    return sent


def test_a_removed_instrument_is_dropped_from_what_is_pending_and_announced():
    async def run():
        wide = consumer()
        await wide.ticks_batch(batch(1))
        await wide.ticks_removed({"type": "ticks.removed", "tokens": [2, 3, 99]})
        return await sent_by(wide, 2)

    removed, ticks = asyncio.run(run())
    assert removed == {"type": "removed", "tokens": [2, 3, 99]}
    assert ticks["type"] == "ticks" and [t["instrument_token"] for t in ticks["ticks"]] == [1, 4, 5]


def test_a_narrowed_client_hears_only_of_its_own_removed_instruments():
    async def run():
        narrow = consumer(tokens={2, 4})
        await narrow.ticks_removed({"type": "ticks.removed", "tokens": [1, 3]})
        assert not narrow.wakeup.is_set()  # nothing for it
        await narrow.ticks_removed({"type": "ticks.removed", "tokens": [3, 4]})
        return await sent_by(narrow, 1)

    assert asyncio.run(run()) == [{"type": "removed", "tokens": [4]}]


def test_nesting_is_measured_without_parsing_and_brackets_in_strings_do_not_count():
    assert not nests_deeper('{"action": "subscribe", "tokens": [1, 2]}', 2)
    assert nests_deeper('{"a": [[1]]}', 2)
    assert not nests_deeper('{"preset": "[[[[[[[[[[", "x": "\\"}', 1)
    assert nests_deeper("[" * 100000, 4)
