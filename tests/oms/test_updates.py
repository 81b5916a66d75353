"""The one update service: duplicates, conflicts, overfills, reordering, unknown orders."""

import itertools
from decimal import Decimal as D

import pytest
from django.utils import timezone
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from oms import state
from oms.models import Order, OrderEvent, Position, Trade
from oms.updates import Fill, OrderUpdate, order_update

pytestmark = pytest.mark.django_db
_ids = itertools.count(1)


def kite_order(strategy, instrument, *, quantity=10, side="BUY"):
    now = timezone.now()
    n = next(_ids)
    return Order.objects.create(
        strategy=strategy, instrument=instrument, exchange=instrument.exchange, tradingsymbol=instrument.tradingsymbol,
        instrument_token=instrument.instrument_token, transaction_type=side, quantity=quantity, product="MIS",
        order_type="LIMIT", price=D("100"), broker="kite", broker_order_id=f"B{n}", idempotency_key=f"u{n}",
        pending_quantity=quantity, placed_at=now, updated_at=now,
    )  # fmt: skip


def apply(order, **fields):
    return order_update(update=OrderUpdate(broker_order_id=order.broker_order_id, **fields), source="postback",
                        broker="kite")  # fmt: skip


def test_a_duplicate_fill_is_applied_once(manual, reliance):
    order = kite_order(manual, reliance)
    fill = Fill(trade_id="T1", quantity=4, price=D("100.05"))
    apply(order, status=state.OPEN, fills=[fill])
    again = apply(order, fills=[fill])
    order.refresh_from_db()
    assert order.filled_quantity == 4 and Trade.objects.filter(order=order).count() == 1
    assert again.kinds == [OrderEvent.Kind.DUPLICATE_FILL]
    assert Position.objects.get(instrument=reliance).quantity == 4


def test_the_same_trade_id_with_other_data_is_surfaced_not_applied(manual, reliance):
    order = kite_order(manual, reliance)
    apply(order, fills=[Fill(trade_id="T1", quantity=4, price=D("100.05"))])
    conflict = apply(order, fills=[Fill(trade_id="T1", quantity=6, price=D("99"))])
    order.refresh_from_db()
    assert conflict.kinds == [OrderEvent.Kind.CONFLICTING_FILL] and order.filled_quantity == 4


def test_an_overfill_is_refused(manual, reliance):
    order = kite_order(manual, reliance, quantity=10)
    apply(order, fills=[Fill(trade_id="T1", quantity=8, price=D("100"))])
    refused = apply(order, fills=[Fill(trade_id="T2", quantity=5, price=D("100"))])
    order.refresh_from_db()
    assert refused.kinds == [OrderEvent.Kind.OVERFILL] and order.filled_quantity == 8
    assert order.status == state.OPEN  # the first fill implied the acceptance


def test_terminal_states_never_change_and_illegal_transitions_are_recorded(manual, reliance):
    order = kite_order(manual, reliance)
    apply(order, status=state.CANCELLED)
    late = apply(order, status=state.OPEN)
    order.refresh_from_db()
    assert order.status == state.CANCELLED and late.kinds == [OrderEvent.Kind.ILLEGAL_TRANSITION]
    assert order.cancelled_quantity == 10 and order.pending_quantity == 0


def test_complete_before_its_fills_waits_for_them(manual, reliance):
    order = kite_order(manual, reliance, quantity=10)
    early = apply(order, status=state.COMPLETE)
    order.refresh_from_db()
    assert order.status == state.PUT_ORDER_REQ_RECEIVED and early.kinds == [OrderEvent.Kind.WARNING]
    apply(order, fills=[Fill(trade_id="T1", quantity=6, price=D("100"))])
    apply(order, fills=[Fill(trade_id="T2", quantity=4, price=D("101"))])
    order.refresh_from_db()
    assert order.status == state.COMPLETE and order.average_price == D("100.4000")


