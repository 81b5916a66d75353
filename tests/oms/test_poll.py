"""The poll of Kite's order book and trades (oms/poll.py) against the fake Kite REST server
(tests/fakes/kite_rest.py), reached through KITE_API_URL: our LIVE orders get what Kite's
books say through the one update service, once, whatever else told them first."""

import itertools
from decimal import Decimal as D

import pytest
from django.utils import timezone

from oms import state
from oms.brokers.base import BrokerUnavailable
from oms.brokers.kite import KiteBroker, order_tag
from oms.models import Order, OrderEvent, Position, Trade
from oms.poll import orders_poll
from oms.updates import OrderUpdate, order_update
from tests.factories import NiftyOptionFactory
from tests.oms import book_fixtures

kite, live, infy = book_fixtures.kite, book_fixtures.live, book_fixtures.infy  # shared fixtures
pytestmark = pytest.mark.django_db
_keys = itertools.count(1)


def live_order(strategy, instrument, *, quantity=10, order_type="LIMIT", price="1500.05", side="BUY",
               product="MIS", send=True):  # fmt: skip
    """A LIVE order as the services store it, sent to Kite with its answer applied (send)."""
    now = timezone.now()
    order = Order.objects.create(
        strategy=strategy, instrument=instrument, exchange=instrument.exchange, tradingsymbol=instrument.tradingsymbol,
        instrument_token=instrument.instrument_token, transaction_type=side, quantity=quantity, product=product,
        order_type=order_type, price=D(price), broker="kite", idempotency_key=f"poll-{next(_keys)}",
        pending_quantity=quantity, placed_at=now, updated_at=now,
    )  # fmt: skip
    if send:
        update = KiteBroker().place(order, freeze_quantity=1800 if instrument.exchange == "NFO" else None)
        order_update(order_id=order.pk, update=update, source="kite", broker="kite", actor="test")
        order.refresh_from_db()
    return order


def events(order, source="poll"):
    return list(OrderEvent.objects.filter(order=order, source=source).values_list("kind", "new_status"))


def test_an_order_working_at_kite_gets_its_status_and_then_its_fills_from_the_poll(kite, live, infy):
    order = live_order(live, infy, quantity=10, price="1500.05")
    assert (order.status, order.broker_order_id) == (
        state.PUT_ORDER_REQ_RECEIVED,
        kite.orders()[0]["order_id"],
    )

    result = orders_poll()
    order.refresh_from_db()
    assert order.status == state.OPEN and order.exchange_order_id
    assert events(order) == [("status", state.OPEN)]
    assert result.counts["statuses"] == 1 and result.counts["fills"] == 0

    kite.fill(order.broker_order_id, quantity=4, price="1500.00")
    orders_poll()
    order.refresh_from_db()
    assert (order.status, order.filled_quantity, order.average_price) == (state.OPEN, 4, D("1500.00"))
    [trade] = Trade.objects.filter(order=order)
    assert trade.trade_id.startswith(f"{order.broker_order_id}:") and trade.price == D("1500.00")

    kite.fill(order.broker_order_id)  # the rest, at its limit
    orders_poll()
    order.refresh_from_db()
    assert (order.status, order.filled_quantity, order.average_price) == (state.COMPLETE, 10, D("1500.03"))
    position = Position.objects.get(strategy=live, instrument=infy)
    assert (position.quantity, position.average_price) == (10, D("1500.03"))


def test_a_poll_that_finds_nothing_new_writes_nothing(kite, live, infy):
    order = live_order(live, infy)
    kite.fill(order.broker_order_id, quantity=3)
    orders_poll()
    before = OrderEvent.objects.count()

    again = orders_poll()
    assert again.counts["updated"] == 0 and again.events == []
    assert OrderEvent.objects.count() == before  # no duplicate-fill noise every 30 s either
    assert Trade.objects.filter(order=order).count() == 1


def test_an_order_kite_has_though_its_placement_answer_was_lost_is_found_by_its_tag(kite, live, infy):
    order = live_order(live, infy, send=False)  # outcome unknown: no Kite id here
    kite_id = kite.place_direct(exchange="NSE", tradingsymbol="INFY", transaction_type="BUY", quantity=10,
                                order_type="LIMIT", price="1500.05", tag=order_tag(order.pk))  # fmt: skip
    orders_poll()
    order.refresh_from_db()
    assert (order.broker_order_id, order.status) == (kite_id, state.OPEN)
    assert len(kite.placements()) == 0  # found, never sent


def test_an_order_kite_rejected_after_placement_is_rejected_here_with_kites_reason(kite, live, infy):
    order = live_order(live, infy)
    kite.set_status(
        order.broker_order_id, "REJECTED", "RMS:Margin Exceeds, Required:15000.50, Available:900.00"
    )
    orders_poll()
    order.refresh_from_db()
    assert order.status == state.REJECTED
    assert order.status_message.startswith("RMS:Margin Exceeds")


