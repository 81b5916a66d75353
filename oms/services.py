"""Order management services: place, modify and cancel orders, and take broker updates.

Placement (``order_place``):

1. idempotency: the same ``Idempotency-Key`` from the same user is the same order
   (a unique constraint decides under concurrency, not a read-then-write); a replay with
   a different body is refused (``IdempotencyConflict``);
2. with the strategy row locked (placements of one strategy are serialised, so two
   orders cannot both squeeze past a limit), the pre-trade risk validator
   (``oms.risk``) runs and the order is stored: ``RISK REJECTED`` with the rule and the
   reason, or ``PUT ORDER REQ RECEIVED``;
3. after commit, outside any transaction, the strategy's broker is called (paper now;
   Kite for LIVE strategies with the next issue) and its answer goes through the one
   update service (``oms.updates.order_update``).
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Count, Q, Sum
from django.utils import timezone

from instruments.models import Instrument
from oms import state
from oms.brokers.base import Broker, BrokerRejected, BrokerUnavailable
from oms.brokers.paper import PaperBroker
from oms.models import DailyStats, Mode, Order, OrderEvent, Position, Strategy, StrategyAccess
from oms.risk import Limits, OrderRequest, Refusal, RiskContext, risk_check
from oms.updates import Applied, Fill, OrderUpdate, order_update

logger = logging.getLogger(__name__)
MANUAL_STRATEGY = "manual"


class OrderError(Exception):
    """A request the OMS cannot take; ``status`` is the HTTP status an API should answer."""

    status = 400


class IdempotencyConflict(OrderError):
    status = 422


class NotAllowed(OrderError):
    status = 403


class NotFound(OrderError):
    status = 404


@dataclass
class PlaceResult:
    order: Order
    created: bool  # False: a replay of an earlier request with the same key
    refusal: Refusal | None = None


# --- the broker of a strategy ---------------------------------------------------------------


def broker_for(order: Order) -> Broker:
    if order.broker == "paper":
        return PaperBroker()
    raise BrokerRejected(
        f"no broker {order.broker!r} is available in this version (live trading is not enabled)"
    )


# --- placement ---------------------------------------------------------------------------------


def strategy_for(*, name: str | None, user: Any) -> Strategy:
    """The strategy an order is for: the one the user is tied to, else ``name`` (default manual)."""
    access = StrategyAccess.objects.filter(user=user).select_related("strategy").first() if user else None
    wanted = name or (access.strategy.name if access else MANUAL_STRATEGY)
    if access is not None and access.strategy.name != wanted:
        raise NotAllowed(f"this API user may only trade strategy {access.strategy.name!r}")
    strategy = Strategy.objects.filter(name=wanted).first()
    if strategy is None:
        raise OrderError(f"unknown strategy {wanted!r}")
    return strategy


def instrument_for(*, instrument_token: int | None, exchange: str, tradingsymbol: str) -> Instrument:
    """The listed Kite contract an order names (by token, or exchange and symbol); a
    delisted one if nothing listed matches (the risk rules then refuse it)."""
    rows = Instrument.objects.filter(source="kite")
    if instrument_token is not None:
        rows = rows.filter(instrument_token=instrument_token)
        if exchange:
            rows = rows.filter(exchange=exchange.upper())
    elif exchange and tradingsymbol:
        rows = rows.filter(exchange=exchange.upper(), tradingsymbol=tradingsymbol.upper())
    else:
        raise OrderError("give instrument_token, or exchange and tradingsymbol")
    found = rows.order_by("-is_listed", "-last_seen_at", "-id").first()
    if found is None:
        what = instrument_token if instrument_token is not None else f"{exchange}:{tradingsymbol}"
        raise OrderError(f"unknown instrument {what} (not in the instrument master)")
    return found


def _fingerprint(strategy: Strategy, instrument: Instrument, request: OrderRequest) -> str:
    body = {**asdict(request), "strategy": strategy.name, "instrument": instrument.pk}
    canonical = json.dumps(body, sort_keys=True, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def _replay(*, user: Any, key: str, fingerprint: str) -> Order | None:
    orders = (
        Order.objects.filter(placed_by=user)
        if user is not None
        else Order.objects.filter(placed_by__isnull=True)
    )
    existing = orders.filter(idempotency_key=key).first()
    if existing is None:
        return None
    if existing.request_fingerprint != fingerprint:
        raise IdempotencyConflict(
            f"Idempotency-Key {key!r} was already used for a different order (#{existing.pk}); use a new key"
        )
    return existing


def order_place(*, request: OrderRequest, user: Any, idempotency_key: str, strategy_name: str | None = None,
                instrument_token: int | None = None, exchange: str = "", tradingsymbol: str = "",
                source: str = "api", square_off: bool = False) -> PlaceResult:  # fmt: skip
    """Check and place one order; see the module docstring."""
    strategy = strategy_for(name=strategy_name, user=user)
    instrument = instrument_for(
        instrument_token=instrument_token, exchange=exchange, tradingsymbol=tradingsymbol
    )
    fingerprint = _fingerprint(strategy, instrument, request)
    user = user if (user is not None and getattr(user, "pk", None)) else None
    replayed = _replay(user=user, key=idempotency_key, fingerprint=fingerprint)
    if replayed is not None:
        return PlaceResult(order=replayed, created=False, refusal=_refusal_of(replayed))
    actor = user.get_username() if user is not None else source
    try:
        with transaction.atomic():
            # Placements of one strategy are serialised from here to the commit.
            strategy = Strategy.objects.select_for_update().get(pk=strategy.pk)
            stats = _day_stats(strategy)
            ctx = risk_context(strategy=strategy, instrument=instrument, request=request, square_off=square_off,
                               stats=stats)  # fmt: skip
            refusal = risk_check(ctx)
            order = _order_row(strategy=strategy, instrument=instrument, request=request, user=user, source=source,
                               idempotency_key=idempotency_key, fingerprint=fingerprint, refusal=refusal)  # fmt: skip
            _placement_events(order, refusal=refusal, warnings=ctx.warnings, actor=actor, source=source)
            _count_order(stats, rejected=refusal is not None)
            if ctx.runaway:
                transaction.on_commit(_engage_for_runaway)
    except IntegrityError:
        # Another request with the same key won the race: this one is its replay.
        replayed = _replay(user=user, key=idempotency_key, fingerprint=fingerprint)
        if replayed is None:
            raise
        return PlaceResult(order=replayed, created=False, refusal=_refusal_of(replayed))
    if refusal is None:
        order = _send(order, actor=actor)
    return PlaceResult(order=order, created=True, refusal=refusal)


def _refusal_of(order: Order) -> Refusal | None:
    if order.status == state.RISK_REJECTED:
        return Refusal(rule=order.risk_rule, detail=order.status_message)
    return None


def _order_row(*, strategy: Strategy, instrument: Instrument, request: OrderRequest, user: Any, source: str,
               idempotency_key: str, fingerprint: str, refusal: Refusal | None) -> Order:  # fmt: skip
    now = timezone.now()
    broker = "paper" if strategy.mode == Mode.PAPER else "kite"
    order = Order(
        strategy=strategy, placed_by=user, source=source[:32], instrument=instrument, exchange=instrument.exchange,
        tradingsymbol=instrument.tradingsymbol, instrument_token=instrument.instrument_token or 0,
        transaction_type=request.transaction_type, quantity=request.quantity, product=request.product,
        order_type=request.order_type, price=request.price, trigger_price=request.trigger_price,
        validity=request.validity, validity_ttl=request.validity_ttl, variety=request.variety, tag=request.tag,
        stop_loss=request.stop_loss, target=request.target, broker=broker,
        status=state.RISK_REJECTED if refusal else state.PUT_ORDER_REQ_RECEIVED,
        status_message=refusal.detail if refusal else "", risk_rule=refusal.rule if refusal else "",
        pending_quantity=0 if refusal else request.quantity, idempotency_key=idempotency_key,
        request_fingerprint=fingerprint, placed_at=now, updated_at=now,
    )  # fmt: skip
    with transaction.atomic():  # a savepoint: a duplicate key must not break the outer transaction
        order.save(force_insert=True)
    return order


def _placement_events(order: Order, *, refusal: Refusal | None, warnings: list[str], actor: str,
                      source: str) -> None:  # fmt: skip
    now = timezone.now()
    events = []
    if refusal is not None:
        events.append(OrderEvent(order=order, at=now, kind=OrderEvent.Kind.RISK_REJECTED, source="risk", actor=actor,
                                 new_status=order.status, message=f"{refusal.rule}: {refusal.detail}"))  # fmt: skip
    else:
        events.append(OrderEvent(order=order, at=now, kind=OrderEvent.Kind.PLACED, source=_event_source(source),
                                 actor=actor, new_status=order.status,
                                 message=f"{order.transaction_type} {order.quantity} {order.exchange}:"
                                         f"{order.tradingsymbol} {order.order_type} on {order.broker}"))  # fmt: skip
    events += [OrderEvent(order=order, at=now, kind=OrderEvent.Kind.WARNING, source="risk", actor=actor,
                          message=text) for text in warnings]  # fmt: skip
    OrderEvent.objects.bulk_create(events)


def _event_source(source: str) -> str:
    return source if source in OrderEvent.Source.values else OrderEvent.Source.SYSTEM


def _day_stats(strategy: Strategy) -> DailyStats:
    """Today's statistics row of ``strategy``, locked (the caller holds a transaction)."""
    now = timezone.now()
    stats, _ = DailyStats.objects.select_for_update().get_or_create(
        strategy=strategy, day=timezone.localdate(now), defaults={"updated_at": now}
    )
    return stats


