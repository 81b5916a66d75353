"""The paper broker: orders fill against live ticks, recorded exactly as a real broker's.

- MARKET orders fill at once at the best ask (buy) or bid (sell) of the latest tick when
  the feed gives depth (full mode), else at the last price.
- LIMIT orders that can trade now fill at once at that price (never worse than the
  limit); otherwise they rest (``OPEN``) and fill at their limit when the market crosses.
- SL and SL-M orders wait (``TRIGGER PENDING``) until the last price reaches the trigger
  (at or above for a buy, at or below for a sell), then act as a LIMIT or a MARKET order.
- A resting order fills at its own limit only once it has rested in the book against a
  price that did not reach it (``Order.paper_rested_at``); the first price an order meets
  (placed without a price, an AMO at the open, just modified) fills it as a marketable
  order, at the market, never worse than its limit.
- IOC orders that cannot fill at once are cancelled; TTL orders are cancelled after
  their minutes; DAY orders with the trading day they rested in; AMO orders wait
  (``AMO REQ RECEIVED``) until prices move; so do orders placed when no price is known.
- Cover and iceberg orders are refused (not simulated).

The paper broker answers at once, so the services call it inside the transaction that
holds the order (just created, or locked): its decision is taken on the order as it is,
and a cancel, a modify and a fill of the same order are serialised by that row lock.

The matcher (``paper_match``) runs in the ingestion process after every publish of
coalesced ticks (``ingestion/engine.py``), so resting orders see every price the
dashboards see, within ``INGESTION_PUBLISH_INTERVAL``; it decides each fill with the
order row locked, so two matchers never fill the same quantity twice. Fills carry
generated numeric trade ids derived from the order and its filled quantity, so a repeat
of the same decision is a duplicate the update service drops. ``paper_housekeeping``
(every pass of the risk monitor) ends the orders no price will end: TTL and DAY expiry,
and an order left behind in ``PUT ORDER REQ RECEIVED``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from oms import state
from oms.brokers.base import BrokerRejected
from oms.updates import Fill, OrderUpdate, order_update

logger = logging.getLogger(__name__)
NAME = "paper"
RESTING = (state.OPEN, state.TRIGGER_PENDING, state.AMO_REQ_RECEIVED)
# Orders the paper broker can still cancel: resting, or never handed to it.
CANCELLABLE = (*RESTING, state.PUT_ORDER_REQ_RECEIVED)
# An order still PUT ORDER REQ RECEIVED after this long was left behind (a crash between
# its commit and its hand-over): the housekeeping hands it over.
LEFT_BEHIND_SECONDS = 10
_UNSET: Any = object()


@dataclass(frozen=True)
class Quote:
    last: Decimal
    bid: Decimal | None = None
    ask: Decimal | None = None

    def executable(self, side: str) -> Decimal:
        """The price a marketable order trades at: the other side's best, else the last."""
        best = self.ask if side == "BUY" else self.bid
        return best if best else self.last


def quote_from_tick(tick: dict[str, Any] | None) -> Quote | None:
    if not tick or not tick.get("last_price"):
        return None

    def price(key: str) -> Decimal | None:
        value = tick.get(key)
        return Decimal(str(value)) if value not in (None, "", 0, "0") else None

    last = price("last_price")
    return Quote(last=last, bid=price("bid"), ask=price("ask")) if last else None


@dataclass(frozen=True)
class Decision:
    triggered: bool = False  # a stop order's trigger was reached
    fill_price: Decimal | None = None


def decide(*, side: str, order_type: str, price: Decimal, trigger_price: Decimal, status: str, quote: Quote,
           resting: bool) -> Decision:  # fmt: skip
    """What the market in ``quote`` does to an order: plain logic, no database."""
    triggered = False
    if order_type in ("SL", "SL-M") and status in (state.TRIGGER_PENDING, state.PUT_ORDER_REQ_RECEIVED):
        reached = quote.last >= trigger_price if side == "BUY" else quote.last <= trigger_price
        if not reached:
            return Decision()
        triggered, resting = True, False  # a triggered stop is a new order at the exchange
    executable = quote.executable(side)
    if order_type in ("MARKET", "SL-M"):
        return Decision(triggered=triggered, fill_price=executable)
    crosses = executable <= price if side == "BUY" else executable >= price
    if not crosses:
        return Decision(triggered=triggered)
    return Decision(triggered=triggered, fill_price=price if resting else executable)


def _trade_id(order: Any) -> str:
    # Numeric like Kite's; derived from the order and what is filled already, so the same
    # decision taken twice is the same trade (a duplicate), never a second fill.
    return f"{order.pk:010d}{order.filled_quantity:06d}"


