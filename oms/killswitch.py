"""The kill switch: ACTIVE, REDUCING (only orders that reduce a position) or HALTED.

Desk-wide (no strategy) or for one strategy; an order is held to the stricter of the
two. Every engage and release is a ``KillSwitchEvent`` (who, why, automatic or not); the
latest one is the state. Engaging can also cancel open orders and square off positions
(market orders against each open position, which the switch itself lets through).

Engaging takes the lock of every strategy it covers, the lock a placement holds from its
risk check to its commit: a placement already past its check commits first (and is then
seen by ``cancel_open``), every later one sees the switch. A square-off first cancels the
position's own working orders (a resting target or stop would reopen it), and is kept
up: while a switch that asked for it stands, every pass of the risk monitor squares off
what is still open (an order-rate limit or a missing price delays a square-off, never
drops it).
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from django.db import transaction
from django.db.models import OuterRef, Subquery
from django.utils import timezone

from oms import state as order_state
from oms.models import KillSwitchEvent, Order, Position, Strategy, TradingState

logger = logging.getLogger(__name__)
_STRICTNESS = {TradingState.ACTIVE: 0, TradingState.REDUCING: 1, TradingState.HALTED: 2}
# A square-off refused for anything but the order rate (no price yet) is tried again after this.
SQUARE_OFF_RETRY_SECONDS = 10


def strictest(*states: str | None) -> str:
    return max((s or TradingState.ACTIVE for s in states), key=lambda s: _STRICTNESS[TradingState(s)])


def _latest(strategy: Strategy | None) -> KillSwitchEvent | None:
    events = KillSwitchEvent.objects.filter(strategy=strategy) if strategy else KillSwitchEvent.objects.filter(
        strategy__isnull=True)  # fmt: skip
    return events.select_related("by", "strategy").order_by("-at", "-id").first()


def _latest_state(strategy: Strategy | None) -> str:
    events = KillSwitchEvent.objects.filter(strategy=strategy) if strategy else KillSwitchEvent.objects.filter(
        strategy__isnull=True)  # fmt: skip
    return next(iter(events.order_by("-at", "-id").values_list("state", flat=True)[:1]), TradingState.ACTIVE)


def trading_state_of(*, strategy: Strategy | None = None) -> str:
    if strategy is not None and hasattr(strategy, "desk_state"):  # read with the locked row (oms.services)
        return strictest(strategy.desk_state, getattr(strategy, "own_state", None))
    states = [_latest_state(None)]
    if strategy is not None:
        states.append(_latest_state(strategy))
    return strictest(*states)


def kill_switch_status() -> dict[str, Any]:
    """The desk-wide state and every strategy whose own switch is engaged."""
    desk = _latest(None)
    # Each strategy's latest event, in a constant number of queries however many there are.
    latest = KillSwitchEvent.objects.filter(strategy=OuterRef("pk")).order_by("-at", "-id").values("pk")[:1]
    ids = [
        pk for pk in Strategy.objects.annotate(latest=Subquery(latest)).values_list("latest", flat=True) if pk
    ]
    owns = KillSwitchEvent.objects.filter(pk__in=ids).exclude(state=TradingState.ACTIVE).select_related(
        "by", "strategy").order_by("strategy__name")  # fmt: skip
    engaged = [_describe(own) for own in owns]
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
        # Wait for placements past their risk check (they hold their strategy's lock).
        covered = Strategy.objects.filter(pk=strategy.pk) if strategy is not None else Strategy.objects.all()
        list(covered.select_for_update().order_by("pk").values_list("pk", flat=True))
        event = KillSwitchEvent.objects.create(
            state=state, strategy=strategy, at=timezone.now(), by=by if getattr(by, "pk", None) else None,
            automatic=automatic, rule=rule[:32], reason=reason[:2000], cancel_open=engaging and cancel_open,
            square_off=engaging and square_off,
        )  # fmt: skip
        if engaging:
            transaction.on_commit(lambda: _alert_engaged(event))
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
    """Square off every open position in the switch's scope; stops at the order rate
    limit (the risk monitor's next passes go on: ``square_off_standing``)."""
    positions = Position.objects.exclude(quantity=0).select_related("strategy", "instrument").order_by("pk")
    if strategy is not None:
        positions = positions.filter(strategy=strategy)
    now = timezone.now()
    placed = refused = 0
    for position in positions:
        if _refused_lately(position, now=now):
            continue
        # One attempt per position and second at most (the key); a refusal for the order
        # rate is retried on the next pass, any other after SQUARE_OFF_RETRY_SECONDS.
        order = position_square_off(position=position, source="kill_switch",
                                    key=f"kill-switch-{event.pk}-{position.quantity}-{int(now.timestamp())}")  # fmt: skip
        if order is None:
            continue  # flat by now, or a square-off already working
        if order.status not in (order_state.RISK_REJECTED, order_state.REJECTED):
            placed += 1
            continue
        refused += 1
        if order.risk_rule == "rate_limit":
            break  # the rest wait for the next pass, not one refusal each
        _alert_square_off_failed(position, reason=order.status_message or order.status)
    return placed, refused


def _alert_engaged(event: KillSwitchEvent) -> None:
    from alerts.conditions import alert_kill_switch_engaged

    alert_kill_switch_engaged(event=event)  # never raises


def _alert_square_off_failed(position: Position, *, reason: str) -> None:
    from alerts.conditions import alert_square_off_failed

    alert_square_off_failed(position=position, reason=reason)  # never raises


def _refused_lately(position: Position, *, now: Any) -> bool:
    """The position's last square-off was refused, for something other than the order
    rate, less than SQUARE_OFF_RETRY_SECONDS ago (no price yet: do not add a refusal per pass)."""
    last = (
        Order.objects.filter(strategy_id=position.strategy_id, instrument_id=position.instrument_id,
                             product=position.product, source="kill_switch")
        .order_by("-pk").values_list("status", "risk_rule", "placed_at").first()
    )  # fmt: skip
    if last is None or last[0] not in (order_state.RISK_REJECTED, order_state.REJECTED):
        return False
    return last[1] != "rate_limit" and now - last[2] < timedelta(seconds=SQUARE_OFF_RETRY_SECONDS)


def square_off_standing() -> dict[str, int]:
    """Keep up the square-offs of every engaged switch that asked for one (the risk
    monitor calls this each pass): what is still open in its scope is squared off again."""
    placed = refused = 0
    for event in _standing_square_offs():
        done, failed = _square_off(strategy=event.strategy, event=event)
        placed, refused = placed + done, refused + failed
    return {"placed": placed, "refused": refused}


def _standing_square_offs() -> list[KillSwitchEvent]:
    """Per scope (the desk, each strategy): the latest square-off asked for since the scope
    was last released, if the switch is still engaged."""
    standing = []
    scopes: list[Strategy | None] = [
        None,
        *Strategy.objects.filter(kill_switch_events__square_off=True).distinct(),
    ]
    for scope in scopes:
        events = KillSwitchEvent.objects.filter(strategy=scope) if scope is not None else (
            KillSwitchEvent.objects.filter(strategy__isnull=True))  # fmt: skip
        latest = events.order_by("-at", "-id").first()
        if latest is None or latest.state == TradingState.ACTIVE:
            continue
        released = (
            events.filter(state=TradingState.ACTIVE).order_by("-pk").values_list("pk", flat=True).first()
        )
        asked = events.filter(square_off=True, pk__gt=released or 0)
        event = asked.select_related("strategy").order_by("-pk").first()
        if event is not None:
            standing.append(event)
    return standing


def square_off_kept_up(order: Order) -> Order | None:
    """A square-off already on its way: None, unless Kite has not answered for it (its
    placement's outcome unknown) for SQUARE_OFF_RETRY_SECONDS; then it is retried (looked up
    by its tag, sent once if Kite never got it) and returned."""
    from oms.live import last_event_at, order_retry, unknown_at_broker

    if not unknown_at_broker(order):
        return None
    last = last_event_at(order)
    if last is not None and timezone.now() - last < timedelta(seconds=SQUARE_OFF_RETRY_SECONDS):
        return None
    logger.warning("square-off order %s: Kite has not answered for it; retrying", order.pk)
    return order_retry(order_id=order.pk, actor=order.source).order


def position_square_off(*, position: Position, source: str, key: str) -> Order | None:
    """A MARKET order that flattens ``position`` (let through a kill switch: it reduces),
    after cancelling the position's own working orders: a resting target or stop left
    behind would reopen it. None when nothing was placed (no position, or a square-off
    already working: the kill switch's, the risk monitor's or the MIS square-off's).

    The square-off is checked first by the rules it must pass (but the order rate, which
    counts it): refused there (no live price), it is recorded refused and the position's
    orders are left working, so a square-off that cannot go out never leaves the position
    without its stop. When the broker rejects it after the cancels, that is said on the
    order (the caller alerts)."""
    from oms.live import SQUARE_OFF_SOURCES
    from oms.risk import square_off_precheck
    from oms.services import OrderError, order_cancel, order_place, risk_context

    if position.quantity == 0:
        return None
    working = list(
        Order.objects.filter(
            strategy_id=position.strategy_id, instrument_id=position.instrument_id, product=position.product,
            status__in=sorted(order_state.WORKING | order_state.PENDING),
        ).order_by("pk")
    )  # fmt: skip
    for order in working:
        if order.placed_by_id is None and order.source in SQUARE_OFF_SOURCES and order.order_type == "MARKET":
            return square_off_kept_up(order)  # a square-off is already on its way
    request = _square_off_request(position)
    refused = square_off_precheck(
        risk_context(
            strategy=position.strategy, instrument=position.instrument, request=request, square_off=True
        )
    )
    cancelled = []
    if refused is None:
        for order in working:
            try:
                order_cancel(
                    order_id=order.pk,
                    user=None,
                    source=source,
                    reason=f"square-off of position {position.pk}",
                )
                cancelled.append(order.pk)
            except OrderError:
                logger.exception("square-off of position %s could not cancel order %s", position.pk, order.pk)
        position.refresh_from_db(fields=["quantity"])
        if position.quantity == 0:
            return None
        request = _square_off_request(position)
    else:
        logger.warning("square-off of position %s refused (%s): its %s working orders are kept", position.pk,
                       refused.rule, len(working))  # fmt: skip
    try:
        result = order_place(
            request=request, user=None, idempotency_key=f"{key}-{position.pk}", strategy_name=position.strategy.name,
            instrument=position.instrument, source=source, square_off=True, refused=refused,
        )  # fmt: skip
    except OrderError:
        logger.exception("could not square off position %s", position.pk)
        return None
    order = result.order
    if cancelled and order.status == order_state.REJECTED:
        logger.error("square-off order %s of position %s rejected after its orders %s were cancelled: the position "
                     "is open without them", order.pk, position.pk, cancelled)  # fmt: skip
        _note(order, f"rejected after the position's working orders {', '.join(f'#{pk}' for pk in cancelled)} were "
                     "cancelled: the position is open without them (no stop); act on it at the broker")  # fmt: skip
    return order


def _square_off_request(position: Position) -> Any:
    from oms.risk import OrderRequest

    return OrderRequest(
        transaction_type="SELL" if position.quantity > 0 else "BUY", quantity=abs(position.quantity),
        product=position.product, order_type="MARKET",
    )  # fmt: skip


def _note(order: Order, message: str) -> None:
    from oms.models import OrderEvent

    OrderEvent.objects.create(order=order, broker_order_id=order.broker_order_id or "", at=timezone.now(),
                              kind=OrderEvent.Kind.WARNING, source=OrderEvent.Source.SYSTEM, actor=order.source,
                              old_status=order.status, new_status=order.status, message=message)  # fmt: skip
