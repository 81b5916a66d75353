"""Pre-trade risk: one validator, each rule a small function that returns a reason.

``risk_check(ctx)`` runs the rules in order and returns the first refusal (its rule name
and reason are stored on the order as ``RISK REJECTED`` and returned to the caller) and
the warnings collected on the way. Rule families live in their own modules; to add a
rule, write a function ``(RiskContext) -> str | None`` and list it in ``RULES``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from oms.risk import instrument, loss, price, rate, size, state
from oms.risk.context import Limits, OrderRequest, RiskContext

Rule = Callable[[RiskContext], "str | None"]

RULES: list[tuple[str, Rule]] = [
    ("kill_switch", state.kill_switch),
    ("strategy_disabled", state.strategy_disabled),
    ("instrument", instrument.instrument),
    ("lot_size", instrument.lot_size),
    ("tick_size", instrument.tick_size),
    ("max_quantity", size.max_quantity),
    ("freeze_quantity", size.freeze_quantity),
    ("max_order_value", size.max_order_value),
    ("max_position", size.max_position),
    ("max_open_positions", size.max_open_positions),
    ("risk_per_trade", loss.risk_per_trade),
    ("reward_risk", loss.reward_risk),
    ("daily_loss", loss.daily_loss),
    ("drawdown", loss.drawdown),
    ("price_band", price.price_band),
    ("no_live_price", price.no_live_price),
    ("order_to_trade", rate.order_to_trade),
    ("rate_limit", rate.rate_limit),  # last: only orders that pass everything else count
]
RULE_NAMES = [name for name, _ in RULES]
# A square-off placed by the kill switch or the risk monitor only has to be tradable:
# limits and the switch itself must never stop the desk from flattening (above the freeze
# quantity, a LIVE square-off goes out sliced by Kite).
SQUARE_OFF_RULES = {"instrument", "lot_size", "no_live_price", "rate_limit"}
# What a square-off is checked by before it cancels the position's own orders (its stop): all
# of the above but the rate, which counts the order (it is checked, and counted, when placed).
SQUARE_OFF_PRECHECK_RULES = SQUARE_OFF_RULES - {"rate_limit"}


@dataclass(frozen=True)
class Refusal:
    rule: str
    detail: str


def risk_check(ctx: RiskContext) -> Refusal | None:
    """The first rule that refuses the order, or None; warnings land in ``ctx.warnings``."""
    for name, rule in RULES:
        if ctx.square_off and name not in SQUARE_OFF_RULES:
            continue
        detail = rule(ctx)
        if detail is not None:
            return Refusal(rule=name, detail=detail)
    return None


def square_off_precheck(ctx: RiskContext) -> Refusal | None:
    """The refusal a square-off would meet for anything but the order rate, with nothing
    counted: asked before the position's own orders are cancelled, so a square-off that
    cannot go out (no live price) never leaves the position without its stop."""
    for name, rule in RULES:
        if name in SQUARE_OFF_PRECHECK_RULES:
            detail = rule(ctx)
            if detail is not None:
                return Refusal(rule=name, detail=detail)
    return None


__all__ = [
    "RULES",
    "RULE_NAMES",
    "Limits",
    "OrderRequest",
    "Refusal",
    "RiskContext",
    "risk_check",
    "square_off_precheck",
]