def _fill(order: Any, price: Decimal) -> Fill:
    return Fill(trade_id=_trade_id(order), quantity=order.quantity - order.filled_quantity, price=price,
                at=timezone.now())  # fmt: skip


def _latest_quote(token: int) -> Quote | None:
    return quote_from_tick(_latest_tick(token))


def _latest_tick(token: int) -> dict[str, Any] | None:
    from ingestion.latest import latest_tick

    try:
        return latest_tick(token, max_age=settings.OMS_MAX_PRICE_AGE_SECONDS)
    except Exception:  # noqa: BLE001 - the store (Redis) is down: no quote, orders rest
        logger.exception("the latest-tick store is unreachable; paper order %s has no quote", token)
        return None


class PaperBroker:
    name = NAME
    # Answers at once, without I/O beyond the latest-tick store: called inside the
    # transaction that holds the order (see the module docstring).
    local = True

    def place(self, order: Any, *, tick: dict[str, Any] | None = _UNSET) -> OrderUpdate:
        """``tick``: the instrument's latest live tick (None: none), when the caller has
        read it already; else it is read here."""
        if order.variety in ("co", "iceberg"):
            raise BrokerRejected(f"{order.variety} orders are not simulated by the paper broker")
        broker_order_id = f"{timezone.localdate():%y%m%d}{order.pk:09d}"
        update = OrderUpdate(broker_order_id=broker_order_id, exchange_order_id=f"P{broker_order_id}")
        if order.variety == "amo":
            update.status = state.AMO_REQ_RECEIVED
            return update
        quote = quote_from_tick(_latest_tick(order.instrument_token) if tick is _UNSET else tick)
        if quote is None:
            if order.order_type == "MARKET":
                raise BrokerRejected("no live price to fill a market order against")
            update.status = state.TRIGGER_PENDING if order.order_type in ("SL", "SL-M") else state.OPEN
            return update
        decision = decide(side=order.transaction_type, order_type=order.order_type, price=order.price,
                          trigger_price=order.trigger_price, status=order.status, quote=quote, resting=False)  # fmt: skip
        if decision.fill_price is not None:
            update.fills = [_fill(order, decision.fill_price)]
            update.status = state.COMPLETE
        elif order.order_type in ("SL", "SL-M") and not decision.triggered:
            update.status, update.rested_at = state.TRIGGER_PENDING, timezone.now()
        elif order.validity == "IOC":
            update.status, update.status_message = state.CANCELLED, "IOC order could not be filled at once"
        else:
            update.status, update.rested_at = state.OPEN, timezone.now()
        return update

    def modify(self, order: Any, *, quantity: int | None, price: Decimal | None,
               trigger_price: Decimal | None) -> OrderUpdate:  # fmt: skip
        if order.status not in RESTING:
            raise BrokerRejected(f"the order is {order.status}; only open orders can be modified")
        return OrderUpdate(quantity=quantity, price=price, trigger_price=trigger_price)

    def cancel(self, order: Any) -> OrderUpdate:
        if order.status not in CANCELLABLE:
            raise BrokerRejected(f"the order is {order.status}; only open orders can be cancelled")
        return OrderUpdate(status=state.CANCELLED, status_message="cancelled by the user")

    def orders(self) -> list[dict[str, Any]]:
        from oms.selectors import orders_as_broker_sees_them

        return orders_as_broker_sees_them(broker=NAME)

    def trades(self) -> list[dict[str, Any]]:
        from oms.selectors import trades_as_broker_sees_them

        return trades_as_broker_sees_them(broker=NAME)

    def positions(self) -> list[dict[str, Any]]:
        from oms.selectors import positions_kite_shape

        return positions_kite_shape(broker=NAME)


# --- the matcher ---------------------------------------------------------------------------


def paper_match(ticks: dict[int, dict[str, Any]]) -> int:
    """Match resting paper orders against ``ticks`` ({token: presented tick}); returns
    how many orders changed. Also expires TTL orders."""
    if not ticks:
        return 0
    from oms.models import Order

    # Only listed contracts: a delisted one's token may name another contract now (Kite
    # reuses tokens), whose prices are not its own (the housekeeping cancels its orders).
    candidates = list(
        Order.objects.filter(
            broker=NAME, status__in=RESTING, instrument_token__in=list(ticks), instrument__is_listed=True
        ).values_list("pk", "instrument_token")
    )
    changed = 0
    for order_id, token in candidates:
        quote = quote_from_tick(ticks.get(token))
        if quote is not None and _match_one(order_id, quote):
            changed += 1
    return changed


def _match_one(order_id: int, quote: Quote) -> bool:
    from oms.models import Order

    with transaction.atomic():
        order = (Order.objects.select_for_update(of=("self",)).select_related("instrument")
                 .filter(pk=order_id, status__in=RESTING).first())  # fmt: skip
        if order is None or order.filled_quantity >= order.quantity:
            return False  # cancelled, modified away or filled since it was listed
        if _expiry(order, timezone.now()):
            return _expire(order)
        return paper_match_locked(order, quote)


