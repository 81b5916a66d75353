"""Rules on how much an order may risk, and on the strategy's losses today."""

from __future__ import annotations

from decimal import Decimal

from oms.risk.context import RiskContext, number


def risk_per_trade(ctx: RiskContext) -> str | None:
    stop, entry = ctx.stop, ctx.entry_price
    if stop is None or entry is None:
        return None
    side = ctx.request.side
    if (entry - stop) * side <= 0:
        return (
            f"the stop {stop} is on the wrong side of the entry {entry} for a {ctx.request.transaction_type}"
        )
    capital = ctx.strategy.capital
    if not capital:
        ctx.warnings.append(f"strategy {ctx.strategy.name!r} has no capital set: risk per trade not checked")
        return None
    risk = abs(entry - stop) * ctx.request.quantity
    allowed = capital * ctx.limits.max_risk_per_trade_percent / Decimal(100)
    if risk > allowed:
        return (
            f"the trade risks {risk:.2f} to its stop, more than {number(ctx.limits.max_risk_per_trade_percent)}% "
            f"of the strategy's capital ({allowed:.2f})"
        )
    return None


def reward_risk(ctx: RiskContext) -> str | None:
    target, stop, entry = ctx.request.target, ctx.stop, ctx.entry_price
    if target is None or entry is None:
        return None
    side = ctx.request.side
    if (target - entry) * side <= 0:
        return f"the target {target} is on the wrong side of the entry {entry} for a {ctx.request.transaction_type}"
    if stop is None:
        return None
    risk = abs(entry - stop)
    if not risk:
        return None  # refused by risk_per_trade (stop on the entry)
    ratio = abs(target - entry) / risk
    minimum = ctx.limits.min_reward_risk
    if ratio < minimum:
        return f"reward:risk is {ratio:.2f}, under the minimum {number(minimum)}"
    return None


def daily_loss(ctx: RiskContext) -> str | None:
    limit = ctx.limits.max_daily_loss
    if ctx.day_pnl > -limit or ctx.reduces_position:
        return None
    return f"today's loss {-ctx.day_pnl:.2f} has reached the maximum daily loss {limit:.2f}: only reducing orders"


def drawdown(ctx: RiskContext) -> str | None:
    limit = ctx.limits.max_drawdown
    fall = ctx.day_peak_pnl - ctx.day_pnl
    if fall < limit or ctx.reduces_position:
        return None
    return f"P&L is {fall:.2f} below today's peak, the maximum drawdown is {limit:.2f}: only reducing orders"