def test_a_stale_non_terminal_status_is_ignored(manual, reliance):
    order = kite_order(manual, reliance)
    apply(order, status=state.TRIGGER_PENDING, sequence=1)
    apply(order, status=state.OPEN, sequence=3)
    stale = apply(order, status=state.TRIGGER_PENDING, sequence=2)
    order.refresh_from_db()
    assert order.status == state.OPEN and stale.kinds == [OrderEvent.Kind.STALE_UPDATE]


def test_an_update_for_an_order_we_do_not_know_is_recorded(manual):
    applied = order_update(update=OrderUpdate(broker_order_id="999", status=state.COMPLETE,
                                              payload={"order_id": "999", "checksum": "abc"}),
                           source="postback", broker="kite")  # fmt: skip
    assert applied.order is None
    event = OrderEvent.objects.get(broker_order_id="999")
    assert event.kind == OrderEvent.Kind.UNKNOWN_ORDER and event.payload["checksum"] == "********"


def _histories():
    """A broker's true story of one order: its fills, and whether it ends COMPLETE or CANCELLED."""
    return st.tuples(
        st.integers(1, 6).flatmap(lambda n: st.lists(st.integers(1, 20), min_size=n, max_size=n)),
        st.booleans(),
        st.lists(st.decimals(min_value=D("90"), max_value=D("110"), places=2), min_size=6, max_size=6),
    )


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(history=_histories(), data=st.data())
def test_updates_in_any_order_with_duplicates_converge_to_the_broker_state(manual, reliance, history, data):
    sizes, completes, prices = history
    filled_true = sizes if completes else sizes[:-1] or []
    quantity = sum(sizes)
    order = kite_order(manual, reliance, quantity=quantity)
    fills = [Fill(trade_id=f"{order.broker_order_id}-{i}", quantity=q, price=prices[i])
             for i, q in enumerate(filled_true)]  # fmt: skip
    updates = [OrderUpdate(status=s, sequence=n) for n, s in enumerate(
        [state.VALIDATION_PENDING, state.OPEN_PENDING, state.OPEN])]  # fmt: skip
    updates += [OrderUpdate(status=state.UPDATE, fills=[f]) for f in fills]
    updates.append(OrderUpdate(status=state.COMPLETE if completes else state.CANCELLED, sequence=99))
    arrivals = data.draw(st.permutations(updates))
    arrivals += data.draw(st.lists(st.sampled_from(updates), max_size=5))  # duplicates
    for update in arrivals:
        update.broker_order_id = order.broker_order_id
        order_update(update=update, source="postback", broker="kite")
    order.refresh_from_db()
    filled = sum(f.quantity for f in fills)
    assert order.status == (state.COMPLETE if completes else state.CANCELLED)
    assert order.filled_quantity == filled
    assert order.pending_quantity == 0 and order.cancelled_quantity == quantity - filled
    assert Trade.objects.filter(order=order).count() == len(fills)
    if filled:
        value = sum(f.price * f.quantity for f in fills)
        assert order.fill_value == value
        assert abs(order.average_price - value / filled) < D("0.0001")


@pytest.mark.parametrize("bad", [D(0), D("-1"), D("NaN"), D("Infinity")])
def test_a_fill_at_an_impossible_price_is_refused(manual, reliance, bad):
    order = kite_order(manual, reliance)
    refused = apply(order, fills=[Fill(trade_id="T1", quantity=4, price=bad)])
    order.refresh_from_db()
    assert refused.kinds == [OrderEvent.Kind.CONFLICTING_FILL] and order.filled_quantity == 0
    assert not Trade.objects.exists() and not Position.objects.exists()


def test_a_long_trade_id_is_still_applied_once(manual, reliance):
    order = kite_order(manual, reliance)
    fill = Fill(trade_id="9" * 80, quantity=4, price=D("100"))
    apply(order, fills=[fill])
    again = apply(order, fills=[fill])
    assert again.kinds == [OrderEvent.Kind.DUPLICATE_FILL] and Trade.objects.count() == 1