def test_an_autosliced_order_is_one_order_filled_by_its_slices(kite, live):
    option = NiftyOptionFactory(
        tradingsymbol="NIFTY99DEC24000CE", instrument_token=10189826, tick_size=D("0.05")
    )
    kite.freeze["NFO:NIFTY99DEC24000CE"] = 1800
    kite.prices["NFO:NIFTY99DEC24000CE"] = D("12.30")
    live.allow_autoslice = True
    live.save()
    order = live_order(live, option, quantity=4000, order_type="MARKET", price="0", product="NRML")
    assert [row["quantity"] for row in kite.orders()] == [1800, 1800, 400]

    orders_poll()
    order.refresh_from_db()
    assert (order.status, order.filled_quantity, order.average_price) == (state.COMPLETE, 4000, D("12.30"))
    assert Trade.objects.filter(order=order).count() == 3
    assert Order.objects.count() == 1  # the slices are not orders of ours


def test_a_complete_order_whose_trades_lag_waits_for_them_without_noise(kite, live, infy):
    order = live_order(live, infy, order_type="MARKET", price="0")  # filled at once at Kite
    kite.hide_trades(order.broker_order_id)
    orders_poll()
    orders_poll()
    order.refresh_from_db()
    assert order.status == state.PUT_ORDER_REQ_RECEIVED and order.filled_quantity == 0
    assert events(order) == []  # no "COMPLETE without its fills" warning each poll

    kite.hide_trades(order.broker_order_id, hidden=False)
    orders_poll()
    order.refresh_from_db()
    assert (order.status, order.filled_quantity) == (state.COMPLETE, 10)


def test_a_fill_kite_made_before_a_cancel_is_applied_to_the_order_cancelled_here(kite, live, infy):
    order = live_order(live, infy)
    kite.fill(order.broker_order_id, quantity=4)
    KiteBroker().cancel(order)
    # The cancel's postback came first, without the fill.
    order_update(update=OrderUpdate(status=state.CANCELLED, broker_order_id=order.broker_order_id),
                 source="postback", broker="kite")  # fmt: skip
    orders_poll()
    order.refresh_from_db()
    assert (order.status, order.filled_quantity, order.cancelled_quantity) == (state.CANCELLED, 4, 6)
    assert events(order) == [("fill", state.CANCELLED)]


def test_orders_that_are_not_ours_are_left_alone(kite, live, infy):
    order = live_order(live, infy)
    kite.place_direct(exchange="NSE", tradingsymbol="INFY", transaction_type="SELL", quantity=5)  # Kite's web
    # Our tag on another instrument is not our order either.
    kite.place_direct(
        exchange="NSE", tradingsymbol="TCS", transaction_type="BUY", quantity=1, tag=order_tag(order.pk)
    )
    result = orders_poll()
    assert [kite_id for kite_id, _ in result.book.unknown] == [row["order_id"] for row in kite.orders()[1:]]
    assert list(result.book.matched) == [order.pk]
    assert Order.objects.count() == 1 and Trade.objects.count() == 0


def test_the_same_order_at_kite_twice_is_reported_not_applied(kite, live, infy):
    order = live_order(live, infy)
    again = kite.place_direct(exchange="NSE", tradingsymbol="INFY", transaction_type="BUY", quantity=10,
                              order_type="MARKET", tag=order_tag(order.pk))  # fmt: skip
    result = orders_poll()
    assert [row["order_id"] for _, row in result.book.duplicates] == [again]
    order.refresh_from_db()
    assert (order.status, order.filled_quantity) == (state.OPEN, 0)  # the duplicate's fill is not ours


def test_kite_unreachable_applies_nothing_and_says_so(kite, live, infy):
    order = live_order(live, infy)
    kite.fail_next("503", path="/trades")
    with pytest.raises(BrokerUnavailable):
        orders_poll()
    order.refresh_from_db()
    assert order.status == state.PUT_ORDER_REQ_RECEIVED and events(order) == []


def test_postbacks_ticker_updates_and_polls_in_any_order_end_in_the_same_state(kite, live, infy):
    """The three sources of order updates, interleaved differently, converge."""
    finals = []
    for sequence in (
        ["postback", "ticker", "poll"],
        ["poll", "postback", "ticker"],
        ["ticker", "poll", "postback"],
    ):
        order = live_order(live, infy)
        kite.fill(order.broker_order_id, quantity=4)
        kite.fill(order.broker_order_id)
        row = kite.order(order.broker_order_id)
        message = {"order_id": row["order_id"], "status": row["status"], "exchange_order_id": row["exchange_order_id"],
                   "filled_quantity": row["filled_quantity"]}  # fmt: skip
        for source in sequence:
            if source == "poll":
                orders_poll()
            else:
                update = OrderUpdate(
                    status=message["status"], broker_order_id=message["order_id"], payload=message
                )
                order_update(update=update, source=source, broker="kite", actor=source)
        order.refresh_from_db()
        finals.append((order.status, order.filled_quantity, order.average_price, order.trades.count()))
    assert finals == [(state.COMPLETE, 10, D("1500.05"), 2)] * 3
