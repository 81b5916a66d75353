"""The paper broker: orders fill against live ticks, recorded exactly as a real broker's.

- MARKET orders fill at once at the best ask (buy) or bid (sell) of the latest tick when
  the feed gives depth (full mode), else at the last price.
- LIMIT orders that can trade now fill at once at that price (never worse than the
  limit); otherwise they rest (``OPEN``) and fill at their limit when the market crosses.
- SL and SL-M orders wait (``TRIGGER PENDING``) until the last price reaches the trigger
  (at or above for a buy, at or below for a sell), then act as a LIMIT or a MARKET order.
- IOC orders that cannot fill at once are cancelled; TTL orders are cancelled after
  their minutes; AMO orders wait (``AMO REQ RECEIVED``) until prices move.
- Cover and iceberg orders are refused (not simulated).

The matcher (``paper_match``) runs in the ingestion process after every publish of
coalesced ticks (``ingestion/engine.py``), so resting orders see every price the
dashboards see, within ``INGESTION_PUBLISH_INTERVAL``; it decides each fill with the
order row locked, so two matchers never fill the same quantity twice. Fills carry
generated numeric trade ids derived from the order and its filled quantity, so a repeat
of the same decision is a duplicate the update service drops.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from oms import state
from oms.brokers.base import BrokerRejected
from oms.updates import Fill, OrderUpdate, order_update

logger = logging.getLogger(__name__)
NAME = "paper"
RESTING = (state.OPEN, state.TRIGGER_PENDING, state.AMO_REQ_RECEIVED)


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
    from ingestion.latest import latest_tick

    try:
        tick = latest_tick(token, max_age=settings.OMS_MAX_PRICE_AGE_SECONDS)
    except Exception:  # noqa: BLE001 - the store (Redis) is down: no quote, orders rest
        logger.exception("the latest-tick store is unreachable; paper order %s has no quote", token)
        return None
    return quote_from_tick(tick)


class PaperBroker:
    name = NAME

    def place(self, order: Any) -> OrderUpdate:
        if order.variety in ("co", "iceberg"):
            raise BrokerRejected(f"{order.variety} orders are not simulated by the paper broker")
        broker_order_id = f"{timezone.localdate():%y%m%d}{order.pk:09d}"
        update = OrderUpdate(broker_order_id=broker_order_id, exchange_order_id=f"P{broker_order_id}")
        quote = _latest_quote(order.instrument_token)
        if order.variety == "amo":
            update.status = state.AMO_REQ_RECEIVED
            return update
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
            update.status = state.TRIGGER_PENDING
        elif order.validity == "IOC":
            update.status, update.status_message = state.CANCELLED, "IOC order could not be filled at once"
        else:
            update.status = state.OPEN
        return update

    def modify(self, order: Any, *, quantity: int | None, price: Decimal | None,
               trigger_price: Decimal | None) -> OrderUpdate:  # fmt: skip
        if order.status not in RESTING:
            raise BrokerRejected(f"the order is {order.status}; only open orders can be modified")
        return OrderUpdate(quantity=quantity, price=price, trigger_price=trigger_price)

    def cancel(self, order: Any) -> OrderUpdate:
        if order.status not in RESTING:
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

    candidates = list(
        Order.objects.filter(broker=NAME, status__in=RESTING, instrument_token__in=list(ticks)).values_list(
            "pk", "instrument_token"
        )
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
        order = Order.objects.select_for_update().filter(pk=order_id, status__in=RESTING).first()
        if order is None or order.filled_quantity >= order.quantity:
            return False  # cancelled, modified away or filled since it was listed
        update = OrderUpdate()
        expires = order.placed_at + timedelta(minutes=order.validity_ttl or 0)
        if order.validity == "TTL" and order.validity_ttl and timezone.now() >= expires:
            update.status, update.status_message = state.CANCELLED, f"TTL of {order.validity_ttl} min expired"
            order_update(order_id=order.pk, update=update, source="paper", actor=NAME)
            return True
        status = state.TRIGGER_PENDING if order.status == state.AMO_REQ_RECEIVED and order.order_type in (
            "SL", "SL-M") else order.status  # fmt: skip
        decision = decide(side=order.transaction_type, order_type=order.order_type, price=order.price,
                          trigger_price=order.trigger_price, status=status, quote=quote, resting=True)  # fmt: skip
        if decision.fill_price is not None:
            update.fills = [_fill(order, decision.fill_price)]
        elif decision.triggered:
            update.status = state.OPEN
        elif order.status == state.AMO_REQ_RECEIVED:
            update.status = state.TRIGGER_PENDING if order.order_type in ("SL", "SL-M") else state.OPEN
        else:
            return False
        order_update(order_id=order.pk, update=update, source="paper", actor=NAME)
        return True