def _count_order(stats: DailyStats, *, rejected: bool) -> None:
    now = timezone.now()
    stats.orders += 1
    stats.rejected += int(rejected)
    stats.updated_at = now
    stats.save(update_fields=["orders", "rejected", "updated_at"])


def _send(order: Order, *, actor: str) -> Order:
    """Hand an accepted order to its broker and apply the answer (outside any transaction)."""
    try:
        update = broker_for(order).place(order)
    except BrokerRejected as exc:
        update = OrderUpdate(status=state.REJECTED, status_message=str(exc))
    except BrokerUnavailable as exc:
        # We do not know whether the broker has it: it stays PUT ORDER REQ RECEIVED until
        # a poll or a postback says (never placed twice).
        applied = _record(order, OrderEvent.Kind.BROKER_ERROR, f"outcome unknown: {exc}", actor=actor)
        return applied
    result = order_update(order_id=order.pk, update=update, source=order.broker, actor=actor)
    assert result.order is not None
    return result.order


def _record(order: Order, kind: str, message: str, *, actor: str, source: str = "system") -> Order:
    OrderEvent.objects.create(order=order, at=timezone.now(), kind=kind, source=source, actor=actor,
                              old_status=order.status, new_status=order.status, message=message)  # fmt: skip
    return order


# --- the risk context -------------------------------------------------------------------------


