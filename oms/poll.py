"""The poll of Kite's order book and trades: what Kite says about our LIVE orders, applied
through the one update service (``oms.updates.order_update``), like a postback or a ticker
order message, in any order and any number of times.

One ``orders()`` and one ``trades()`` call (``KiteBroker``). Kite's rows are matched to our
orders by the tag each carries (``order_id_from_tag``: ``TP<our id>``) or by Kite's order
id, an autoslice child (tagged ``autoslice:<parent>``) to the order that was sliced; a row
whose instrument, side or product is not its order's is not taken as ours. For every
matched order that is not finished here, the book's status, ids and modified values go
through the update service; for every matched order, finished or not, the trades it does
not have yet (a fill's id is ``<Kite order id>:<trade id>``) go through it as fills. A
``COMPLETE`` is passed on only with the fills that prove it (the update service would
wait for them anyway); until the trade book has them, reconciliation reports the order.
Fills already recorded are not sent again, so a poll that finds nothing new writes
nothing.

``orders_poll()`` runs alone (reading Kite's books itself); reconciliation
(``oms.reconciliation``) reads the books once and calls ``book_match`` and
``book_apply`` with them.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

from django.db.models import Q

from oms import state
from oms.brokers.kite import (
    NAME as KITE,
)
from oms.brokers.kite import (
    KiteBroker,
    autoslice_parent_id,
    fills_from_kite_trades,
    kite_decimal,
    order_id_from_tag,
    update_from_autoslice,
    update_from_kite_order,
)
from oms.brokers.kite.rows import kite_integer, row_tags
from oms.models import Order, OrderEvent, Trade
from oms.updates import Fill, OrderUpdate, order_update

logger = logging.getLogger(__name__)
PRICE_PLACES = Decimal("0.0001")
BIGINT = 2**63 - 1  # our order ids are bigints; a tag naming a larger number is not ours
OPEN_STATUSES = sorted(state.PENDING | state.WORKING)
# What an applied update did that counts as a fix (the rest is recorded, not applied).
FIXES = {
    OrderEvent.Kind.STATUS: "statuses",
    OrderEvent.Kind.FILL: "fills",
    OrderEvent.Kind.MODIFY: "modifications",
}


@dataclass
class Matched:
    """One of our orders as Kite's books have it."""

    order: Order
    broker_order_id: str  # Kite's id of it (the parent's, for an autosliced order)
    rows: list[dict[str, Any]]  # its row in the book, or its slices
    update: OrderUpdate  # the book's status, ids, sequence and modified values
    fills: list[Fill] = field(default_factory=list)  # Kite's trades of it
    filled: int = 0  # Kite's filled quantity
    average: Decimal | None = None  # Kite's average price of the fills

    @property
    def sliced(self) -> bool:
        return any(autoslice_parent_id(row) for row in self.rows)


@dataclass
class BrokerBook:
    """Kite's order book and trades, matched to our orders."""

    matched: dict[int, Matched] = field(default_factory=dict)
    # Kite orders that are not ours: (Kite's id, its rows: one, or an autoslice parent's slices).
    unknown: list[tuple[str, list[dict[str, Any]]]] = field(default_factory=list)
    # Kite orders carrying the tag of one of ours that is at Kite as another order.
    duplicates: list[tuple[Order, dict[str, Any]]] = field(default_factory=list)
    # Our LIVE orders not finished here that Kite's book does not have.
    missing: list[Order] = field(default_factory=list)
    orders: int = 0  # rows in the book
    trades: int = 0  # rows in the trade book


@dataclass
class PollResult:
    book: BrokerBook
    events: list[OrderEvent] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def fixes(self) -> list[OrderEvent]:
        return [event for event in self.events if event.kind in FIXES]


def orders_poll(*, source: str = OrderEvent.Source.POLL, actor: str = "poll") -> PollResult:
    """Read Kite's order book and trades once and apply what our LIVE orders miss.

    Raises ``oms.brokers.base.BrokerError`` (``BrokerUnavailable``, ``BrokerLoginNeeded``,
    ...) when Kite's books cannot be read: nothing is applied then."""
    broker = KiteBroker()
    rows, trades = broker.orders(), broker.trades()
    return book_apply(book=book_match(rows=rows, trades=trades), source=source, actor=actor)


# --- matching ----------------------------------------------------------------------------------


def _our_id(row: Mapping[str, Any]) -> int | None:
    for tag in row_tags(row):
        order_id = order_id_from_tag(tag)
        if order_id is not None and 0 < order_id <= BIGINT:
            return order_id
    return None


