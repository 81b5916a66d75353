"""What the pre-trade rules look at: the order, its strategy's limits and the book."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from django.conf import settings

ZERO = Decimal(0)


def number(value: Decimal | int) -> str:
    """A limit as people write it: ``10``, ``0.05``, ``2.5`` (never ``1E+1`` or ``10.000``)."""
    return f"{Decimal(value).normalize():f}"


@dataclass(frozen=True)
class OrderRequest:
    """A validated order as a strategy sent it (Kite's place-order fields, plus our
    ``stop_loss`` and ``target`` for the risk rules)."""

    transaction_type: str
    quantity: int
    product: str
    order_type: str
    price: Decimal = ZERO
    trigger_price: Decimal = ZERO
    validity: str = "DAY"
    validity_ttl: int | None = None
    variety: str = "regular"
    tag: str = ""
    stop_loss: Decimal | None = None
    target: Decimal | None = None

    @property
    def side(self) -> int:
        return 1 if self.transaction_type == "BUY" else -1


@dataclass(frozen=True)
class Limits:
    """The limits that apply to one strategy: its own where set, else the global ones."""

    max_order_quantity: int
    max_order_value: Decimal
    max_position_quantity: int
    max_open_positions: int
    max_risk_per_trade_percent: Decimal
    min_reward_risk: Decimal
    max_daily_loss: Decimal
    max_drawdown: Decimal
    max_position_loss: Decimal
    price_band_percent: Decimal
    max_order_to_trade_ratio: Decimal

    @classmethod
    def for_strategy(cls, strategy: Any) -> Limits:
        def pick(name: str, setting: str) -> Any:
            own = getattr(strategy, name, None)
            return own if own is not None else getattr(settings, setting)

        return cls(
            max_order_quantity=pick("max_order_quantity", "OMS_MAX_ORDER_QUANTITY"),
            max_order_value=pick("max_order_value", "OMS_MAX_ORDER_VALUE"),
            max_position_quantity=pick("max_position_quantity", "OMS_MAX_POSITION_QUANTITY"),
            max_open_positions=pick("max_open_positions", "OMS_MAX_OPEN_POSITIONS"),
            max_risk_per_trade_percent=pick("max_risk_per_trade_percent", "OMS_MAX_RISK_PER_TRADE_PERCENT"),
            min_reward_risk=pick("min_reward_risk", "OMS_MIN_REWARD_RISK"),
            max_daily_loss=pick("max_daily_loss", "OMS_MAX_DAILY_LOSS"),
            max_drawdown=pick("max_drawdown", "OMS_MAX_DRAWDOWN"),
            max_position_loss=pick("max_position_loss", "OMS_MAX_POSITION_LOSS"),
            price_band_percent=pick("price_band_percent", "OMS_PRICE_BAND_PERCENT"),
            max_order_to_trade_ratio=pick("max_order_to_trade_ratio", "OMS_MAX_ORDER_TO_TRADE_RATIO"),
        )


@dataclass
class RiskContext:
    request: OrderRequest
    strategy: Any  # oms.models.Strategy
    instrument: Any  # instruments.models.Instrument
    limits: Limits
    trading_state: str  # ACTIVE, REDUCING or HALTED (the stricter of desk-wide and the strategy's)
    today: date
    now: datetime
    position_quantity: int = 0  # the strategy's net position in this instrument (all products)
    product_position: int = (
        0  # ... in this instrument and the order's product (what the order trades against)
    )
    # What the strategy's orders still working in this instrument may yet buy and sell (the
    # order being modified left out): all products, and the order's product.
    working_buy: int = 0
    working_sell: int = 0
    product_working_buy: int = 0
    product_working_sell: int = 0
    open_positions: int = 0  # non-flat positions, plus other instruments that only have working orders
    live_price: Decimal | None = None  # last price from a tick younger than OMS_MAX_PRICE_AGE_SECONDS
    live_tick: dict[str, Any] | None = None  # that tick (the paper broker fills against it)
    reference_price: Decimal | None = None  # last price from the latest tick of any age
    day_pnl: Decimal = ZERO
    day_peak_pnl: Decimal = ZERO
    orders_today: int = 0
    trades_today: int = 0
    square_off: bool = False  # a system square-off (kill switch, risk monitor): only the market rules apply
    freeze_quantity: int | None = None  # the exchange's largest F&O order for the underlying (FreezeLimit)
    modifying: bool = False  # a modify of a working order (checked as a new order would be)
    warnings: list[str] = field(default_factory=list)
    runaway: bool = False  # set by rate_limit: refusals this minute reached the runaway threshold

    @property
    def reduces_position(self) -> bool:
        """The order only shrinks the open position of its own product (Kite keeps products
        apart), never flips or grows it, even if every working order on its side fills."""
        position = self.product_position
        if position == 0 or (position > 0) == (self.request.side > 0):
            return False
        already = self.product_working_sell if position > 0 else self.product_working_buy
        return self.request.quantity + already <= abs(position)

    @property
    def resulting_position(self) -> int:
        """The worst case on the order's side: the position if this order and every working
        order on the same side fill (orders on the other side may never fill)."""
        working = self.working_buy if self.request.side > 0 else -self.working_sell
        return self.position_quantity + working + self.request.side * self.request.quantity

    @property
    def exposed(self) -> bool:
        """The strategy already has this instrument open (a position or working orders)."""
        return bool(self.position_quantity or self.working_buy or self.working_sell)

    @property
    def entry_price(self) -> Decimal | None:
        """The price the order would trade at, as far as it can be known now."""
        request = self.request
        if request.order_type in ("LIMIT", "SL") and request.price:
            return request.price
        if request.order_type == "SL-M" and request.trigger_price:
            return request.trigger_price
        return self.live_price or self.reference_price

    @property
    def stop(self) -> Decimal | None:
        """The stop-loss price: ``stop_loss``, or a cover order's trigger."""
        if self.request.stop_loss:
            return self.request.stop_loss
        if self.request.variety == "co" and self.request.trigger_price:
            return self.request.trigger_price
        return None
