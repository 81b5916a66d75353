"""Reads of the OMS: what a user may see, positions in Kite's shape, the day's P&L."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from django.db import connection
from django.db.models import Q, QuerySet, Sum
from django.utils import timezone

from oms import state
from oms.models import DailyStats, FreezeLimit, Order, Position, StrategyAccess, Trade

ZERO = Decimal(0)
VALUE_PLACES = Decimal("0.0001")
# Instrument types the exchanges' freeze quantities apply to (futures and options).
DERIVATIVES = frozenset({"FUT", "CE", "PE"})


def _strategy_of(user: Any) -> int | None:
    """The strategy an API user is tied to (None: not tied, sees every strategy)."""
    if user is None or not getattr(user, "pk", None):
        return None
    return StrategyAccess.objects.filter(user=user).values_list("strategy_id", flat=True).first()


def orders_visible_to(*, user: Any) -> QuerySet[Order]:
    orders = Order.objects.select_related("strategy")
    tied = _strategy_of(user)
    return orders.filter(strategy_id=tied) if tied is not None else orders


def trades_visible_to(*, user: Any) -> QuerySet[Trade]:
    trades = Trade.objects.select_related("strategy", "order")
    tied = _strategy_of(user)
    return trades.filter(strategy_id=tied) if tied is not None else trades


def daily_stats_visible_to(*, user: Any) -> QuerySet[DailyStats]:
    """Every strategy's days, or only its own for a user tied to a strategy."""
    stats = DailyStats.objects.select_related("strategy")
    tied = _strategy_of(user)
    return stats.filter(strategy_id=tied) if tied is not None else stats


def positions_visible_to(*, user: Any) -> QuerySet[Position]:
    """Open positions, and flat ones traded today (with their realised P&L)."""
    today = timezone.localdate()
    positions = Position.objects.select_related("strategy").filter(~Q(quantity=0) | Q(day=today))
    tied = _strategy_of(user)
    return positions.filter(strategy_id=tied) if tied is not None else positions


def position_kite_shape(position: Position) -> dict[str, Any]:
    return {
        "strategy": position.strategy.name,
        "tradingsymbol": position.tradingsymbol,
        "exchange": position.exchange,
        "instrument_token": position.instrument_token,
        "product": position.product,
        "quantity": position.quantity,
        "overnight_quantity": position.overnight_quantity,
        "multiplier": 1,
        "average_price": position.average_price,
        "close_price": position.close_price,
        "last_price": position.last_price,
        "pnl": position.realised + position.unrealised,
        "realised": position.realised,
        "unrealised": position.unrealised,
        "m2m": position.m2m,
        "buy_quantity": position.buy_quantity,
        "buy_value": position.buy_value,
        "sell_quantity": position.sell_quantity,
        "sell_value": position.sell_value,
        "day_buy_quantity": position.day_buy_quantity,
        "day_buy_value": position.day_buy_value,
        "day_sell_quantity": position.day_sell_quantity,
        "day_sell_value": position.day_sell_value,
        "marked_at": position.marked_at,
    }


def positions_kite_shape(*, broker: str | None = None, user: Any = None) -> list[dict[str, Any]]:
    positions = positions_visible_to(user=user)
    if broker is not None:
        positions = positions.filter(strategy__mode="PAPER" if broker == "paper" else "LIVE")
    return [position_kite_shape(p) for p in positions]


def orders_as_broker_sees_them(*, broker: str) -> list[dict[str, Any]]:
    today = timezone.localdate()
    rows = Order.objects.filter(broker=broker, placed_at__date=today).exclude(status=state.RISK_REJECTED)
    return [
        {"order_id": o.broker_order_id, "tag": o.tag, "status": o.status, "quantity": o.quantity,
         "filled_quantity": o.filled_quantity, "average_price": o.average_price, "tradingsymbol": o.tradingsymbol,
         "exchange": o.exchange, "transaction_type": o.transaction_type}
        for o in rows
    ]  # fmt: skip


