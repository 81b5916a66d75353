"""Rules on the order's prices against the market."""

from __future__ import annotations

from decimal import Decimal

from django.conf import settings

from oms.risk.context import RiskContext, number


def price_band(ctx: RiskContext) -> str | None:
    reference = ctx.reference_price
    request = ctx.request
    checked = [(name, value) for name, value in (("price", request.price), ("trigger_price", request.trigger_price))
               if value]  # fmt: skip
    if not checked:
        return None
    if reference is None:
        ctx.warnings.append("no price reference for this instrument yet: the price band was not checked")
        return None
    band = ctx.limits.price_band_percent
    low, high = reference * (1 - band / Decimal(100)), reference * (1 + band / Decimal(100))
    for name, value in checked:
        if not low <= value <= high:
            return (
                f"{name} {value} is outside the price band of ±{number(band)}% around the last price "
                f"{reference} ({low:.2f}-{high:.2f})"
            )
    return None


def no_live_price(ctx: RiskContext) -> str | None:
    if ctx.request.order_type != "MARKET" or ctx.live_price is not None:
        return None
    return (
        f"no live price for {ctx.instrument}: no tick in the last {settings.OMS_MAX_PRICE_AGE_SECONDS:g}s "
        "(is it active and is the feed running?); a market order needs one"
    )
