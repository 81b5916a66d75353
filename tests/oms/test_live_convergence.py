"""Three sources, one state: Kite's postbacks, the ticker's order messages and polls of its
order book and trades, interleaved in any order and any number of times, leave a LIVE order
exactly as Kite has it (status, quantity and price after modifications, fills, average price,
the position). The broker's story of one order is played by the fake Kite's own order book
(tests/fakes/kite_rest.py): every row it goes through is a postback and a ticker message,
and after every step a poll reads its order row and its trades, in the shapes each source
delivers them (a postback's JSON numbers as decimals, the ticker's and kiteconnect's as
floats; kiteconnect's timestamps parsed)."""

import itertools
import json
from datetime import datetime, timedelta
from decimal import Decimal as D

import pytest
from django.utils import timezone
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from oms import state
from oms.brokers.kite import fills_from_kite_trades, kite_row, update_from_kite_order
from oms.models import Order, OrderEvent, Position, Trade
from oms.services import order_update_from_feed, order_update_from_postback
from oms.updates import order_update
from tests.fakes.kite_rest import IST, FakeKite, dumps

pytestmark = pytest.mark.django_db
pytest_plugins = ["tests.oms.live_fixtures"]  # live, infy
_keys = itertools.count(1)


def ticking_clock(steps):
    """Kite's clock for one story: each row a second (or, ``steps`` drawn 0, the same second) later."""
    moments = itertools.accumulate(steps, initial=0)
    start = datetime(2025, 6, 16, 9, 20, tzinfo=IST)
    return lambda: start + timedelta(seconds=next(moments, 10_000))


def as_postback(row):
    """A postback's body as the API parses it (numbers as decimals)."""
    return json.loads(dumps(row), parse_float=D)


def as_ticker(row):
    return json.loads(dumps(row))  # the ticker's JSON numbers are floats


def as_polled(rows):
    """Rows as ``KiteBroker.orders()``/``trades()`` return them (kiteconnect's floats and
    parsed timestamps, back as exact decimals, aware in IST)."""
    parsed = json.loads(dumps(rows))
    for row in parsed:
        for key in ("order_timestamp", "exchange_timestamp", "exchange_update_timestamp", "fill_timestamp"):
            if isinstance(row.get(key), str) and len(row[key]) == 19:
                row[key] = datetime.strptime(row[key], "%Y-%m-%d %H:%M:%S")  # noqa: DTZ007 - as kiteconnect does
    return kite_row(parsed)


# What happens to the order at Kite after it is placed, step by step.
STEPS = st.lists(
    st.one_of(
        st.tuples(st.just("fill"), st.integers(1, 60)),
        st.tuples(st.just("modify"), st.integers(-20, 30), st.integers(-40, 40)),
    ),
    max_size=5,
)
ENDS = st.sampled_from(["cancel", "complete", "working"])


