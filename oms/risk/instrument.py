"""Rules on the contract: it must trade, and the order must fit its lot and tick size."""

from __future__ import annotations

from decimal import Decimal

from oms.risk.context import RiskContext, number


def instrument(ctx: RiskContext) -> str | None:
    row = ctx.instrument
    if not row.is_listed:
        return f"{row} is delisted (not in the latest instrument dump)"
    if row.expiry is not None and row.expiry < ctx.today:
        return f"{row} expired on {row.expiry.isoformat()}"
    if row.source != "kite" or not row.instrument_token:
        return f"{row} is not a Kite instrument (it cannot be streamed or traded here)"
    return None


def lot_size(ctx: RiskContext) -> str | None:
    lot = ctx.instrument.lot_size or 1
    if ctx.request.quantity % lot:
        return f"quantity {ctx.request.quantity} is not a multiple of the lot size {lot} of {ctx.instrument}"
    return None


def _off_tick(value: Decimal, tick: Decimal) -> bool:
    return bool(value) and bool(tick) and value % tick != 0


def tick_size(ctx: RiskContext) -> str | None:
    tick = Decimal(ctx.instrument.tick_size or 0)
    request = ctx.request
    for name, value in (("price", request.price), ("trigger_price", request.trigger_price)):
        if _off_tick(value, tick):
            return f"{name} {value} is not a multiple of the tick size {number(tick)} of {ctx.instrument}"
    return None