def trades_as_broker_sees_them(*, broker: str) -> list[dict[str, Any]]:
    today = timezone.localdate()
    rows = Trade.objects.filter(broker=broker, filled_at__date=today).select_related("order")
    return [
        {"trade_id": t.trade_id, "order_id": t.order.broker_order_id, "quantity": t.quantity,
         "average_price": t.price, "tradingsymbol": t.tradingsymbol, "exchange": t.exchange,
         "transaction_type": t.transaction_type}
        for t in rows
    ]  # fmt: skip


def pnl_today(*, user: Any = None) -> dict[str, Any]:
    """Today's realised and unrealised P&L, in total and per strategy."""
    today = timezone.localdate()
    stats = DailyStats.objects.filter(day=today).select_related("strategy")
    tied = _strategy_of(user)
    if tied is not None:
        stats = stats.filter(strategy_id=tied)
    # Unrealised P&L from the positions as marked now (the statistics catch up every pass
    # of the risk monitor).
    open_pnl = dict(
        Position.objects.exclude(quantity=0).values("strategy_id").annotate(total=Sum("unrealised"))
        .values_list("strategy_id", "total")
    )  # fmt: skip
    strategies = []
    for row in stats:
        unrealised = open_pnl.get(row.strategy_id) or ZERO
        pnl = row.realised + unrealised
        charges, charges_error = _charges_today(row.strategy, today) if row.trades else (ZERO, "")
        strategies.append(
            {"strategy": row.strategy.name, "mode": row.strategy.mode, "realised": row.realised,
             "unrealised": unrealised, "pnl": pnl, "charges": charges,
             "net_pnl": pnl - charges if charges is not None else None, "charges_error": charges_error,
             "peak_pnl": row.peak_pnl, "max_drawdown": row.max_drawdown, "orders": row.orders,
             "trades": row.trades, "rejected": row.rejected, "turnover": row.turnover}
        )  # fmt: skip
    realised = sum((r["realised"] for r in strategies), ZERO)
    unrealised = sum((r["unrealised"] for r in strategies), ZERO)
    known = [r["charges"] for r in strategies if r["charges"] is not None]
    charges = sum(known, ZERO) if len(known) == len(strategies) else None
    pnl = realised + unrealised
    return {"day": today.isoformat(), "realised": realised, "unrealised": unrealised, "pnl": pnl,
            "charges": charges, "net_pnl": pnl - charges if charges is not None else None,
            "strategies": strategies}  # fmt: skip


def _charges_today(strategy: Any, day: Any) -> tuple[Decimal | None, str]:
    """Zerodha's charges on the strategy's trades of ``day`` (``oms.charges``), or None and
    why when a trade cannot be charged (never a silent zero)."""
    from oms.charges import ChargesError, charges_for_day

    try:
        return charges_for_day(strategy=strategy, day=day).total, ""
    except ChargesError as exc:
        return None, str(exc)


# --- what a strategy holds and may yet trade (the risk rules' book) -------------------------


@dataclass(frozen=True)
class Exposure:
    """A strategy's book as the pre-trade rules see it, for one instrument and product."""

    position: int = 0  # net quantity in the instrument, all products
    product_position: int = 0  # ... in the order's product
    open_positions: int = 0  # the strategy's non-flat positions
    unrealised: Decimal = ZERO  # of those positions, as last marked
    working_buy: int = 0  # still to fill on the strategy's working orders in the instrument
    working_sell: int = 0
    product_working_buy: int = 0  # ... in the order's product
    product_working_sell: int = 0
    other_working_instruments: int = 0  # other instruments with working orders and no open position