def trading_state(*, strategy: Strategy | None = None) -> str:
    """ACTIVE, REDUCING or HALTED: the stricter of the desk-wide kill switch and the strategy's."""
    from oms.killswitch import trading_state_of

    return trading_state_of(strategy=strategy)


def risk_context(*, strategy: Strategy, instrument: Instrument, request: OrderRequest, square_off: bool = False,
                 stats: DailyStats | None = None) -> RiskContext:  # fmt: skip
    from ingestion.latest import latest_tick

    now = timezone.now()
    today = timezone.localdate(now)
    book = Position.objects.filter(strategy=strategy).aggregate(
        here=Sum("quantity", filter=Q(instrument=instrument), default=0),
        open=Count("id", filter=~Q(quantity=0)),
        unrealised=Sum("unrealised", filter=~Q(quantity=0), default=Decimal(0)),
    )
    try:
        tick = latest_tick(instrument.instrument_token) if instrument.instrument_token else None
    except Exception:  # noqa: BLE001 - the store (Redis) is down: no price known (MARKET orders are refused)
        logger.exception("the latest-tick store is unreachable; pricing %s without a tick", instrument)
        tick = None
    reference = Decimal(tick["last_price"]) if tick and tick.get("last_price") else None
    live = None
    if tick is not None:
        received = datetime.fromisoformat(tick["received_at"])
        if (now - received).total_seconds() <= settings.OMS_MAX_PRICE_AGE_SECONDS:
            live = reference
    if stats is None:
        stats = DailyStats.objects.filter(strategy=strategy, day=today).first()
    day_pnl = (stats.realised if stats else Decimal(0)) + Decimal(book["unrealised"])
    return RiskContext(
        request=request, strategy=strategy, instrument=instrument, limits=Limits.for_strategy(strategy),
        trading_state=trading_state(strategy=strategy), today=today, now=now, position_quantity=int(book["here"]),
        open_positions=book["open"], live_price=live, reference_price=reference,
        day_pnl=day_pnl, day_peak_pnl=max(stats.peak_pnl if stats else Decimal(0), day_pnl),
        orders_today=stats.orders if stats else 0, trades_today=stats.trades if stats else 0,
        square_off=square_off,
    )  # fmt: skip


def _engage_for_runaway() -> None:
    from oms.killswitch import kill_switch_set

    kill_switch_set(state="HALTED", by=None, automatic=True, rule="runaway_order_rate",
                    reason=f"{settings.OMS_RUNAWAY_REFUSALS_PER_MINUTE} orders refused by the rate limit in a minute")  # fmt: skip


# --- modify and cancel ---------------------------------------------------------------------------


def _own_order(*, order_id: int, user: Any) -> Order:
    orders = Order.objects.all()
    if user is not None:
        from oms.selectors import orders_visible_to

        orders = orders_visible_to(user=user)
    order = orders.filter(pk=order_id).first()
    if order is None:
        raise NotFound(f"no order #{order_id}")
    return order