def paper_match_locked(order: Any, quote: Quote | None) -> bool:
    """Match one resting order, locked by the caller, against ``quote``; whether it changed."""
    if quote is None:
        return False
    update = OrderUpdate()
    status = state.TRIGGER_PENDING if order.status == state.AMO_REQ_RECEIVED and order.order_type in (
        "SL", "SL-M") else order.status  # fmt: skip
    # Only an order that has rested in the book trades at its own limit; one meeting the
    # market for the first time is marketable at the market's price.
    resting = order.paper_rested_at is not None and order.status != state.AMO_REQ_RECEIVED
    decision = decide(side=order.transaction_type, order_type=order.order_type, price=order.price,
                      trigger_price=order.trigger_price, status=status, quote=quote, resting=resting)  # fmt: skip
    if decision.fill_price is not None:
        update.fills = [_fill(order, decision.fill_price)]
    elif decision.triggered:
        update.status = state.OPEN
    elif order.status == state.AMO_REQ_RECEIVED:
        update.status = state.TRIGGER_PENDING if order.order_type in ("SL", "SL-M") else state.OPEN
    if decision.fill_price is None and order.paper_rested_at is None:
        update.rested_at = timezone.now()
    if not (update.fills or update.status or update.rested_at):
        return False
    order_update(order=order, update=update, source="paper", actor=NAME)
    return True


# --- housekeeping: what no price will end --------------------------------------------------


def _expiry(order: Any, now: datetime) -> str:
    """Why ``order`` has expired by ``now`` ("" while it stands)."""
    if not order.instrument.is_listed:
        return (
            f"{order.exchange}:{order.tradingsymbol} is no longer listed (not in the latest instrument dump)"
        )
    if order.validity == "TTL" and order.validity_ttl:
        if now >= order.placed_at + timedelta(minutes=order.validity_ttl):
            return f"TTL of {order.validity_ttl} min expired"
        return ""
    if order.validity == "DAY" and order.paper_rested_at is not None:
        day = timezone.localdate(order.paper_rested_at)
        if timezone.localdate(now) > day:
            return f"DAY validity ended with the trading day of {day.isoformat()}"
    return ""


def _expire(order: Any) -> bool:
    update = OrderUpdate(status=state.CANCELLED, status_message=_expiry(order, timezone.now()))
    order_update(order=order, update=update, source="paper", actor=NAME)
    return True


def paper_housekeeping() -> dict[str, int]:
    """Expire TTL and DAY paper orders (prices or not), and hand over orders left behind in
    PUT ORDER REQ RECEIVED; returns the counts. Each order is decided with its row locked."""
    from oms.models import Order

    now = timezone.now()
    expired = sent = 0
    candidates = Order.objects.filter(broker=NAME, status__in=RESTING).filter(
        Q(validity="TTL") | Q(validity="DAY", paper_rested_at__date__lt=timezone.localdate(now))
        | Q(instrument__is_listed=False)
    )  # fmt: skip
    for order_id in candidates.values_list("pk", flat=True):
        with transaction.atomic():
            order = (Order.objects.select_for_update(of=("self",)).select_related("instrument")
                     .filter(pk=order_id, status__in=RESTING).first())  # fmt: skip
            if order is not None and _expiry(order, now):
                expired += _expire(order)
    behind = Order.objects.filter(broker=NAME, status=state.PUT_ORDER_REQ_RECEIVED,
                                  placed_at__lt=now - timedelta(seconds=LEFT_BEHIND_SECONDS))  # fmt: skip
    for order_id in behind.values_list("pk", flat=True):
        with transaction.atomic():
            order = (
                Order.objects.select_for_update()
                .filter(pk=order_id, status=state.PUT_ORDER_REQ_RECEIVED)
                .first()
            )
            if order is not None:
                logger.warning(
                    "paper order %s was left in PUT ORDER REQ RECEIVED; handing it over now", order.pk
                )
                paper_send_locked(order, actor=NAME)
                sent += 1
    return {"expired": expired, "sent": sent}


def paper_send_locked(order: Any, *, actor: str, tick: dict[str, Any] | None = _UNSET,
                      preceding: list[Any] | None = None) -> Any:  # fmt: skip
    """Hand ``order`` (created in, or locked by, the caller's transaction) to the paper
    broker and apply its answer; returns the order."""
    try:
        update = PaperBroker().place(order, tick=tick)
    except BrokerRejected as exc:
        update = OrderUpdate(status=state.REJECTED, status_message=str(exc))
    return order_update(order=order, update=update, source=NAME, actor=actor, preceding=preceding).order
