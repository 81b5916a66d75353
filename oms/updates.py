"""The one update service: every change to an order's status, its fills and the
positions they move goes through ``order_update``, whatever its source (the paper broker,
Kite postbacks, the ticker's order messages, order-book polls, reconciliation).

In one transaction, with the order row (and the position row) locked on PostgreSQL:

1. a modification's values (quantity, price, trigger, type), unless the row is older than
   the newest broker row applied (``sequence``): an older update never undoes a newer
   modification;
2. fills, each once: a trade id seen before with the same data is a duplicate
   (dropped), with other data a conflict (recorded, never applied); a fill that would
   take ``filled_quantity`` past ``quantity`` is refused. A fill moves the position
   (``oms.pnl``), the day's statistics and the order's filled and average price, and
   implies what it proves (a pending order is working, a fully filled one complete);
3. then the status, through the state machine (``oms.state``): terminal statuses never
   change, an illegal pair is recorded and not applied, a non-terminal status older
   than the newest broker row applied (``sequence``) is stale and ignored, and
   ``COMPLETE`` waits for its fills (they imply it when they arrive);
4. then the audit trail: one ``OrderEvent`` per thing that happened, with the source,
   the actor and the broker's payload (redacted).

Broadcasts to the dashboards go out on commit.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from oms import state
from oms.models import DailyStats, Order, OrderEvent, Position, Trade
from oms.pnl import PRICE_PLACES, Book, apply_fill, day_m2m
from tradingportal.security import REDACTED, redact

logger = logging.getLogger(__name__)
ZERO = Decimal(0)


@dataclass(frozen=True)
class Fill:
    trade_id: str
    quantity: int
    price: Decimal
    at: datetime | None = None
    exchange_order_id: str = ""


@dataclass
class OrderUpdate:
    """What a broker says about one order. Every field is optional: a postback may carry
    only a status, a trade poll only fills."""

    status: str | None = None
    status_message: str = ""
    fills: list[Fill] = field(default_factory=list)
    broker_order_id: str | None = None
    exchange_order_id: str = ""
    # Broker ordering (Kite: the row's exchange update time in ms): an update older than
    # the newest row applied (``Order.status_sequence``) changes no non-terminal status and
    # no modification.
    sequence: int | None = None
    quantity: int | None = None  # a modification's new values
    price: Decimal | None = None
    trigger_price: Decimal | None = None
    order_type: str | None = None
    payload: dict[str, Any] = field(default_factory=dict)
    # Paper broker: the order met a price that did not reach it (``Order.paper_rested_at``).
    rested_at: datetime | None = None
    # A REJECTED for one of our own rules (``rate_limit``: Kite's caps or its HTTP 429),
    # stored as the order's ``risk_rule``.
    rule: str = ""
    # Whether a REJECTED LIVE order alerts the desk (False: the caller raises its own alert,
    # e.g. Kite login needed, or answers the refusal at once, e.g. the rate limit).
    alert: bool = True


@dataclass
class Applied:
    """What an update did, for callers and tests."""

    order: Order | None
    events: list[OrderEvent] = field(default_factory=list)

    @property
    def kinds(self) -> list[str]:
        return [e.kind for e in self.events]


# Keys whose values are credentials wherever they appear in a broker's payload.
SECRET_KEYS = frozenset(
    {"checksum", "access_token", "request_token", "refresh_token", "enctoken", "api_key", "api_secret",
     "password", "secret", "token", "authorization"}
)  # fmt: skip


def clean_payload(payload: dict[str, Any]) -> dict[str, Any]:
    """The broker's payload for the audit trail: credential-named keys masked at any depth
    (e.g. a postback's checksum), every string scrubbed of known secrets, floats kept as
    their text (never rounded through JSON)."""
    cleaned = _cleaned(payload)
    return cleaned if isinstance(cleaned, dict) else {}


def _cleaned(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(key): REDACTED if str(key).lower() in SECRET_KEYS else _cleaned(item)
                for key, item in value.items()}  # fmt: skip
    if isinstance(value, list | tuple):
        return [_cleaned(item) for item in value]
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, float | Decimal):
        return str(value)
    if isinstance(value, int | bool | type(None)):
        return value
    return redact(str(value))


class _Trail:
    def __init__(self, order: Order | None, *, source: str, actor: str, payload: dict[str, Any],
                 preceding: list[OrderEvent] | None = None) -> None:  # fmt: skip
        self.order, self.source, self.actor = order, source, actor
        self.payload = clean_payload(payload) if payload else {}
        self.preceding = preceding or []
        self.events: list[OrderEvent] = []
        self._payload_used = False

    def add(self, kind: str, message: str = "", *, old: str = "", new: str = "") -> OrderEvent:
        payload = {} if self._payload_used else self.payload
        self._payload_used = True
        event = OrderEvent(
            order=self.order, broker_order_id=(self.order.broker_order_id or "") if self.order else "",
            at=timezone.now(), kind=kind, source=self.source, actor=self.actor[:150], old_status=old,
            new_status=new, message=redact(message), payload=payload,
        )  # fmt: skip
        self.events.append(event)
        return event

    def save(self) -> None:
        if self.preceding or self.events:
            OrderEvent.objects.bulk_create([*self.preceding, *self.events])


def _locked_order(*, order_id: int | None, broker: str, broker_order_id: str | None) -> Order | None:
    orders = Order.objects.select_for_update()
    if order_id is not None:
        return orders.filter(pk=order_id).first()
    if broker_order_id:
        return orders.filter(broker=broker, broker_order_id=broker_order_id).first()
    return None


def order_update(*, update: OrderUpdate, source: str, order_id: int | None = None, broker: str = "paper",
                 actor: str = "", order: Order | None = None,
                 preceding: list[OrderEvent] | None = None) -> Applied:  # fmt: skip
    """Apply ``update`` to the order it names (our id, or the broker's order id), or to
    ``order`` when the caller holds that row already (created in, or locked by, its own
    transaction). ``preceding``: audit events of the caller's, saved in the same insert."""
    broker_order_id = update.broker_order_id
    # With the caller's row, the caller's transaction is the one (no savepoint round trips).
    with transaction.atomic(savepoint=order is None):
        if order is None:
            order = _locked_order(order_id=order_id, broker=broker, broker_order_id=broker_order_id)
        trail = _Trail(order, source=source, actor=actor, payload=update.payload, preceding=preceding)
        if order is None:
            event = trail.add(OrderEvent.Kind.UNKNOWN_ORDER, f"an update for an order we do not know ({broker})",
                              new=update.status or "")  # fmt: skip
            event.broker_order_id = (broker_order_id or "")[:64]
            trail.save()
            logger.warning("order update for an unknown %s order %s (%s)", broker, broker_order_id, source)
            return Applied(order=None, events=trail.events)
        changed: set[str] = set()
        stale = update.sequence is not None and update.sequence < order.status_sequence
        if broker_order_id and not order.broker_order_id:
            order.broker_order_id = broker_order_id
            changed.add("broker_order_id")
        if update.exchange_order_id and update.exchange_order_id != order.exchange_order_id:
            order.exchange_order_id = update.exchange_order_id[:64]
            changed.add("exchange_order_id")
        _apply_modification(order, update, trail, changed, stale=stale)
        for fill in update.fills:
            _apply_fill(order, fill, trail, changed)
        if update.status and update.status != state.UPDATE:
            _apply_status(order, update, trail, changed, stale=stale)
        if not stale and update.sequence is not None and update.sequence > order.status_sequence:
            order.status_sequence = update.sequence  # the newest broker row applied
            changed.add("status_sequence")
        if update.rested_at is not None and order.paper_rested_at is None and not order.is_terminal:
            order.paper_rested_at = update.rested_at
            changed.add("paper_rested_at")
        if changed:
            order.updated_at = timezone.now()
            changed.add("updated_at")
            _sync_quantities(order, changed)
            order.save(update_fields=sorted(changed))
        trail.save()
    if changed:
        transaction.on_commit(lambda: _broadcast(order))
    return Applied(order=order, events=trail.events)


def _sync_quantities(order: Order, changed: set[str]) -> None:
    open_quantity = order.quantity - order.filled_quantity
    if not state.is_terminal(order.status):
        pending, cancelled = open_quantity, 0
    else:
        pending, cancelled = 0, (open_quantity if order.status == state.CANCELLED else 0)
    if (order.pending_quantity, order.cancelled_quantity) != (pending, cancelled):
        order.pending_quantity, order.cancelled_quantity = pending, cancelled
        changed.update({"pending_quantity", "cancelled_quantity"})


def _apply_status(
    order: Order, update: OrderUpdate, trail: _Trail, changed: set[str], *, stale: bool
) -> None:
    old, new = order.status, update.status or order.status
    message = update.status_message
    if new not in state.ALL:
        trail.add(
            OrderEvent.Kind.ILLEGAL_TRANSITION,
            f"unknown status {new!r} from the broker",
            old=old,
            new=new[:32],
        )
        return
    if old == new:
        if message and message != order.status_message:
            order.status_message = message
            changed.add("status_message")
        return
    if not state.transition_allowed(old, new):
        trail.add(OrderEvent.Kind.ILLEGAL_TRANSITION, f"{old} -> {new} is not a legal transition; not applied",
                  old=old, new=new)  # fmt: skip
        return
    if stale and not state.is_terminal(new):
        trail.add(OrderEvent.Kind.STALE_UPDATE, f"{new} is older than the {old} already applied; ignored",
                  old=old, new=new)  # fmt: skip
        return
    if new == state.COMPLETE and order.filled_quantity < order.quantity:
        # The fills carry the money: wait for them (they imply COMPLETE when they arrive).
        trail.add(
            OrderEvent.Kind.WARNING,
            f"the broker says COMPLETE with {order.filled_quantity} of {order.quantity} filled here; waiting "
            "for the fills",
            old=old,
            new=new,
        )
        return
    order.status = new
    changed.add("status")
    if message:
        order.status_message = message[:2000]
        changed.add("status_message")
    if new == state.REJECTED and update.rule and not order.risk_rule:
        order.risk_rule = update.rule[:32]
        changed.add("risk_rule")
    trail.add(OrderEvent.Kind.STATUS, message, old=old, new=new)
    if new == state.REJECTED and order.broker != "paper" and update.alert:
        transaction.on_commit(lambda: _alert_rejected(order))


def _alert_rejected(order: Order) -> None:
    from alerts.conditions import alert_order_rejected

    alert_order_rejected(order=order)  # never raises; paper orders are not alerted


def _apply_modification(order: Order, update: OrderUpdate, trail: _Trail, changed: set[str], *,
                        stale: bool) -> None:  # fmt: skip
    values: dict[str, Any] = {"quantity": update.quantity, "price": update.price, "trigger_price": update.trigger_price,
              "order_type": update.order_type}  # fmt: skip
    moved = {k: v for k, v in values.items() if v is not None and getattr(order, k) != v}
    if not moved:
        return
    if stale:
        # A row from before a modification already applied: its values are the old ones.
        trail.add(OrderEvent.Kind.STALE_UPDATE,
                  f"the values of an older update ({', '.join(f'{k} {v}' for k, v in moved.items())}) are not applied: "
                  "a newer one is", old=order.status, new=order.status)  # fmt: skip
        return
    if order.is_terminal:
        # A modification racing a fill or a cancel: the order is finished as it stands.
        trail.add(OrderEvent.Kind.MODIFY_REFUSED,
                  f"the order is {order.status}; the modification ({', '.join(sorted(moved))}) is not applied",
                  old=order.status, new=order.status)  # fmt: skip
        return
    if "quantity" in moved and moved["quantity"] < order.filled_quantity:
        trail.add(OrderEvent.Kind.MODIFY_REFUSED,
                  f"quantity {moved['quantity']} is below the {order.filled_quantity} already filled")  # fmt: skip
        moved.pop("quantity")
    if not moved:
        return
    before = {k: str(getattr(order, k)) for k in moved}
    for key, value in moved.items():
        setattr(order, key, value)
        changed.add(key)
    if order.paper_rested_at is not None:  # a modified order meets the market anew
        order.paper_rested_at = None
        changed.add("paper_rested_at")
    trail.add(OrderEvent.Kind.MODIFY, ", ".join(f"{k} {before[k]} -> {v}" for k, v in moved.items()),
              old=order.status, new=order.status)  # fmt: skip


def _apply_fill(order: Order, fill: Fill, trail: _Trail, changed: set[str]) -> None:
    trade_id = fill.trade_id[:64]  # as stored: a longer id is still recognised the second time
    existing = Trade.objects.filter(broker=order.broker, trade_id=trade_id).first()
    if existing is not None:
        same = (
            existing.order_id == order.pk
            and existing.quantity == fill.quantity
            and existing.price == fill.price
        )
        kind = OrderEvent.Kind.DUPLICATE_FILL if same else OrderEvent.Kind.CONFLICTING_FILL
        detail = "already applied; dropped" if same else (
            f"differs from the trade already recorded ({existing.quantity} @ {existing.price} on order "
            f"#{existing.order_id}); not applied"
        )  # fmt: skip
        trail.add(kind, f"trade {fill.trade_id} {fill.quantity} @ {fill.price}: {detail}")
        if not same:
            logger.error("conflicting fill %s for order %s", fill.trade_id, order.pk)
        return
    if fill.quantity <= 0 or not fill.price.is_finite() or fill.price <= 0:
        trail.add(OrderEvent.Kind.CONFLICTING_FILL, f"trade {fill.trade_id}: a fill of {fill.quantity} @ {fill.price}"
                  " is not possible; not applied")  # fmt: skip
        return
    if not state.can_fill(order.status):
        trail.add(OrderEvent.Kind.CONFLICTING_FILL,
                  f"trade {fill.trade_id}: a fill for an order in {order.status}; not applied")  # fmt: skip
        logger.error("fill %s for order %s in %s", fill.trade_id, order.pk, order.status)
        return
    if order.filled_quantity + fill.quantity > order.quantity:
        trail.add(
            OrderEvent.Kind.OVERFILL,
            f"trade {fill.trade_id} of {fill.quantity} would fill {order.filled_quantity + fill.quantity} of "
            f"{order.quantity}; refused",
        )
        logger.error("overfill refused: trade %s on order %s", fill.trade_id, order.pk)
        return
    at = fill.at or timezone.now()
    realised = _move_position(order, fill, at)
    Trade.objects.create(
        order=order, broker=order.broker, trade_id=trade_id, strategy_id=order.strategy_id,
        instrument_id=order.instrument_id, exchange=order.exchange, tradingsymbol=order.tradingsymbol,
        instrument_token=order.instrument_token, product=order.product, transaction_type=order.transaction_type,
        quantity=fill.quantity, price=fill.price, realised=realised, filled_at=at,
        exchange_order_id=fill.exchange_order_id[:64],
    )  # fmt: skip
    old = order.status
    order.filled_quantity += fill.quantity
    order.fill_value += fill.price * fill.quantity
    order.average_price = (order.fill_value / order.filled_quantity).quantize(
        PRICE_PLACES, rounding=ROUND_HALF_EVEN
    )
    order.status = state.status_after_fill(
        order.status, filled=order.filled_quantity, quantity=order.quantity
    )
    changed.update({"filled_quantity", "fill_value", "average_price", "status"})
    trail.add(OrderEvent.Kind.FILL, f"trade {fill.trade_id}: {order.transaction_type} {fill.quantity} @ {fill.price}"
              f" ({order.filled_quantity}/{order.quantity} filled)", old=old, new=order.status)  # fmt: skip
    _count_trade(order, fill, realised, at)


# What a fill changes on a position (roll_day and position_mark included).
POSITION_MOVED = [
    "quantity", "average_price", "open_cost", "buy_quantity", "buy_value", "sell_quantity", "sell_value", "realised",
    "last_price", "unrealised", "m2m", "day", "day_buy_quantity", "day_buy_value", "day_sell_quantity",
    "day_sell_value", "overnight_quantity", "close_price", "updated_at",
]  # fmt: skip


def _move_position(order: Order, fill: Fill, at: datetime) -> Decimal:
    position, _ = Position.objects.select_for_update().get_or_create(
        strategy_id=order.strategy_id, instrument_id=order.instrument_id, product=order.product,
        defaults={"exchange": order.exchange, "tradingsymbol": order.tradingsymbol,
                  "instrument_token": order.instrument_token, "updated_at": at},
    )  # fmt: skip
    roll_day(position, timezone.localdate(at))
    book = position_book(position)
    realised = apply_fill(book, side=order.transaction_type, quantity=fill.quantity, price=fill.price)
    if order.transaction_type == "BUY":
        position.day_buy_quantity += fill.quantity
        position.day_buy_value += fill.price * fill.quantity
    else:
        position.day_sell_quantity += fill.quantity
        position.day_sell_value += fill.price * fill.quantity
    position.quantity, position.open_cost, position.realised = book.quantity, book.open_cost, book.realised
    position.buy_quantity, position.buy_value = book.buy_quantity, book.buy_value
    position.sell_quantity, position.sell_value = book.sell_quantity, book.sell_value
    position.average_price = book.average_price
    position_mark(position, position.last_price if position.last_price is not None else fill.price)
    position.updated_at = at
    position.save(update_fields=POSITION_MOVED)
    return realised


def position_book(position: Position) -> Book:
    return Book(
        quantity=position.quantity, open_cost=position.open_cost, realised=position.realised,
        buy_quantity=position.buy_quantity, buy_value=position.buy_value, sell_quantity=position.sell_quantity,
        sell_value=position.sell_value,
    )  # fmt: skip


def roll_day(position: Position, today: date) -> None:
    """A new trading day: what is open now was carried overnight at the last mark."""
    if position.day == today:
        return
    position.day = today
    position.overnight_quantity = position.quantity
    position.close_price = position.last_price if position.last_price is not None else position.average_price
    position.day_buy_quantity = position.day_sell_quantity = 0
    position.day_buy_value = position.day_sell_value = ZERO
    position.m2m = ZERO  # nothing has moved yet today: the carried quantity is marked at the close


def position_mark(position: Position, last_price: Decimal) -> None:
    """Mark ``position`` at ``last_price`` (unrealised P&L and the day's MTM; not saved)."""
    position.last_price = last_price
    position.unrealised = position_book(position).unrealised(last_price)
    position.m2m = day_m2m(
        day_buy_value=position.day_buy_value, day_sell_value=position.day_sell_value, quantity=position.quantity,
        overnight_quantity=position.overnight_quantity, close_price=position.close_price, last_price=last_price,
    )  # fmt: skip


def _count_trade(order: Order, fill: Fill, realised: Decimal, at: datetime) -> None:
    """The day's statistics of the fill's strategy: increments in the database (the row is
    locked by the UPDATE itself; created first on the day's first fill)."""
    day = timezone.localdate(at)
    counted = {"trades": F("trades") + 1, "turnover": F("turnover") + fill.price * fill.quantity,
               "realised": F("realised") + realised, "updated_at": at}  # fmt: skip
    if not DailyStats.objects.filter(strategy_id=order.strategy_id, day=day).update(**counted):
        DailyStats.objects.get_or_create(strategy_id=order.strategy_id, day=day, defaults={"updated_at": at})
        DailyStats.objects.filter(strategy_id=order.strategy_id, day=day).update(**counted)


def _broadcast(order: Order) -> None:
    """Tell the dashboards an order changed (best effort: the database is the truth)."""
    from oms.broadcast import order_changed

    order_changed(order)