def order_modify(*, order_id: int, user: Any, quantity: int | None = None, price: Decimal | None = None,
                 trigger_price: Decimal | None = None, source: str = "api") -> Order:  # fmt: skip
    """Change a resting order's quantity, price or trigger (re-checked against the risk rules)."""
    order = _own_order(order_id=order_id, user=user)
    actor = user.get_username() if user is not None else source
    if order.is_terminal:
        raise OrderError(f"order #{order.pk} is {order.status}; it cannot be modified")
    if quantity is not None and quantity < order.filled_quantity:
        raise OrderError(f"quantity {quantity} is below the {order.filled_quantity} already filled")
    request = OrderRequest(
        transaction_type=order.transaction_type, quantity=quantity if quantity is not None else order.quantity,
        product=order.product, order_type=order.order_type,
        price=price if price is not None else order.price,
        trigger_price=trigger_price if trigger_price is not None else order.trigger_price,
        validity=order.validity, variety=order.variety, stop_loss=order.stop_loss, target=order.target,
    )  # fmt: skip
    ctx = risk_context(strategy=order.strategy, instrument=order.instrument, request=request)
    refusal = risk_check(ctx)
    if refusal is not None:
        _record(order, OrderEvent.Kind.MODIFY_REFUSED, f"{refusal.rule}: {refusal.detail}", actor=actor,
                source="risk")  # fmt: skip
        raise OrderError(f"{refusal.rule}: {refusal.detail}")
    try:
        update = broker_for(order).modify(order, quantity=quantity, price=price, trigger_price=trigger_price)
    except BrokerRejected as exc:
        _record(order, OrderEvent.Kind.MODIFY_REFUSED, str(exc), actor=actor, source=order.broker)
        raise OrderError(str(exc)) from None
    result = order_update(order_id=order.pk, update=update, source=_event_source(source), actor=actor)
    assert result.order is not None
    # A modified paper order may now cross the market.
    if order.broker == "paper":
        _rematch(result.order)
        result.order.refresh_from_db()
    return result.order


def order_cancel(*, order_id: int, user: Any, source: str = "api", reason: str = "") -> Order:
    order = _own_order(order_id=order_id, user=user)
    actor = user.get_username() if user is not None else source
    if order.is_terminal:
        raise OrderError(f"order #{order.pk} is {order.status}; it cannot be cancelled")
    try:
        update = broker_for(order).cancel(order)
    except BrokerRejected as exc:
        _record(order, OrderEvent.Kind.CANCEL_REFUSED, str(exc), actor=actor, source=order.broker)
        raise OrderError(str(exc)) from None
    if reason:
        update.status_message = reason
    result = order_update(order_id=order.pk, update=update, source=_event_source(source), actor=actor)
    assert result.order is not None
    return result.order


def _rematch(order: Order) -> None:
    from ingestion.latest import latest_tick
    from oms.brokers.paper import paper_match

    tick = latest_tick(order.instrument_token, max_age=settings.OMS_MAX_PRICE_AGE_SECONDS)
    if tick:
        paper_match({order.instrument_token: tick})


# --- broker updates from outside ------------------------------------------------------------------

KITE_STATUSES = state.ALL | {state.UPDATE}


def _kite_decimal(value: Any) -> Decimal | None:
    if value in (None, ""):
        return None
    try:
        return Decimal(str(value))
    except ArithmeticError:
        return None


def update_from_kite_payload(data: dict[str, Any]) -> OrderUpdate:
    """A Kite order payload (postback, ticker order message, order book row) as an update."""
    status = str(data.get("status") or "").upper() or None
    return OrderUpdate(
        status=status if status in KITE_STATUSES else status,
        status_message=str(data.get("status_message") or ""),
        broker_order_id=str(data["order_id"]) if data.get("order_id") else None,
        exchange_order_id=str(data.get("exchange_order_id") or ""),
        payload=data,
    )


def order_update_from_feed(*, data: dict[str, Any]) -> Applied:
    """An order update that arrived on the ticker (Kite sends postbacks there too)."""
    return order_update(update=update_from_kite_payload(data), source="ticker", broker="kite", actor="ticker")


def order_update_from_postback(*, data: dict[str, Any]) -> Applied:
    return order_update(
        update=update_from_kite_payload(data), source="postback", broker="kite", actor="postback"
    )


__all__ = [
    "Fill", "IdempotencyConflict", "NotAllowed", "NotFound", "OrderError", "OrderRequest", "OrderUpdate",
    "PlaceResult", "order_cancel", "order_modify", "order_place", "order_update", "order_update_from_feed",
    "order_update_from_postback", "strategy_for", "trading_state",
]  # fmt: skip
