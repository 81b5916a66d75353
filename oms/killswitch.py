"""The kill switch: ACTIVE, REDUCING (only orders that reduce a position) or HALTED.

Desk-wide (no strategy) or for one strategy; an order is held to the stricter of the
two. Every engage and release is a ``KillSwitchEvent`` (who, why, automatic or not); the
latest one is the state. Engaging can also cancel open orders and square off positions
(market orders against each open position, which the switch itself lets through).
"""

from __future__ import annotations

import logging
from typing import Any

from django.db import transaction
from django.utils import timezone

from oms.models import KillSwitchEvent, Order, Position, Strategy, TradingState

logger = logging.getLogger(__name__)
_STRICTNESS = {TradingState.ACTIVE: 0, TradingState.REDUCING: 1, TradingState.HALTED: 2}


def _latest(strategy: Strategy | None) -> KillSwitchEvent | None:
    events = KillSwitchEvent.objects.filter(strategy=strategy) if strategy else KillSwitchEvent.objects.filter(
        strategy__isnull=True)  # fmt: skip
    return events.order_by("-at", "-id").first()


def _latest_state(strategy: Strategy | None) -> str:
    events = KillSwitchEvent.objects.filter(strategy=strategy) if strategy else KillSwitchEvent.objects.filter(
        strategy__isnull=True)  # fmt: skip
    return next(iter(events.order_by("-at", "-id").values_list("state", flat=True)[:1]), TradingState.ACTIVE)


def trading_state_of(*, strategy: Strategy | None = None) -> str:
    states = [_latest_state(None)]
    if strategy is not None:
        states.append(_latest_state(strategy))
    return max(states, key=lambda s: _STRICTNESS[TradingState(s)])


def kill_switch_status() -> dict[str, Any]:
    """The desk-wide state and every strategy whose own switch is engaged."""
    desk = _latest(None)
    engaged = []
    for strategy in Strategy.objects.all():
        own = _latest(strategy)
        if own is not None and own.state != TradingState.ACTIVE:
            engaged.append(_describe(own))
    return {
        "state": desk.state if desk else TradingState.ACTIVE,
        "engaged": bool(desk and desk.state != TradingState.ACTIVE),
        "last_event": _describe(desk) if desk else None,
        "strategies": engaged,
    }


def _describe(event: KillSwitchEvent) -> dict[str, Any]:
    return {
        "id": event.pk,
        "state": event.state,
        "strategy": event.strategy.name if event.strategy else None,
        "at": event.at.isoformat(),
        "by": event.by.get_username() if event.by else None,
        "automatic": event.automatic,
        "rule": event.rule,
        "reason": event.reason,
        "cancel_open": event.cancel_open,
        "square_off": event.square_off,
        "result": event.result,
    }


def kill_switch_set(*, state: str, by: Any, reason: str = "", automatic: bool = False, rule: str = "",
                    strategy: Strategy | None = None, cancel_open: bool = False,
                    square_off: bool = False) -> KillSwitchEvent:  # fmt: skip
    """Engage (HALTED or REDUCING) or release (ACTIVE) the switch, then cancel and square
    off as asked. New orders are held to the new state from the moment this commits."""
    state = TradingState(state)
    engaging = state != TradingState.ACTIVE
    with transaction.atomic():
        event = KillSwitchEvent.objects.create(
            state=state, strategy=strategy, at=timezone.now(), by=by if getattr(by, "pk", None) else None,
            automatic=automatic, rule=rule[:32], reason=reason[:2000], cancel_open=engaging and cancel_open,
            square_off=engaging and square_off,
        )  # fmt: skip
    scope = f"strategy {strategy.name}" if strategy else "the desk"
    logger.warning("kill switch %s for %s by %s: %s", state, scope,
                   "automatic" if automatic else getattr(by, "username", "system"), reason)  # fmt: skip
    result: dict[str, Any] = {}
    if event.cancel_open:
        result["cancelled"], result["cancel_failed"] = _cancel_open(strategy=strategy, event=event)
    if event.square_off:
        result["square_off_orders"], result["square_off_refused"] = _square_off(
            strategy=strategy, event=event
        )
    if result:
        event.result = result
        event.save(update_fields=["result"])
    return event


def _cancel_open(*, strategy: Strategy | None, event: KillSwitchEvent) -> tuple[int, int]:
    from oms import state as order_state
    from oms.services import OrderError, order_cancel

    orders = Order.objects.filter(status__in=sorted(order_state.WORKING | order_state.PENDING))
    if strategy is not None:
        orders = orders.filter(strategy=strategy)
    cancelled = failed = 0
    for order_id in orders.values_list("pk", flat=True):
        try:
            order_cancel(
                order_id=order_id, user=None, source="kill_switch", reason=f"kill switch #{event.pk}"
            )
            cancelled += 1
        except OrderError:
            failed += 1
            logger.exception("kill switch could not cancel order %s", order_id)
    return cancelled, failed


def _square_off(*, strategy: Strategy | None, event: KillSwitchEvent) -> tuple[int, int]:
    positions = Position.objects.exclude(quantity=0).select_related("strategy")
    if strategy is not None:
        positions = positions.filter(strategy=strategy)
    placed = refused = 0
    for position in positions:
        order = position_square_off(position=position, source="kill_switch", key=f"kill-switch-{event.pk}")
        if order is None or order.status == "RISK REJECTED" or order.status == "REJECTED":
            refused += 1
        else:
            placed += 1
    return placed, refused


def position_square_off(*, position: Position, source: str, key: str) -> Order | None:
    """A MARKET order that flattens ``position`` (let through a kill switch: it reduces)."""
    from oms.risk import OrderRequest
    from oms.services import OrderError, order_place

    if position.quantity == 0:
        return None
    request = OrderRequest(
        transaction_type="SELL" if position.quantity > 0 else "BUY", quantity=abs(position.quantity),
        product=position.product, order_type="MARKET",
    )  # fmt: skip
    try:
        result = order_place(
            request=request, user=None, idempotency_key=f"{key}-{position.pk}", strategy_name=position.strategy.name,
            instrument_token=position.instrument_token, exchange=position.exchange, source=source,
            square_off=True,
        )  # fmt: skip
    except OrderError:
        logger.exception("could not square off position %s", position.pk)
        return None
    return result.order