def _same_contract(order: Order, row: Mapping[str, Any]) -> bool:
    fields = (row.get("exchange"), row.get("tradingsymbol"), row.get("transaction_type"), row.get("product"))
    return fields == (order.exchange, order.tradingsymbol, order.transaction_type, order.product)


def _our_orders(rows: list[dict[str, Any]]) -> tuple[dict[int, Order], dict[str, Order]]:
    """Our orders the rows may be (by tag or Kite's id) and our LIVE orders still open:
    by our id and by Kite's id."""
    tagged = {order_id for row in rows if (order_id := _our_id(row)) is not None}
    kite_ids = {str(row["order_id"]) for row in rows if row.get("order_id")}
    kite_ids |= {parent for row in rows if (parent := autoslice_parent_id(row))}
    orders = Order.objects.select_related("instrument", "strategy").filter(
        Q(pk__in=tagged)
        | Q(broker=KITE, broker_order_id__in=kite_ids)
        | Q(broker=KITE, status__in=OPEN_STATUSES)
    )
    by_id = {order.pk: order for order in orders}
    by_kite_id = {
        order.broker_order_id: order
        for order in by_id.values()
        if order.broker == KITE and order.broker_order_id
    }
    return by_id, by_kite_id


def _owner(row: dict[str, Any], by_id: Mapping[int, Order], by_kite_id: Mapping[str, Order]) -> Order | None:
    """Our order that ``row`` is (or is a slice of), if any."""
    parent = autoslice_parent_id(row)
    order = by_kite_id.get(str(row.get("order_id"))) or (by_kite_id.get(parent) if parent else None)
    if order is None:
        tagged = by_id.get(_our_id(row) or 0)
        order = tagged if tagged is not None and tagged.broker == KITE else None
    if order is not None and not _same_contract(order, row):
        logger.error("Kite order %s carries the tag or id of order %s but not its instrument, side or product: "
                     "not taken as ours", row.get("order_id"), order.pk)  # fmt: skip
        return None
    return order


def book_match(*, rows: Iterable[dict[str, Any]], trades: Iterable[dict[str, Any]]) -> BrokerBook:
    """Kite's order book ``rows`` and trade book ``trades`` (as ``KiteBroker`` returns
    them) matched to our orders."""
    rows, trades = list(rows), list(trades)
    by_id, by_kite_id = _our_orders(rows)
    book = BrokerBook(orders=len(rows), trades=len(trades))
    plain: dict[int, list[dict[str, Any]]] = {}
    slices: dict[int, dict[str, list[dict[str, Any]]]] = {}
    strangers: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        order, parent = _owner(row, by_id, by_kite_id), autoslice_parent_id(row)
        if order is None:
            strangers.setdefault(parent or str(row.get("order_id") or ""), []).append(row)
        elif parent:
            slices.setdefault(order.pk, {}).setdefault(parent, []).append(row)
        else:
            plain.setdefault(order.pk, []).append(row)
    book.unknown = list(strangers.items())
    children: dict[str, str] = {}  # slice id -> the parent id it counts under
    for order_id, parents in slices.items():
        order = by_id[order_id]
        if order.broker_order_id and order.broker_order_id not in parents:
            # Ours is at Kite as another order: these slices carry our tag but are not it.
            book.duplicates.extend((order, row) for rows_of in parents.values() for row in rows_of)
            continue
        parent = order.broker_order_id or min(parents)
        for other in sorted(set(parents) - {parent}):  # sliced twice: the other is not ours
            book.duplicates.extend((order, row) for row in parents[other])
        children.update({str(row["order_id"]): parent for row in parents[parent]})
        book.matched[order_id] = Matched(
            order=order, broker_order_id=parent, rows=parents[parent],
            update=update_from_autoslice(parent, parents[parent], quantity=order.quantity),
        )  # fmt: skip
    for order_id, own in plain.items():
        order = by_id[order_id]
        if order_id in book.matched:  # sliced, and also placed whole: the whole one is the stranger
            book.duplicates.extend((order, row) for row in own)
            continue
        if order.broker_order_id and all(str(row.get("order_id")) != order.broker_order_id for row in own):
            book.duplicates.extend((order, row) for row in own)  # ours is at Kite as another order
            continue
        # Ours first (Kite's id we have, else the earliest), then any other carrying its tag.
        own.sort(
            key=lambda row: (str(row.get("order_id")) != order.broker_order_id, str(row.get("order_id")))
        )
        row, others = own[0], own[1:]
        book.duplicates.extend((order, other) for other in others)
        book.matched[order_id] = Matched(
            order=order, broker_order_id=str(row["order_id"]), rows=[row],
            update=update_from_kite_order(row, tick_size=_tick_size(order)),
        )  # fmt: skip
    _attach_fills(book, trades, children)
    book.missing = [
        order for order in by_id.values()
        if order.broker == KITE and order.status in OPEN_STATUSES and order.pk not in book.matched
    ]  # fmt: skip
    return book


