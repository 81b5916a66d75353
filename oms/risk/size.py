"""Rules on how big an order, and the position it leaves, may be."""

from __future__ import annotations

from oms.risk.context import RiskContext


def max_quantity(ctx: RiskContext) -> str | None:
    limit = ctx.limits.max_order_quantity
    if ctx.request.quantity > limit:
        return f"quantity {ctx.request.quantity} exceeds the maximum order quantity {limit}"
    return None


def freeze_quantity(ctx: RiskContext) -> str | None:
    """The exchange refuses an F&O order above the freeze quantity of its underlying. Kite
    can slice one (autoslice) when the strategy allows it; a modify is never sliced. Paper
    orders are held to the same limit, so a strategy meets on paper what it meets live."""
    limit = ctx.freeze_quantity
    quantity = ctx.request.quantity
    if limit is None or quantity <= limit:
        return None
    if getattr(ctx.strategy, "allow_autoslice", False) and not ctx.modifying:
        return None
    row = ctx.instrument
    what = "a modification cannot be sliced: " if ctx.modifying else ""
    return (
        f"quantity {quantity} is above the exchange's freeze quantity {limit} for {row.exchange}:{row.name} "
        f"({what}send at most {limit} an order{'' if ctx.modifying else ', or allow autoslice on the strategy'})"
    )


def max_order_value(ctx: RiskContext) -> str | None:
    price = ctx.entry_price
    if price is None:
        return None  # a MARKET order without any price is refused by no_live_price
    value = price * ctx.request.quantity
    limit = ctx.limits.max_order_value
    if value > limit:
        return f"order value {value:.2f} exceeds the maximum order value {limit:.2f}"
    return None


def max_position(ctx: RiskContext) -> str | None:
    """Counts the working orders on the order's side: many small resting orders may not add
    up to a position one order could not open."""
    resulting = ctx.resulting_position
    before = resulting - ctx.request.side * ctx.request.quantity
    limit = ctx.limits.max_position_quantity
    if abs(resulting) > limit and abs(resulting) > abs(before):
        working = ctx.working_buy if ctx.request.side > 0 else ctx.working_sell
        detail = f" with the {working} still working on that side" if working else ""
        return f"the position would be {resulting}{detail}, beyond the maximum position size {limit}"
    return None


def max_open_positions(ctx: RiskContext) -> str | None:
    """Instruments with only working orders count: their orders may all fill."""
    if ctx.exposed:
        return None  # not a new position
    limit = ctx.limits.max_open_positions
    if ctx.open_positions >= limit:
        return f"{ctx.open_positions} positions are open, the maximum is {limit}: close one first"
    return None
