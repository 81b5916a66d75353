from ingestion.sharding import shard


def pairs(tokens, mode="quote"):
    return [(t, mode) for t in tokens]


def test_fills_connections_of_3000_and_cuts_the_rest_in_order():
    shards, overflow = shard(pairs(range(1, 9501)), current=[], per_connection=3000, max_connections=3)
    assert [len(s) for s in shards] == [3000, 3000, 3000]
    assert overflow == list(range(9001, 9501))
    assert not set(shards[0]) & set(shards[1])


def test_small_set_uses_one_connection():
    shards, overflow = shard(pairs([1, 2, 3]), current=[], per_connection=3000, max_connections=3)
    assert shards == [{1: "quote", 2: "quote", 3: "quote"}] and overflow == []


def test_sticky_assignment_moves_nothing_when_one_is_added_or_removed():
    shards, _ = shard(pairs(range(1, 6001)), current=[], per_connection=3000, max_connections=3)
    ordered = pairs([0, *range(2, 6001)])  # 0 is new (sorts first), 1 was removed
    again, overflow = shard(ordered, current=shards, per_connection=3000, max_connections=3)
    assert overflow == []
    assert set(again[1]) == set(shards[1])  # the second connection is untouched
    assert 0 in again[0] and 1 not in again[0]


def test_modes_follow_the_desired_set():
    shards, _ = shard([(1, "full"), (2, "ltp")], current=[{1: "quote", 2: "quote"}], per_connection=10,
                      max_connections=3)  # fmt: skip
    assert shards == [{1: "full", 2: "ltp"}]


def test_emptied_set_drops_every_connection():
    shards, overflow = shard([], current=[{1: "quote"}], per_connection=3000, max_connections=3)
    assert shards == [] and overflow == []