def play(fake, order_id, steps, end):
    """Play the story at the fake Kite; returns the polls (Kite's row and trades after each step)."""
    polls = []

    def snapshot():
        polls.append((fake.order(order_id), [t for t in fake.trades() if t["order_id"] == order_id]))

    snapshot()
    for step in steps:
        row = fake.order(order_id)
        pending, filled = row["pending_quantity"], row["filled_quantity"]
        if step[0] == "fill" and pending > 1:
            fake.fill(order_id, quantity=min(step[1], pending - 1))  # partial: the end decides the rest
        elif step[0] == "modify":
            quantity = max(filled + 1, row["quantity"] + step[1])
            with fake._lock:
                fake._modify(order_id, {"quantity": str(quantity), "price": str(D(100) + D(step[2]) / 20)})
        snapshot()
    if end == "cancel":
        with fake._lock:
            fake._cancel(order_id)
    elif end == "complete":
        fake.fill(order_id)
    snapshot()
    return polls


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    quantity=st.integers(2, 100), steps=STEPS, end=ENDS, answered=st.booleans(),
    same_second=st.one_of(st.just([False] * 60), st.lists(st.booleans(), min_size=60, max_size=60)),
    data=st.data(),
)  # fmt: skip
def test_postbacks_ticker_messages_and_polls_in_any_order_converge_to_kites_state(
    live, infy, quantity, steps, end, answered, same_second, data
):
    ties = any(same_second)  # rows in one second cannot be ordered: the next poll settles them
    fake = FakeKite(clock=ticking_clock([0 if tie else 1 for tie in same_second]))
    fake._ids = itertools.count(next(_keys) * 1000)  # Kite's ids stay unique across the examples
    now = timezone.now()
    ours = Order.objects.create(
        strategy=live, instrument=infy, exchange="NSE", tradingsymbol="INFY", instrument_token=408065,
        transaction_type="BUY", quantity=quantity, product="MIS", order_type="LIMIT", price=D("100"),
        broker="kite", idempotency_key=f"conv-{next(_keys)}", pending_quantity=quantity, placed_at=now,
        updated_at=now,
    )  # fmt: skip
    with fake._lock:
        placed = fake._place("regular", {
            "exchange": "NSE", "tradingsymbol": "INFY", "transaction_type": "BUY", "quantity": str(quantity),
            "product": "MIS", "order_type": "LIMIT", "price": "100", "tag": f"TP{ours.pk}",
        })  # fmt: skip
    kite_id = placed["order_id"]
    if answered:  # else Kite's answer was lost: the rows find the order by its tag
        Order.objects.filter(pk=ours.pk).update(broker_order_id=kite_id)
    polls = play(fake, kite_id, steps, end)
    history = fake._history[kite_id]

    messages = []
    # Every row Kite went through is a ticker message and a postback (a partial fill or a
    # modification as UPDATE, as Kite's postbacks send them).
    for before, row in zip([None, *history], history, strict=False):
        messages.append(("ticker", row))
        moved = before is not None and (
            row["filled_quantity"] != before["filled_quantity"] or row["modified"] != before["modified"]
            or row["quantity"] != before["quantity"] or row["price"] != before["price"]
        )  # fmt: skip
        postback = (
            {**row, "status": "UPDATE"} if moved and row["status"] in ("OPEN", "TRIGGER PENDING") else row
        )
        messages.append(("postback", postback))
    messages += [("poll", snapshot) for snapshot in polls]
    arrivals = data.draw(st.permutations(messages))
    arrivals += data.draw(st.lists(st.sampled_from(messages), max_size=8))  # repeats
    if ties:
        arrivals.append(("poll", polls[-1]))  # the poll that comes every 30 s

    for source, message in arrivals:
        if source == "ticker":
            order_update_from_feed(data=as_ticker(message))
        elif source == "postback":
            order_update_from_postback(data=as_postback(message))
        else:
            row, trades = message
            [polled] = as_polled([row])
            update = update_from_kite_order(polled, tick_size=infy.tick_size)
            update.fills = fills_from_kite_trades(as_polled(trades)).get(kite_id, [])
            order_update(order_id=ours.pk, update=update, source="poll", broker="kite", actor="poll")

    final = fake.order(kite_id)
    trades = [t for t in fake.trades() if t["order_id"] == kite_id]
    ours.refresh_from_db()
    assert ours.broker_order_id == kite_id
    assert ours.status == final["status"]
    assert (ours.quantity, ours.price) == (final["quantity"], final["price"])
    assert ours.filled_quantity == final["filled_quantity"] == sum(t["quantity"] for t in trades)
    assert ours.pending_quantity == (final["pending_quantity"] if final["status"] == state.OPEN else 0)
    assert ours.cancelled_quantity == final["cancelled_quantity"]
    assert Trade.objects.filter(order=ours).count() == len(trades)
    if trades:
        value = sum(D(t["average_price"]) * t["quantity"] for t in trades)
        assert ours.fill_value == value
    position = Position.objects.filter(strategy=live, instrument=infy).first()
    traded = sum(Trade.objects.filter(strategy=live, instrument=infy).values_list("quantity", flat=True))
    assert (position.buy_quantity if position else 0) == traded  # every fill moved the position once
    assert not OrderEvent.objects.filter(order=ours, kind__in=[OrderEvent.Kind.OVERFILL,
                                                               OrderEvent.Kind.CONFLICTING_FILL]).exists()  # fmt: skip


def test_an_older_row_never_undoes_a_newer_modification(live, infy):
    """The case the property covers, spelled out: Kite's row of the first modification
    arrives after the row of the second."""
    fake = FakeKite(clock=ticking_clock([1] * 60))
    now = timezone.now()
    ours = Order.objects.create(
        strategy=live, instrument=infy, exchange="NSE", tradingsymbol="INFY", instrument_token=408065,
        transaction_type="BUY", quantity=10, product="MIS", order_type="LIMIT", price=D("100"), broker="kite",
        idempotency_key="older-row", pending_quantity=10, placed_at=now, updated_at=now,
    )  # fmt: skip
    with fake._lock:
        kite_id = fake._place("regular", {"exchange": "NSE", "tradingsymbol": "INFY", "transaction_type": "BUY",
                                          "quantity": "10", "product": "MIS", "order_type": "LIMIT", "price": "100",
                                          "tag": f"TP{ours.pk}"})["order_id"]  # fmt: skip
        fake._modify(kite_id, {"quantity": "12", "price": "100.5"})
        first = fake.order(kite_id)
        fake._modify(kite_id, {"quantity": "15", "price": "101"})
        second = fake.order(kite_id)
    Order.objects.filter(pk=ours.pk).update(broker_order_id=kite_id)

    order_update_from_postback(data=as_postback(second))
    stale = order_update_from_feed(data=as_ticker(first))
    ours.refresh_from_db()
    assert (ours.quantity, ours.price, ours.pending_quantity) == (15, D("101"), 15)
    assert stale.kinds == [OrderEvent.Kind.STALE_UPDATE]