def _tick_size(order: Order) -> Decimal | None:
    tick = order.instrument.tick_size if order.instrument_id else None
    return Decimal(tick) if tick else None


def _attach_fills(book: BrokerBook, trades: list[dict[str, Any]], children: Mapping[str, str]) -> None:
    owners = {m.broker_order_id: m for m in book.matched.values()}
    ticks = {m.order.instrument_token: tick for m in owners.values() if (tick := _tick_size(m.order))}
    ours = [
        row for row in trades if children.get(str(row.get("order_id")), str(row.get("order_id"))) in owners
    ]
    for kite_id, fills in fills_from_kite_trades(ours, tick_sizes=ticks, parents=children).items():
        owners[kite_id].fills = fills
    for matched in book.matched.values():
        filled = [
            (kite_integer(row.get("filled_quantity")) or 0, row.get("average_price")) for row in matched.rows
        ]
        matched.filled = sum(quantity for quantity, _ in filled)
        value = sum(
            (quantity * (kite_decimal(price) or Decimal(0)) for quantity, price in filled), start=Decimal(0)
        )
        matched.average = (
            (value / matched.filled).quantize(PRICE_PLACES, rounding=ROUND_HALF_EVEN)
            if matched.filled
            else None
        )


# --- applying ----------------------------------------------------------------------------------


def _known_trades(book: BrokerBook) -> set[str]:
    ids = {fill.trade_id[:64] for matched in book.matched.values() for fill in matched.fills}
    return (
        set(Trade.objects.filter(broker=KITE, trade_id__in=ids).values_list("trade_id", flat=True))
        if ids
        else set()
    )


def _news(order: Order, update: OrderUpdate) -> bool:
    """Whether ``update`` tells ``order`` anything it does not have."""
    if update.fills:
        return True
    if update.broker_order_id and update.broker_order_id != order.broker_order_id:
        return True
    if update.exchange_order_id and update.exchange_order_id != order.exchange_order_id:
        return True
    if update.status and update.status != state.UPDATE:
        if update.status != order.status:
            return True
        if update.status_message and update.status_message[:2000] != order.status_message:
            return True
    moved = {"quantity": update.quantity, "price": update.price, "trigger_price": update.trigger_price,
             "order_type": update.order_type}  # fmt: skip
    return any(value is not None and getattr(order, name) != value for name, value in moved.items())


def _to_apply(matched: Matched, known: set[str]) -> OrderUpdate:
    """What the books tell ``matched.order`` that it does not have: new fills always; the
    status and modified values only while the order is not finished here; ``COMPLETE``
    only with the fills that prove it."""
    order = matched.order
    fills = [fill for fill in matched.fills if fill.trade_id[:64] not in known]
    update = replace(matched.update, fills=fills)
    if order.is_terminal:
        return replace(update, status=None, status_message="", quantity=None, price=None, trigger_price=None,
                       order_type=None)  # fmt: skip
    if (
        update.status == state.COMPLETE
        and order.filled_quantity + sum(f.quantity for f in fills) < order.quantity
    ):
        update = replace(update, status=None, status_message="")
    return update


def book_apply(*, book: BrokerBook, source: str, actor: str) -> PollResult:
    """Apply what ``book`` tells our orders through the update service, each order in its
    own transaction (with its row locked there: a postback at the same moment waits)."""
    result = PollResult(book=book, counts={"orders": book.orders, "trades": book.trades,
                                           "matched": len(book.matched), "updated": 0})  # fmt: skip
    known = _known_trades(book)
    for matched in book.matched.values():
        update = _to_apply(matched, known)
        if not _news(matched.order, update):
            continue
        applied = order_update(
            order_id=matched.order.pk, update=update, source=source, broker=KITE, actor=actor
        )
        if applied.order is not None:
            matched.order = applied.order
        result.events.extend(applied.events)
        result.counts["updated"] += 1
    for kind, name in FIXES.items():
        result.counts[name] = sum(1 for event in result.events if event.kind == kind)
    if result.counts["updated"]:
        logger.info("Kite's books: %s of %s matched orders updated (%s statuses, %s fills)", result.counts["updated"],
                    len(book.matched), result.counts["statuses"], result.counts["fills"])  # fmt: skip
    return result