_EXPOSURE_SQL = """
SELECT pos.here, pos.product_here, pos.open_count, pos.unrealised,
       ord.buy, ord.sell, ord.product_buy, ord.product_sell, ord.others
FROM (
    SELECT COALESCE(SUM(CASE WHEN instrument_id = %(instrument)s THEN quantity ELSE 0 END), 0) AS here,
           COALESCE(SUM(CASE WHEN instrument_id = %(instrument)s AND product = %(product)s THEN quantity ELSE 0 END),
                    0) AS product_here,
           COUNT(CASE WHEN quantity <> 0 THEN 1 END) AS open_count,
           COALESCE(SUM(CASE WHEN quantity <> 0 THEN unrealised ELSE 0 END), 0) AS unrealised
    FROM {position} WHERE strategy_id = %(strategy)s
) pos CROSS JOIN (
    SELECT COALESCE(SUM(CASE WHEN instrument_id = %(instrument)s AND transaction_type = 'BUY'
                             THEN pending_quantity ELSE 0 END), 0) AS buy,
           COALESCE(SUM(CASE WHEN instrument_id = %(instrument)s AND transaction_type = 'SELL'
                             THEN pending_quantity ELSE 0 END), 0) AS sell,
           COALESCE(SUM(CASE WHEN instrument_id = %(instrument)s AND product = %(product)s
                             AND transaction_type = 'BUY' THEN pending_quantity ELSE 0 END), 0) AS product_buy,
           COALESCE(SUM(CASE WHEN instrument_id = %(instrument)s AND product = %(product)s
                             AND transaction_type = 'SELL' THEN pending_quantity ELSE 0 END), 0) AS product_sell,
           COUNT(DISTINCT CASE WHEN instrument_id <> %(instrument)s AND instrument_id NOT IN (
                   SELECT instrument_id FROM {position} WHERE strategy_id = %(strategy)s AND quantity <> 0)
               THEN instrument_id END) AS others
    FROM {order} WHERE strategy_id = %(strategy)s AND status IN ({working}) AND id <> %(exclude)s
) ord
"""


def _value(raw: Any) -> Decimal:
    """A summed money column: Decimal on PostgreSQL, int/float/str on SQLite."""
    return raw if isinstance(raw, Decimal) else Decimal(str(raw)).quantize(VALUE_PLACES)


def strategy_exposure(*, strategy_id: int, instrument_id: int, product: str,
                      exclude_order: int | None = None) -> Exposure:  # fmt: skip
    """The strategy's positions and working orders as the rules need them, in one query
    (every placement runs it, with the strategy locked). ``exclude_order``: an order being
    modified, whose working quantity is the modification's."""
    working = sorted(state.WORKING | state.PENDING)
    sql = _EXPOSURE_SQL.format(
        position=connection.ops.quote_name(Position._meta.db_table),
        order=connection.ops.quote_name(Order._meta.db_table),
        working=", ".join(f"%(status{i})s" for i in range(len(working))),
    )
    params: dict[str, Any] = {"strategy": strategy_id, "instrument": instrument_id, "product": product,
                              "exclude": exclude_order or 0, **{f"status{i}": s for i, s in enumerate(working)}}  # fmt: skip
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        row = cursor.fetchone()
    here, product_here, open_count, unrealised, buy, sell, product_buy, product_sell, others = row
    return Exposure(
        position=int(here), product_position=int(product_here), open_positions=int(open_count),
        unrealised=_value(unrealised), working_buy=int(buy), working_sell=int(sell),
        product_working_buy=int(product_buy), product_working_sell=int(product_sell),
        other_working_instruments=int(others),
    )  # fmt: skip


def freeze_quantity_of(*, instrument: Any) -> int | None:
    """The exchange's freeze quantity for an F&O ``instrument`` (by its exchange and its
    underlying, the dump's ``name``), or None (not a derivative, or no limit on record)."""
    if instrument.instrument_type not in DERIVATIVES or not instrument.name:
        return None
    return (
        FreezeLimit.objects.filter(exchange=instrument.exchange, underlying=instrument.name)
        .values_list("freeze_quantity", flat=True)
        .first()
    )
