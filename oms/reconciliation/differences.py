"""What differs between Kite's books and ours, after the poll has applied what it safely could.

Each difference has a ``kind``, the instrument, both sides as JSON and a ``fingerprint``
that names this very difference (its ids and the values that differ): the same difference
found again has the same fingerprint; a changed one (another quantity) is a new one.

Orders (``order_differences``), for our LIVE orders matched in Kite's book
(``oms.poll.book_match``):

- ``order_unknown``: an order in Kite's book that is none of ours (no tag of ours, no id we
  know): placed from Kite's web or another app on the same account;
- ``order_duplicate``: an order carrying the tag of one of ours that is at Kite as another
  order (the same order placed twice);
- ``order_missing``: an order open here that Kite's book (today's) does not have;
- ``order_closed``: an order open here that Kite has finished (COMPLETE, CANCELLED,
  REJECTED) and that the poll could not close (e.g. COMPLETE without the trades to prove it);
- ``status_mismatch``: any other status that differs (e.g. finished here, working at Kite);
- ``filled_quantity``: the same status, another filled quantity;
- ``fill_missing``: a trade of ours in Kite's trade book that the update service refused
  (an overfill, a fill on an order rejected here);
- ``fill_conflict``: a trade id we have recorded with other data.

Positions (``position_differences``), Kite's net positions against the sum of our LIVE
strategies' positions per exchange, symbol and product:

- ``position_unknown``: Kite has a position where we have none;
- ``position_quantity``: the quantities differ;
- ``position_average``: the same quantity at another average price (beyond
  ``RECONCILE_AVERAGE_TOLERANCE``). Kite's average of a position is the average of all the
  day's buys (a long) or sells (a short), ours the weighted cost of what is open: they agree
  when the position was built in one direction, so the average is a difference only when
  Kite's is neither of ours. Strategies holding the same contract both ways are compared on
  quantity alone.

Delivery (CNC) positions are compared on the day's buys and sells only: what was bought on
earlier days is in Kite's holdings, which are not reconciled.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

from django.db.models import Q
from django.utils import timezone

from instruments.models import Instrument
from oms import state
from oms.brokers.kite import NAME as KITE
from oms.brokers.kite import kite_decimal, order_tag
from oms.brokers.kite.rows import kite_integer
from oms.models import Mode, Order, Position, Trade
from oms.poll import OPEN_STATUSES, BrokerBook, Matched
from oms.updates import Fill

PRICE_PLACES = Decimal("0.0001")
FINGERPRINT_LENGTH = 128  # ReconciliationIssue.fingerprint

ORDER_UNKNOWN = "order_unknown"
ORDER_DUPLICATE = "order_duplicate"
ORDER_MISSING = "order_missing"
ORDER_CLOSED = "order_closed"
STATUS_MISMATCH = "status_mismatch"
FILLED_QUANTITY = "filled_quantity"
FILL_MISSING = "fill_missing"
FILL_CONFLICT = "fill_conflict"
POSITION_UNKNOWN = "position_unknown"
POSITION_QUANTITY = "position_quantity"
POSITION_AVERAGE = "position_average"
ORDER_KINDS = (ORDER_CLOSED, STATUS_MISMATCH, FILLED_QUANTITY)
POSITION_KINDS = (POSITION_UNKNOWN, POSITION_QUANTITY, POSITION_AVERAGE)
KINDS = (
    ORDER_UNKNOWN,
    ORDER_DUPLICATE,
    ORDER_MISSING,
    *ORDER_KINDS,
    FILL_MISSING,
    FILL_CONFLICT,
    *POSITION_KINDS,
)


@dataclass
class Difference:
    kind: str
    fingerprint: str
    ours: dict[str, Any]
    broker: dict[str, Any]
    exchange: str = ""
    tradingsymbol: str = ""
    order: Order | None = None
    strategy_id: int | None = None
    instrument_id: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "fingerprint": self.fingerprint, "exchange": self.exchange,
                "tradingsymbol": self.tradingsymbol, "order": self.order.pk if self.order else None,
                "ours": self.ours, "broker": self.broker}  # fmt: skip


def fingerprint(*parts: Any) -> str:
    """The parts joined with ``:``; a text too long for the column keeps its start and ends
    with a hash of the whole."""
    text = ":".join(str(part) for part in parts)
    if len(text) <= FINGERPRINT_LENGTH:
        return text
    digest = hashlib.blake2b(text.encode(), digest_size=16).hexdigest()
    return f"{text[: FINGERPRINT_LENGTH - len(digest) - 1]}#{digest}"


def jsonable(value: Any) -> Any:
    """``value`` for a JSON column: decimals as their exact text, times in IST."""
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime):
        return timezone.localtime(value).isoformat() if timezone.is_aware(value) else value.isoformat()
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return value


# --- orders and fills ------------------------------------------------------------------------------


def order_side(order: Order) -> dict[str, Any]:
    return jsonable({
        "order": order.pk, "tag": order_tag(order.pk), "broker_order_id": order.broker_order_id,
        "strategy": order.strategy.name, "transaction_type": order.transaction_type, "quantity": order.quantity,
        "product": order.product, "status": order.status, "filled_quantity": order.filled_quantity,
        "average_price": order.average_price, "fill_value": order.fill_value,
    })  # fmt: skip


ROW_FIELDS = ("order_id", "status", "status_message", "tag", "transaction_type", "quantity", "product",
              "order_type", "price", "filled_quantity", "average_price", "order_timestamp")  # fmt: skip


def row_side(row: Mapping[str, Any]) -> dict[str, Any]:
    return jsonable({name: row.get(name) for name in ROW_FIELDS})


def broker_side(matched: Matched) -> dict[str, Any]:
    side = {"order_id": matched.broker_order_id, "status": matched.update.status or "",
            "status_message": matched.update.status_message, "filled_quantity": matched.filled,
            "average_price": matched.average}  # fmt: skip
    if matched.sliced:
        side["slices"] = [row_side(row) for row in matched.rows]
    return jsonable(side)


def fill_side(fill: Fill, *, kite_order_id: str) -> dict[str, Any]:
    return jsonable({"trade_id": fill.trade_id, "order_id": kite_order_id, "quantity": fill.quantity,
                     "price": fill.price, "at": fill.at, "exchange_order_id": fill.exchange_order_id})  # fmt: skip


def trade_side(trade: Trade) -> dict[str, Any]:
    return jsonable({"trade_id": trade.trade_id, "order": trade.order_id, "quantity": trade.quantity,
                     "price": trade.price, "at": trade.filled_at})  # fmt: skip


def _order_difference(kind: str, key: str, order: Order, broker: dict[str, Any]) -> Difference:
    return Difference(
        kind=kind, fingerprint=fingerprint(kind, key), ours=order_side(order), broker=broker,
        exchange=order.exchange, tradingsymbol=order.tradingsymbol, order=order, strategy_id=order.strategy_id,
        instrument_id=order.instrument_id,
    )  # fmt: skip


def _status_difference(order: Order, matched: Matched) -> Difference | None:
    theirs, filled = matched.update.status or "", matched.filled
    if theirs == order.status and filled == order.filled_quantity:
        return None
    if theirs != order.status:
        closed = state.is_terminal(theirs) and not order.is_terminal
        kind = ORDER_CLOSED if closed else STATUS_MISMATCH
    else:
        kind = FILLED_QUANTITY
    key = f"{order.pk}:{order.status}/{order.filled_quantity}:{theirs}/{filled}"
    return _order_difference(kind, key, order, broker_side(matched))


def _fill_differences(order: Order, matched: Matched, trades: Mapping[str, Trade]) -> list[Difference]:
    differences = []
    for fill in matched.fills:
        trade = trades.get(fill.trade_id[:64])
        broker = fill_side(fill, kite_order_id=fill.trade_id.partition(":")[0])
        if trade is None:
            differences.append(_order_difference(FILL_MISSING, fill.trade_id, order, broker))
        elif (trade.order_id, trade.quantity, trade.price) != (order.pk, fill.quantity, fill.price):
            difference = _order_difference(FILL_CONFLICT, fill.trade_id, order, broker)
            difference.ours = {**difference.ours, "trade": trade_side(trade)}
            differences.append(difference)
    return differences


def order_differences(*, book: BrokerBook) -> list[Difference]:
    """What still differs between Kite's order and trade books and our orders (read
    afresh: after the poll, and after whatever postbacks did meanwhile)."""
    matched_ids = list(book.matched) + [order.pk for order in book.missing]
    orders = {o.pk: o for o in Order.objects.select_related("strategy").filter(pk__in=matched_ids)}
    trade_ids = {fill.trade_id[:64] for m in book.matched.values() for fill in m.fills}
    trades = (
        {t.trade_id: t for t in Trade.objects.filter(broker=KITE, trade_id__in=trade_ids)}
        if trade_ids
        else {}
    )
    differences: list[Difference] = []
    for order_id, matched in book.matched.items():
        order = orders[order_id]
        status = _status_difference(order, matched)
        if status is not None:
            differences.append(status)
        differences.extend(_fill_differences(order, matched, trades))
    for order, row in book.duplicates:
        key = str(row.get("order_id") or "")
        differences.append(
            _order_difference(ORDER_DUPLICATE, key, orders.get(order.pk, order), row_side(row))
        )
    for stale in book.missing:
        current = orders.get(stale.pk)
        if current is not None and current.status in OPEN_STATUSES:
            differences.append(_order_difference(ORDER_MISSING, str(current.pk), current, {}))
    differences.extend(_unknown_differences(book.unknown))
    return differences


def _unknown_differences(unknown: Iterable[tuple[str, list[dict[str, Any]]]]) -> list[Difference]:
    unknown = list(unknown)
    instruments = _instrument_ids(
        (str(rows[0].get("exchange")), str(rows[0].get("tradingsymbol"))) for _, rows in unknown
    )
    differences = []
    for kite_id, rows in unknown:
        first = rows[0]
        broker = row_side(first) if len(rows) == 1 and kite_id == str(first.get("order_id")) else {
            "order_id": kite_id, "slices": [row_side(row) for row in rows]}  # fmt: skip
        where = (str(first.get("exchange") or ""), str(first.get("tradingsymbol") or ""))
        differences.append(Difference(
            kind=ORDER_UNKNOWN, fingerprint=fingerprint(ORDER_UNKNOWN, kite_id), ours={}, broker=broker,
            exchange=where[0], tradingsymbol=where[1], instrument_id=instruments.get(where),
        ))  # fmt: skip
    return differences


def _instrument_ids(keys: Iterable[tuple[str, str]]) -> dict[tuple[str, str], int]:
    """Listed instruments by (exchange, tradingsymbol), for rows only the broker has."""
    keys = set(keys)
    if not keys:
        return {}
    query = Q()
    for exchange, symbol in keys:
        query |= Q(exchange=exchange, tradingsymbol=symbol)
    rows = Instrument.objects.filter(query, is_listed=True).values_list("exchange", "tradingsymbol", "pk")
    return {(exchange, symbol): pk for exchange, symbol, pk in rows}


# --- positions -------------------------------------------------------------------------------------


@dataclass
class _Ours:
    quantity: int = 0
    day_net: int = 0
    open_cost: Decimal = Decimal(0)
    day_buy: tuple[int, Decimal] = (0, Decimal(0))
    day_sell: tuple[int, Decimal] = (0, Decimal(0))
    carried: bool = False  # some of it came in overnight
    signs: set[int] = field(default_factory=set)
    strategies: dict[str, int] = field(default_factory=dict)
    instrument_id: int | None = None

    def add(self, position: Position, day: date) -> None:
        today = position.day == day
        self.quantity += position.quantity
        self.open_cost += position.open_cost
        if today:
            self.day_net += position.day_buy_quantity - position.day_sell_quantity
            self.day_buy = (
                self.day_buy[0] + position.day_buy_quantity,
                self.day_buy[1] + position.day_buy_value,
            )
            self.day_sell = (self.day_sell[0] + position.day_sell_quantity,
                             self.day_sell[1] + position.day_sell_value)  # fmt: skip
        if (position.overnight_quantity if today else position.quantity) != 0:
            self.carried = True
        if position.quantity:
            self.signs.add(1 if position.quantity > 0 else -1)
            self.strategies[position.strategy.name] = (
                self.strategies.get(position.strategy.name, 0) + position.quantity
            )
        self.instrument_id = self.instrument_id or position.instrument_id

    def averages(self) -> list[Decimal]:
        """Our averages of the open quantity: the weighted cost, and (built today only) the
        average of the day's buys or sells, as Kite computes its own."""
        if not self.quantity or len(self.signs) > 1:
            return []
        found = [self.open_cost / self.quantity]
        side = self.day_buy if self.quantity > 0 else self.day_sell
        if not self.carried and side[0]:
            found.append(side[1] / side[0])
        return [average.quantize(PRICE_PLACES, rounding=ROUND_HALF_EVEN) for average in found]


