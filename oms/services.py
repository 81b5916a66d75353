"""Order management services: place, modify and cancel orders, and take broker updates.

Placement (``order_place``):

1. the request is checked (``order_request_problem``: whole positive quantities, prices as
   ``Decimal`` of at most 4 places, what each order type needs): an ``OrderError`` says
   what is wrong, nothing is written;
2. idempotency: the same ``Idempotency-Key`` from the same user is the same order
   (a unique constraint decides under concurrency, not a read-then-write; the system's
   own orders have theirs); a replay with a different body is refused
   (``IdempotencyConflict``);
3. with the strategy row locked (placements of one strategy are serialised, so two
   orders cannot both squeeze past a limit; the kill switch takes the same lock), the
   pre-trade risk validator (``oms.risk``) runs against the positions and the orders
   still working, and the order is stored: ``RISK REJECTED`` with the rule and the
   reason, or ``PUT ORDER REQ RECEIVED``;
4. the strategy's broker is called and its answer goes through the one update service
   (``oms.updates.order_update``): the paper broker, which answers at once, in the same
   transaction (the order is never seen half-placed, and fills at the price the rules
   checked); Kite (LIVE strategies) after commit, outside any transaction
   (``oms.live.order_send``: every outcome Kite can have, and unknown ones never sent
   twice). A replay of an order whose outcome at Kite is unknown retries it
   (``oms.live.order_retry``: looked up by its tag first).

Modify and cancel lock the order (and, for a modify, its strategy) and decide on the row
as it is: a modify is checked by the same rules as a new order (its own quantity not
counted twice), and a paper order that a modify makes marketable trades at once, at the
market. Kite is asked after that transaction; when it does not answer, the request's
outcome is unknown (``OutcomeUnknown``, HTTP 503) and the order's next update from Kite
says what happened.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import asdict, dataclass, replace
from datetime import datetime
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import F
from django.utils import timezone

from instruments.models import Instrument
from oms import state
from oms.brokers.base import Broker, BrokerRejected, BrokerUnavailable
from oms.brokers.kite import BrokerLoginNeeded, BrokerRateLimited, KiteBroker
from oms.brokers.paper import PaperBroker, paper_match_locked, paper_send_locked, quote_from_tick
from oms.killswitch import trading_state_of
from oms.live import (
    kite_login_alert,
    order_retry,
    order_send,
    order_update_from_kite,
    send_claim,
    send_release,
)
from oms.live import unknown_at_broker as _unknown_at_broker
from oms.models import DailyStats, KillSwitchEvent, Mode, Order, OrderEvent, Strategy, StrategyAccess
from oms.risk import Limits, OrderRequest, Refusal, RiskContext, risk_check
from oms.selectors import freeze_quantity_of, orders_visible_to, strategy_exposure
from oms.updates import Applied, Fill, OrderUpdate, order_update

logger = logging.getLogger(__name__)
MANUAL_STRATEGY = "manual"
# Statuses of orders that may still trade (they count towards the position limits).
OPEN_STATUSES = sorted(state.WORKING | state.PENDING)
# Above this, price x quantity no longer fits the value columns (22 digits, 4 places).
VALUE_LIMIT = Decimal(10) ** 17
PRICE_PLACES = 4


class OrderError(Exception):
    """A request the OMS cannot take; ``status`` is the HTTP status an API should answer."""

    status = 400

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        if status is not None:
            self.status = status


class IdempotencyConflict(OrderError):
    status = 422


class NotAllowed(OrderError):
    status = 403


class NotFound(OrderError):
    status = 404


class RateLimited(OrderError):
    """Refused for a rate limit (Kite's order caps or its HTTP 429): nothing was sent."""

    status = 429


class OutcomeUnknown(OrderError):
    """The broker did not answer: the request may or may not have been carried out; the
    order's next update from the broker says."""

    status = 503


@dataclass
class PlaceResult:
    order: Order
    created: bool  # False: a replay of an earlier request with the same key
    refusal: Refusal | None = None


# --- the broker of a strategy ---------------------------------------------------------------


def broker_for(order: Order) -> Broker:
    """PAPER strategies' orders go to the paper broker, LIVE ones to Kite."""
    if order.broker == "paper":
        return PaperBroker()
    if order.broker == KiteBroker.name:
        return KiteBroker()
    raise BrokerRejected(f"no broker {order.broker!r} is available")


def _local(order: Order) -> bool:
    """The order's broker answers at once (paper): it is called inside the transaction."""
    return order.broker == "paper"


# --- what an order request may be ---------------------------------------------------------------


def _price_problem(name: str, value: Any) -> str | None:
    if not isinstance(value, Decimal) or not value.is_finite():
        return f"{name} must be a Decimal number (not {type(value).__name__} {value!r})"
    if value < 0:
        return f"{name} must be at least 0 (not {value})"
    exponent = value.as_tuple().exponent
    if isinstance(exponent, int) and exponent < -PRICE_PLACES:
        return f"{name} {value} has more than {PRICE_PLACES} decimal places"
    return None


def order_request_problem(request: OrderRequest) -> str | None:
    """What is wrong with ``request`` (None: nothing). The same rules as the API's
    serializer, for every caller of the services."""
    for name, choices in (("transaction_type", Order.TransactionType), ("product", Order.Product),
                          ("order_type", Order.OrderType), ("validity", Order.Validity),
                          ("variety", Order.Variety)):  # fmt: skip
        value = getattr(request, name)
        if value not in choices.values:
            return f"{name} must be one of {', '.join(choices.values)} (not {value!r})"
    quantity = request.quantity
    if type(quantity) is not int or quantity < 1:
        return f"quantity must be a whole number of units, at least 1 (not {quantity!r})"
    for name in ("price", "trigger_price"):
        if problem := _price_problem(name, getattr(request, name)):
            return problem
    for name in ("stop_loss", "target"):  # None or 0: not given
        value = getattr(request, name)
        if value is not None and (problem := _price_problem(name, value)):
            return problem
    kind, price, trigger = request.order_type, request.price, request.trigger_price
    if kind in ("LIMIT", "SL") and not price:
        return f"a {kind} order needs a price above 0"
    if kind in ("SL", "SL-M") and not trigger:
        return f"a {kind} order needs a trigger_price above 0"
    if kind == "MARKET" and price:
        return "a MARKET order takes no price (send 0 or leave it out)"
    if kind in ("MARKET", "LIMIT") and trigger and request.variety != "co":
        return f"a {kind} order takes no trigger_price"
    if kind == "SL" and (trigger - price) * request.side > 0:
        relation = "above" if request.side > 0 else "below"
        return f"the trigger_price {trigger} of a stop-loss {request.transaction_type} must not be {relation} its price {price}"
    if request.validity == "TTL" and not (type(request.validity_ttl) is int and request.validity_ttl >= 1):
        return "TTL validity needs validity_ttl (whole minutes, at least 1)"
    if max(price, trigger) * quantity >= VALUE_LIMIT:
        return f"the order's value {max(price, trigger) * quantity:.0f} is beyond any real order"
    return None


def _checked(request: OrderRequest) -> OrderRequest:
    problem = order_request_problem(request)
    if problem is not None:
        raise OrderError(problem)
    return request


# --- placement ---------------------------------------------------------------------------------


def _strategy_name_for(*, name: str | None, user: Any) -> str:
    """The strategy an order is for: the one the user is tied to, else ``name`` (default manual)."""
    tied = (
        StrategyAccess.objects.filter(user=user).values_list("strategy__name", flat=True).first()
        if user is not None and getattr(user, "pk", None)
        else None
    )
    wanted = name or tied or MANUAL_STRATEGY
    if tied is not None and tied != wanted:
        raise NotAllowed(f"this API user may only trade strategy {tied!r}")
    return wanted


def strategy_for(*, name: str | None, user: Any) -> Strategy:
    """The strategy an order is for (see ``_strategy_name_for``), unlocked."""
    wanted = _strategy_name_for(name=name, user=user)
    strategy = Strategy.objects.filter(name=wanted).first()
    if strategy is None:
        raise OrderError(f"unknown strategy {wanted!r}")
    return strategy


_LOCKED_STRATEGY_SQL = (
    "SELECT s.*, (SELECT k.state FROM {events} k WHERE k.strategy_id IS NULL ORDER BY k.at DESC, k.id DESC LIMIT 1)"
    " AS desk_state, (SELECT k.state FROM {events} k WHERE k.strategy_id = s.id ORDER BY k.at DESC, k.id DESC"
    " LIMIT 1) AS own_state, (SELECT a.strategy_id FROM {access} a WHERE a.user_id = %s) AS tied_id"
    " FROM {strategies} s WHERE s.id = {target}{lock}"
)
_TIED_OR_NAMED = (
    "COALESCE((SELECT a.strategy_id FROM {access} a WHERE a.user_id = %s), "
    "(SELECT t.id FROM {strategies} t WHERE t.name = %s))"
)


def locked_strategy(*, name: str | None = None, user: Any = None, pk: int | None = None) -> Strategy:
    """The strategy an order is for, its row locked to the commit: by ``pk``, or the one
    ``user`` is tied to (``NotAllowed`` when ``name`` names another), else ``name`` (default
    manual). The desk's and its own kill switch state (the latest ``KillSwitchEvent`` of
    each, as ``oms.killswitch`` reads them) come with it: every placement and modify runs
    this, so it is one query, written out."""
    features = connection.features
    lock = " FOR UPDATE OF s" if features.has_select_for_update_of else (
        " FOR UPDATE" if features.has_select_for_update else "")  # fmt: skip
    tables = {
        "events": connection.ops.quote_name(KillSwitchEvent._meta.db_table),
        "access": connection.ops.quote_name(StrategyAccess._meta.db_table),
        "strategies": connection.ops.quote_name(Strategy._meta.db_table),
    }
    user_id = getattr(user, "pk", None)
    if pk is not None:
        target, params = "%s", [user_id, pk]
    else:
        target, params = _TIED_OR_NAMED.format(**tables), [user_id, user_id, name or MANUAL_STRATEGY]
    sql = _LOCKED_STRATEGY_SQL.format(**tables, target=target, lock=lock)
    found = list(Strategy.objects.raw(sql, params))
    if not found:
        raise OrderError(f"unknown strategy {name or pk or MANUAL_STRATEGY!r}")
    strategy = found[0]
    if pk is None and getattr(strategy, "tied_id", None) is not None and name and name != strategy.name:
        raise NotAllowed(f"this API user may only trade strategy {strategy.name!r}")
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


def _fingerprint(strategy_name: str, instrument: Instrument, request: OrderRequest) -> str:
    body = {**asdict(request), "strategy": strategy_name, "instrument": instrument.pk}
    canonical = json.dumps(body, sort_keys=True, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def _replay(*, user: Any, key: str, fingerprint: Callable[[], str]) -> Order | None:
    """The order placed earlier with ``key`` by ``user``, if any (``fingerprint()``, asked
    only then, must match its request's)."""
    orders = (
        Order.objects.filter(placed_by=user)
        if user is not None
        else Order.objects.filter(placed_by__isnull=True)
    )
    # Unique (a constraint): no ordering, and only what the comparison needs until there is one.
    existing = orders.filter(idempotency_key=key).order_by().values_list("pk", "request_fingerprint").first()
    if existing is None:
        return None
    pk, stored = existing
    if stored != fingerprint():
        raise IdempotencyConflict(
            f"Idempotency-Key {key!r} was already used for a different order (#{pk}); use a new key"
        )
    return Order.objects.select_related("strategy", "placed_by").get(pk=pk)


def order_place(*, request: OrderRequest, user: Any, idempotency_key: str, strategy_name: str | None = None,
                instrument_token: int | None = None, exchange: str = "", tradingsymbol: str = "",
                instrument: Instrument | None = None, source: str = "api", square_off: bool = False,
                refused: Refusal | None = None) -> PlaceResult:  # fmt: skip
    """Check and place one order; see the module docstring. ``instrument``: the exact
    contract, instead of naming one (a square-off trades the position's own contract, never
    the one its token names now: Kite reuses tokens). ``refused``: a refusal the caller has
    decided already (a square-off refused before it cancelled the position's orders): the
    order is recorded ``RISK REJECTED`` with it, nothing else checked, never sent."""
    _checked(request)
    if instrument is None:
        instrument = instrument_for(
            instrument_token=instrument_token, exchange=exchange, tradingsymbol=tradingsymbol
        )
    user = user if (user is not None and getattr(user, "pk", None)) else None

    def asked() -> str:  # the fingerprint of this request, for a replay's comparison
        return _fingerprint(_strategy_name_for(name=strategy_name, user=user), instrument, request)

    actor = user.get_username() if user is not None else source
    replayed = _replay(user=user, key=idempotency_key, fingerprint=asked)
    if replayed is not None:
        if _unknown_at_broker(replayed):  # a retry of a placement Kite has not answered for
            sent = order_retry(order_id=replayed.pk, actor=actor)
            return PlaceResult(
                order=sent.order, created=False, refusal=sent.refusal or _refusal_of(sent.order)
            )
        return PlaceResult(order=replayed, created=False, refusal=_refusal_of(replayed))
    fingerprint = ""
    try:
        with transaction.atomic():
            # Placements of one strategy are serialised from here to the commit.
            strategy = locked_strategy(name=strategy_name, user=user)
            fingerprint = _fingerprint(strategy.name, instrument, request)
            stats = _day_stats(strategy)
            ctx = risk_context(strategy=strategy, instrument=instrument, request=request, square_off=square_off,
                               stats=stats)  # fmt: skip
            refusal = refused or risk_check(ctx)
            order = _order_row(strategy=strategy, instrument=instrument, request=request, user=user, source=source,
                               idempotency_key=idempotency_key, fingerprint=fingerprint, refusal=refusal)  # fmt: skip
            events = _placement_events(
                order, refusal=refusal, warnings=ctx.warnings, actor=actor, source=source
            )
            if refusal is None and _local(order):
                order = paper_send_locked(order, actor=actor, tick=ctx.live_tick, preceding=events)
            else:
                OrderEvent.objects.bulk_create(events)
            _count_order(stats, rejected=refusal is not None)
            if ctx.runaway:
                transaction.on_commit(_engage_for_runaway)
    except IntegrityError:
        # Another request with the same key won the race: this one is its replay.
        replayed = _replay(user=user, key=idempotency_key, fingerprint=lambda: fingerprint or asked())
        if replayed is None:
            raise
        return PlaceResult(order=replayed, created=False, refusal=_refusal_of(replayed))
    if refusal is None and not _local(order):
        # After the commit, outside any transaction (inside a caller's: after its commit).
        sent = order_send(order, actor=actor, freeze_quantity=ctx.freeze_quantity,
                          allow_autoslice=strategy.allow_autoslice or square_off)  # fmt: skip
        return PlaceResult(order=sent.order, created=True, refusal=sent.refusal)
    return PlaceResult(order=order, created=True, refusal=refusal)


def _refusal_of(order: Order) -> Refusal | None:
    """The refusal of one of our rules that ended ``order``: RISK REJECTED, or REJECTED for
    the rate (Kite's order caps)."""
    if order.status == state.RISK_REJECTED or (order.status == state.REJECTED and order.risk_rule):
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
    # A duplicate key fails the whole placement transaction (order_place answers with the replay).
    order.save(force_insert=True)
    return order


def _placement_events(order: Order, *, refusal: Refusal | None, warnings: list[str], actor: str,
                      source: str) -> list[OrderEvent]:  # fmt: skip
    """The placement's audit events (saved by the caller, with the broker's answer)."""
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
    return events


def _event_source(source: str) -> str:
    return source if source in OrderEvent.Source.values else OrderEvent.Source.SYSTEM


def _day_stats(strategy: Strategy) -> DailyStats:
    """Today's statistics row of ``strategy`` (read: its counters move by ``F()`` updates)."""
    now = timezone.now()
    stats, _ = DailyStats.objects.get_or_create(
        strategy=strategy, day=timezone.localdate(now), defaults={"updated_at": now}
    )
    return stats


def _count_order(stats: DailyStats, *, rejected: bool) -> None:
    # An increment in the database: a fill in the same transaction has saved the row already.
    DailyStats.objects.filter(pk=stats.pk).update(
        orders=F("orders") + 1, rejected=F("rejected") + int(rejected), updated_at=timezone.now()
    )


def _record(order: Order, kind: str, message: str, *, actor: str, source: str = "system") -> Order:
    OrderEvent.objects.create(order=order, at=timezone.now(), kind=kind, source=source, actor=actor,
                              old_status=order.status, new_status=order.status, message=message)  # fmt: skip
    return order


# --- the risk context -------------------------------------------------------------------------


def trading_state(*, strategy: Strategy | None = None) -> str:
    """ACTIVE, REDUCING or HALTED: the stricter of the desk-wide kill switch and the strategy's."""
    return trading_state_of(strategy=strategy)


def risk_context(*, strategy: Strategy, instrument: Instrument, request: OrderRequest, square_off: bool = False,
                 stats: DailyStats | None = None, exclude_order: int | None = None) -> RiskContext:  # fmt: skip
    """What the rules look at. ``exclude_order``: an order being modified (its own working
    quantity is the request's, not counted twice)."""
    from ingestion.latest import latest_tick

    now = timezone.now()
    today = timezone.localdate(now)
    book = strategy_exposure(strategy_id=strategy.pk, instrument_id=instrument.pk, product=request.product,
                             exclude_order=exclude_order)  # fmt: skip
    freeze_quantity = freeze_quantity_of(instrument=instrument)
    try:
        tick = latest_tick(instrument.instrument_token) if instrument.instrument_token else None
    except Exception:  # noqa: BLE001 - the store (Redis) is down: no price known (MARKET orders are refused)
        logger.exception("the latest-tick store is unreachable; pricing %s without a tick", instrument)
        tick = None
    reference = Decimal(tick["last_price"]) if tick and tick.get("last_price") else None
    live = live_tick = None
    if tick is not None:
        received = datetime.fromisoformat(tick["received_at"])
        if (now - received).total_seconds() <= settings.OMS_MAX_PRICE_AGE_SECONDS:
            live, live_tick = reference, tick
    if stats is None:
        stats = DailyStats.objects.filter(strategy=strategy, day=today).first()
    day_pnl = (stats.realised if stats else Decimal(0)) + book.unrealised
    return RiskContext(
        request=request, strategy=strategy, instrument=instrument, limits=Limits.for_strategy(strategy),
        trading_state=trading_state(strategy=strategy), today=today, now=now, position_quantity=book.position,
        product_position=book.product_position, working_buy=book.working_buy, working_sell=book.working_sell,
        product_working_buy=book.product_working_buy, product_working_sell=book.product_working_sell,
        open_positions=book.open_positions + book.other_working_instruments, live_price=live, live_tick=live_tick,
        reference_price=reference, day_pnl=day_pnl, day_peak_pnl=max(stats.peak_pnl if stats else Decimal(0), day_pnl),
        orders_today=stats.orders if stats else 0, trades_today=stats.trades if stats else 0,
        square_off=square_off, freeze_quantity=freeze_quantity, modifying=exclude_order is not None,
    )  # fmt: skip


def _engage_for_runaway() -> None:
    from oms.killswitch import kill_switch_set

    kill_switch_set(state="HALTED", by=None, automatic=True, rule="runaway_order_rate",
                    reason=f"{settings.OMS_RUNAWAY_REFUSALS_PER_MINUTE} orders refused by the rate limit in a minute")  # fmt: skip


# --- modify and cancel ---------------------------------------------------------------------------


def _own_order(*, order_id: int, user: Any) -> Order:
    orders = orders_visible_to(user=user) if user is not None else Order.objects.all()
    order = orders.filter(pk=order_id).first()
    if order is None:
        raise NotFound(f"no order #{order_id}")
    return order


def _locked_order(order_id: int) -> Order:
    return Order.objects.select_for_update(of=("self",)).select_related("instrument").get(pk=order_id)


def order_modify(*, order_id: int, user: Any, quantity: int | None = None, price: Decimal | None = None,
                 trigger_price: Decimal | None = None, source: str = "api") -> Order:  # fmt: skip
    """Change a working order's quantity, price or trigger: checked as a new order would be,
    with the order (and its strategy) locked, so a fill, a cancel or another modify of the
    same order cannot interleave."""
    order = _own_order(order_id=order_id, user=user)
    actor = user.get_username() if user is not None else source
    error: OrderError | None = None
    with transaction.atomic():
        strategy = locked_strategy(pk=order.strategy_id)
        order = _locked_order(order.pk)
        if order.is_terminal:
            raise OrderError(f"order #{order.pk} is {order.status}; it cannot be modified")
        if quantity is not None and order.filled_quantity and quantity <= order.filled_quantity:
            raise OrderError(f"quantity {quantity} must be above the {order.filled_quantity} already filled")
        request = _checked(replace(
            order_request_of(order), quantity=quantity if quantity is not None else order.quantity,
            price=price if price is not None else order.price,
            trigger_price=trigger_price if trigger_price is not None else order.trigger_price,
        ))  # fmt: skip
        ctx = risk_context(
            strategy=strategy, instrument=order.instrument, request=request, exclude_order=order.pk
        )
        refusal = risk_check(ctx)
        if refusal is not None:
            _record(order, OrderEvent.Kind.MODIFY_REFUSED, f"{refusal.rule}: {refusal.detail}", actor=actor,
                    source="risk")  # fmt: skip
            error = OrderError(f"{refusal.rule}: {refusal.detail}")
        elif _local(order):
            order, error = _modify_with(order, actor=actor, source=source, quantity=quantity, price=price,
                                        trigger_price=trigger_price, tick=ctx.live_tick)  # fmt: skip
    if error is None and not _local(order):
        # Kite is asked outside the transaction: no row lock is held while it answers.
        order, error = _modify_with(order, actor=actor, source=source, quantity=quantity, price=price,
                                    trigger_price=trigger_price, tick=None)  # fmt: skip
    if error is not None:
        raise error
    return order


def _modify_with(order: Order, *, actor: str, source: str, quantity: int | None, price: Decimal | None,
                 trigger_price: Decimal | None, tick: dict[str, Any] | None) -> tuple[Order, OrderError | None]:  # fmt: skip
    try:
        update = broker_for(order).modify(order, quantity=quantity, price=price, trigger_price=trigger_price)
    except (BrokerRejected, BrokerUnavailable) as exc:
        return order, _broker_refused(
            order, exc, kind=OrderEvent.Kind.MODIFY_REFUSED, what="modify", actor=actor
        )
    local = _local(order)
    result = order_update(order=order if local else None, order_id=order.pk, update=update,
                          source=_event_source(source), actor=actor)  # fmt: skip
    if local and not order.is_terminal:
        # A modified paper order meets the market anew: marketable, it trades now.
        paper_match_locked(order, quote_from_tick(tick))
    return (order if local or result.order is None else result.order), None


def _broker_refused(order: Order, exc: Exception, *, kind: str, what: str, actor: str) -> OrderError:
    """A modify or cancel the broker refused or did not answer: recorded on the order, and
    the error the caller answers with (Kite login needed also alerts the desk)."""
    if isinstance(exc, BrokerUnavailable):
        message = f"{what} outcome unknown: {exc}; the order's next update from Kite says whether it was done"
        _record(order, OrderEvent.Kind.BROKER_ERROR, message, actor=actor, source=order.broker)
        return OutcomeUnknown(message)
    _record(order, kind, str(exc), actor=actor, source=order.broker)
    if isinstance(exc, BrokerLoginNeeded):
        kite_login_alert(detail=str(exc), order=order)
    return RateLimited(str(exc)) if isinstance(exc, BrokerRateLimited) else OrderError(str(exc))


def order_request_of(order: Order) -> OrderRequest:
    return OrderRequest(
        transaction_type=order.transaction_type, quantity=order.quantity, product=order.product,
        order_type=order.order_type, price=order.price, trigger_price=order.trigger_price, validity=order.validity,
        validity_ttl=order.validity_ttl, variety=order.variety, tag=order.tag, stop_loss=order.stop_loss,
        target=order.target,
    )  # fmt: skip


def order_cancel(*, order_id: int, user: Any, source: str = "api", reason: str = "") -> Order:
    """Cancel a working order. A paper order is decided on its locked row (a fill that came
    first wins: the order is COMPLETE and the cancel refused); a remote broker is called
    outside any transaction."""
    order = _own_order(order_id=order_id, user=user)
    actor = user.get_username() if user is not None else source
    if _unknown_at_broker(order):
        # Its placement may be on its way to Kite right now: the cancel takes the same claim.
        claimed = send_claim(order.pk)
        if not claimed:
            raise OrderError(
                f"order #{order.pk} is being sent to Kite right now (or the cache is unreachable): cancel it again "
                "in a few seconds", 409)  # fmt: skip
        try:
            order.refresh_from_db()
            return _cancelled(order, actor=actor, source=source, reason=reason)
        finally:
            send_release(order.pk)
    return _cancelled(order, actor=actor, source=source, reason=reason)


def _cancelled(order: Order, *, actor: str, source: str, reason: str) -> Order:
    local = _local(order)
    error: OrderError | None = None
    with transaction.atomic() if local else nullcontext():
        if local:
            order = _locked_order(order.pk)
        if order.is_terminal:
            raise OrderError(f"order #{order.pk} is {order.status}; it cannot be cancelled")
        try:
            update = broker_for(order).cancel(order)
        except (BrokerRejected, BrokerUnavailable) as exc:
            error = _broker_refused(
                order, exc, kind=OrderEvent.Kind.CANCEL_REFUSED, what="cancel", actor=actor
            )
        else:
            if reason:
                update.status_message = (
                    f"{reason}: {update.status_message}" if update.status_message else reason
                )
            result = order_update(order=order if local else None, order_id=order.pk, update=update,
                                  source=_event_source(source), actor=actor)  # fmt: skip
            assert result.order is not None
            order = result.order
    if error is not None:
        raise error
    return order


# --- broker updates from outside ------------------------------------------------------------------


def order_update_from_feed(*, data: dict[str, Any]) -> Applied:
    """An order update that arrived on the ticker (Kite sends postbacks there too)."""
    return order_update_from_kite(data=data, source=OrderEvent.Source.TICKER)


def order_update_from_postback(*, data: dict[str, Any]) -> Applied:
    """A Kite postback (its checksum verified by the caller)."""
    return order_update_from_kite(data=data, source=OrderEvent.Source.POSTBACK)


__all__ = [
    "Fill", "IdempotencyConflict", "NotAllowed", "NotFound", "OrderError", "OrderRequest", "OrderUpdate",
    "OutcomeUnknown", "PlaceResult", "RateLimited", "order_cancel", "order_modify", "order_place", "order_retry",
    "order_update", "order_update_from_feed", "order_update_from_postback", "strategy_for", "trading_state",
]  # fmt: skip
