"""Rules on whether the desk and the strategy may trade at all."""

from __future__ import annotations

from oms.risk.context import RiskContext


def kill_switch(ctx: RiskContext) -> str | None:
    if ctx.trading_state == "ACTIVE":
        return None
    if ctx.trading_state == "REDUCING":
        if ctx.reduces_position:
            return None
        return (
            "the kill switch is engaged in reducing mode: only orders that reduce an open position are "
            f"accepted (position {ctx.position_quantity}, order {ctx.request.transaction_type} "
            f"{ctx.request.quantity})"
        )
    return "the kill switch is engaged: no new orders (release it in the admin or POST /api/kill-switch/)"


def strategy_disabled(ctx: RiskContext) -> str | None:
    if ctx.strategy.enabled:
        return None
    return f"strategy {ctx.strategy.name!r} is disabled (enable it in the admin)"