def _our_positions(day: date) -> dict[tuple[str, str, str], _Ours]:
    ours: dict[tuple[str, str, str], _Ours] = {}
    for position in Position.objects.select_related("strategy").filter(strategy__mode=Mode.LIVE):
        ours.setdefault((position.exchange, position.tradingsymbol, position.product), _Ours()).add(
            position, day
        )
    return ours


def _their_quantity(row: Mapping[str, Any], product: str) -> int:
    if product == "CNC":
        return (kite_integer(row.get("day_buy_quantity")) or 0) - (
            kite_integer(row.get("day_sell_quantity")) or 0
        )
    return kite_integer(row.get("quantity")) or 0


def position_differences(
    *, rows: Iterable[Mapping[str, Any]], day: date, tolerance: Decimal
) -> list[Difference]:
    """Kite's net position ``rows`` (``KiteBroker.positions()``) against ours on ``day``."""
    theirs = {(str(r.get("exchange")), str(r.get("tradingsymbol")), str(r.get("product"))): r for r in rows}
    ours = _our_positions(day)
    instruments = _instrument_ids((ex, sym) for ex, sym, _ in set(theirs) - set(ours))
    differences = []
    for key in sorted(set(theirs) | set(ours)):
        exchange, symbol, product = key
        mine, row = ours.get(key, _Ours()), theirs.get(key, {})
        quantity = mine.day_net if product == "CNC" else mine.quantity
        their_quantity = _their_quantity(row, product) if row else 0
        their_average = kite_decimal(row.get("average_price")) if row else None
        ours_side = jsonable(
            {"quantity": quantity, "averages": mine.averages(), "strategies": mine.strategies}
        )
        broker_side = jsonable({"quantity": their_quantity, "average_price": their_average,
                                "overnight_quantity": row.get("overnight_quantity"), "product": product})  # fmt: skip
        if quantity != their_quantity:
            kind = POSITION_UNKNOWN if quantity == 0 else POSITION_QUANTITY
            values: tuple[Any, ...] = (quantity, their_quantity)
        elif (
            quantity
            and their_average
            and mine.averages()
            and all(abs(their_average - average) > tolerance for average in mine.averages())
        ):
            kind, values = POSITION_AVERAGE, (*mine.averages(), their_average)
        else:
            continue
        differences.append(Difference(
            kind=kind, fingerprint=fingerprint(kind, day.isoformat(), exchange, symbol, product, *values),
            ours=ours_side, broker=broker_side, exchange=exchange, tradingsymbol=symbol,
            instrument_id=mine.instrument_id or instruments.get((exchange, symbol)),
        ))  # fmt: skip
    return differences
