"""Zerodha's charges on trades, grouped and rounded as a contract note does them.

Brokerage is charged per executed order (an order filled in five trades is one order); the
rest is charged on turnover, per column of the contract note: one trading day (IST) on one
exchange. In each column:

- **brokerage**: per order, ``brokerage.<class>.percent`` of the order's value, at most
  ``max`` (no ``percent``: ``max`` flat), rounded to the paisa, summed;
- **STT/CTT**: per instrument, rounded half up to the rupee (Zerodha's rule). Equity
  (NSE, BSE) is netted as the exchange nets it, whatever the product: the day's matched
  quantity ``min(bought, sold)`` pays the intraday rates and the rest the delivery rates,
  both at the average price of all the day's buys and sells of that instrument (Zerodha's
  worked example: 500 bought at 100, sold at 105, 200 more bought at 110 pays 13 + 21).
  Futures pay on their value, options on their premium (the trade price is the premium);
- **exchange transaction charges** (NSE's IPFT included, as Zerodha shows it): each
  trade's value at its class's rate for that exchange, summed, rounded to the paisa;
- **SEBI fees**: ``sebi_per_crore`` of the column's turnover, rounded to the paisa;
- **stamp duty**: per instrument, on the buy value (equity netted like STT: the matched
  part at the intraday rate, the rest at the delivery rate), rounded as ``rounding.stamp``;
- **GST**: ``gst_percent`` of brokerage + exchange charges + SEBI fees, rounded to the paisa.

A trade's value is ``price x quantity``, as the OMS values trades (Kite's ``multiplier`` for
currency and MCX lots is not applied). Charges are computed per strategy as if it had its own
account: one Kite account's contract note nets STT across all its strategies. Not charged:
DP charges, MTF interest and pledges, STT on exercised options, the call-and-trade and auto
square-off fees, BSE's higher rates for its X/XT/Z groups.

The table (``oms.charges.schedule.DEFAULT_SCHEDULE``, with its sources) is Zerodha's
published schedule; ``settings.CHARGES_SCHEDULE`` is that table with a desk's overrides
(``schedule_load``), validated at start-up.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Hashable, Iterable
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Protocol
from zoneinfo import ZoneInfo

from django.conf import settings

from oms.charges.schedule import (
    BUY,
    CASH_EXCHANGES,
    COMPONENTS,
    CRORE,
    DEFAULT_SCHEDULE,
    DERIVATIVE_EXCHANGES,
    EQUITY_PRODUCTS,
    HUNDRED,
    SELL,
    ZERO,
    Schedule,
    ScheduleError,
    schedule_load,
    schedule_parse,
)

if TYPE_CHECKING:
    from oms.models import Strategy

__all__ = [
    "DEFAULT_SCHEDULE", "ChargeBreakdown", "ChargesError", "NoteColumn", "Schedule", "ScheduleError", "TradeLike",
    "charges_for_day", "charges_for_trades", "contract_notes", "schedule_load", "schedule_parse",
]  # fmt: skip

IST = ZoneInfo("Asia/Kolkata")


class ChargesError(ValueError):
    """A trade the schedule cannot charge; the message names the trade and what is missing."""


class TradeLike(Protocol):
    """What a fill needs for its charges (``oms.models.Trade`` rows have it)."""

    @property
    def order_id(self) -> Hashable: ...
    @property
    def exchange(self) -> str: ...
    @property
    def tradingsymbol(self) -> str: ...
    @property
    def instrument_token(self) -> int: ...
    @property
    def product(self) -> str: ...
    @property
    def transaction_type(self) -> str: ...
    @property
    def quantity(self) -> int: ...
    @property
    def price(self) -> Decimal: ...
    @property
    def filled_at(self) -> datetime: ...


@dataclass(frozen=True)
class ChargeBreakdown:
    """Each charge in rupees (to the paisa), the turnover they were charged on, and the count
    of executed orders that paid brokerage."""

    brokerage: Decimal = ZERO
    stt: Decimal = ZERO
    exchange: Decimal = ZERO
    sebi: Decimal = ZERO
    stamp: Decimal = ZERO
    gst: Decimal = ZERO
    turnover: Decimal = ZERO
    orders: int = 0

    @property
    def total(self) -> Decimal:
        return self.brokerage + self.stt + self.exchange + self.sebi + self.stamp + self.gst

    def __add__(self, other: ChargeBreakdown) -> ChargeBreakdown:
        return ChargeBreakdown(**{
            name: getattr(self, name) + getattr(other, name) for name in (*COMPONENTS, "turnover", "orders")
        })  # fmt: skip

    def as_dict(self) -> dict[str, Decimal | int]:
        return {
            **{name: getattr(self, name) for name in (*COMPONENTS, "turnover", "orders")},
            "total": self.total,
        }


@dataclass(frozen=True)
class NoteColumn:
    """One column of a contract note: a trading day (IST) on one exchange."""

    day: date
    exchange: str
    charges: ChargeBreakdown


@dataclass(frozen=True)
class _Fill:
    order: Hashable
    instrument: Hashable
    brokerage_class: str
    statutory_class: str
    side: str
    quantity: int
    value: Decimal


def _describe(trade: TradeLike) -> str:
    return f"trade of order {trade.order_id} ({trade.exchange}:{trade.tradingsymbol})"


def _classes(trade: TradeLike) -> tuple[str, str]:
    """(brokerage class, statutory class) of a trade, from its exchange, product and symbol."""
    exchange, product = trade.exchange, trade.product
    if exchange in CASH_EXCHANGES:
        klass = EQUITY_PRODUCTS.get(product)
        if klass is None:
            raise ChargesError(f"{_describe(trade)}: product {product!r} does not trade on {exchange} "
                               f"(known: {', '.join(EQUITY_PRODUCTS)})")  # fmt: skip
        return klass, "equity_delivery" if klass == "equity_mtf" else klass
    family = DERIVATIVE_EXCHANGES.get(exchange)
    if family is None:
        raise ChargesError(f"{_describe(trade)}: no charges for exchange {exchange!r}")
    symbol = trade.tradingsymbol
    # Kite's F&O, currency and commodity symbols end in FUT, CE or PE.
    if symbol.endswith("FUT"):
        klass = f"{family}_futures"
    elif symbol.endswith(("CE", "PE")):
        klass = f"{family}_options"
    else:
        raise ChargesError(f"{_describe(trade)}: {symbol!r} is neither a future (ending FUT) nor an option "
                           "(ending CE or PE)")  # fmt: skip
    return klass, klass


def _money(value: object) -> Decimal | None:
    """``value`` as a finite Decimal of 0 or more; None for anything else (floats included)."""
    if isinstance(value, bool) or not isinstance(value, Decimal | int):
        return None
    number = Decimal(value)
    return number if number.is_finite() and number >= 0 else None


def _fill(trade: TradeLike, schedule: Schedule) -> tuple[date, str, _Fill]:
    side, quantity, price, at = trade.transaction_type, trade.quantity, trade.price, trade.filled_at
    if side not in (BUY, SELL):
        raise ChargesError(f"{_describe(trade)}: transaction_type {side!r} is neither BUY nor SELL")
    if isinstance(quantity, bool) or not isinstance(quantity, int) or quantity <= 0:
        raise ChargesError(f"{_describe(trade)}: quantity {quantity!r} is not a positive whole number")
    value = _money(price)
    if value is None:
        raise ChargesError(
            f"{_describe(trade)}: price {price!r} must be a Decimal, 0 or more (never a float)"
        )
    if not isinstance(at, datetime) or at.utcoffset() is None:
        raise ChargesError(f"{_describe(trade)}: filled_at {at!r} must be an aware datetime")
    brokerage_class, statutory_class = _classes(trade)
    if trade.exchange not in schedule.exchange[statutory_class]:
        raise ChargesError(f"{_describe(trade)}: the charge table ({schedule.source}) has no rate for "
                           f"exchange.{statutory_class}.{trade.exchange}: add it")  # fmt: skip
    fill = _Fill(order=trade.order_id, instrument=trade.instrument_token, brokerage_class=brokerage_class,
                 statutory_class=statutory_class, side=side, quantity=quantity, value=value * quantity)  # fmt: skip
    return at.astimezone(IST).date(), trade.exchange, fill


def _stt_and_stamp(fills: list[_Fill], *, cash: bool, schedule: Schedule) -> tuple[Decimal, Decimal]:
    """STT and stamp duty of one instrument's fills in one column, each rounded."""
    if not cash:
        stt = sum((f.value * schedule.stt[f.statutory_class][f.side] for f in fills), ZERO) / HUNDRED
        stamp = (
            sum((f.value * schedule.stamp[f.statutory_class] for f in fills if f.side == BUY), ZERO) / HUNDRED
        )
        return schedule.round("stt", stt), schedule.round("stamp", stamp)
    # Equity: the exchange nets the day's buys and sells of the instrument, whatever the product.
    # Each amount is one product divided once, so an exact half paisa or rupee stays exact.
    bought = sum(f.quantity for f in fills if f.side == BUY)
    sold = sum(f.quantity for f in fills if f.side == SELL)
    buy_value = sum((f.value for f in fills if f.side == BUY), ZERO)
    value = buy_value + sum((f.value for f in fills if f.side == SELL), ZERO)
    matched = min(bought, sold)
    intraday, delivery = schedule.stt["equity_intraday"], schedule.stt["equity_delivery"]
    per_average = (bought + sold) * HUNDRED  # value / (bought + sold) is the average price
    stt_intraday = value * matched * (intraday[BUY] + intraday[SELL]) / per_average
    stt_delivery = (
        value * ((bought - matched) * delivery[BUY] + (sold - matched) * delivery[SELL]) / per_average
    )
    stamp_intraday = stamp_delivery = ZERO
    if bought:
        stamp_intraday = buy_value * matched * schedule.stamp["equity_intraday"] / (bought * HUNDRED)
        stamp_delivery = (
            buy_value * (bought - matched) * schedule.stamp["equity_delivery"] / (bought * HUNDRED)
        )
    return (
        schedule.round("stt", stt_intraday) + schedule.round("stt", stt_delivery),
        schedule.round("stamp", stamp_intraday) + schedule.round("stamp", stamp_delivery),
    )


def _column(exchange: str, fills: list[_Fill], schedule: Schedule) -> ChargeBreakdown:
    orders: dict[Hashable, list[_Fill]] = defaultdict(list)
    instruments: dict[Hashable, list[_Fill]] = defaultdict(list)
    for fill in fills:
        orders[fill.order].append(fill)
        instruments[fill.instrument].append(fill)
    brokerage = sum(
        (schedule.round("brokerage", schedule.brokerage[own[0].brokerage_class].on(sum((f.value for f in own), ZERO)))
         for own in orders.values()),
        ZERO,
    )  # fmt: skip
    turnover = sum((f.value for f in fills), ZERO)
    exchange_charges = schedule.round(
        "exchange",
        sum((f.value * schedule.exchange[f.statutory_class][exchange] for f in fills), ZERO) / HUNDRED,
    )
    sebi = schedule.round("sebi", turnover * schedule.sebi_per_crore / CRORE)
    stt = stamp = ZERO
    for own in instruments.values():
        instrument_stt, instrument_stamp = _stt_and_stamp(
            own, cash=exchange in CASH_EXCHANGES, schedule=schedule
        )
        stt += instrument_stt
        stamp += instrument_stamp
    gst = schedule.round("gst", (brokerage + exchange_charges + sebi) * schedule.gst_percent / HUNDRED)
    return ChargeBreakdown(brokerage=brokerage, stt=stt, exchange=exchange_charges, sebi=sebi, stamp=stamp,
                           gst=gst, turnover=turnover, orders=len(orders))  # fmt: skip


def contract_notes(trades: Iterable[TradeLike], *, schedule: Schedule | None = None) -> list[NoteColumn]:
    """The charges of ``trades`` per contract-note column (day, exchange), in that order."""
    if schedule is None:
        schedule = settings.CHARGES_SCHEDULE
    columns: dict[tuple[date, str], list[_Fill]] = defaultdict(list)
    for trade in trades:
        day, exchange, fill = _fill(trade, schedule)
        columns[day, exchange].append(fill)
    return [
        NoteColumn(day=day, exchange=exchange, charges=_column(exchange, fills, schedule))
        for (day, exchange), fills in sorted(columns.items())
    ]


def charges_for_trades(trades: Iterable[TradeLike], *, schedule: Schedule | None = None) -> ChargeBreakdown:
    """The charges of ``trades`` (any days, exchanges, products), as their contract notes add up."""
    return sum((column.charges for column in contract_notes(trades, schedule=schedule)), ChargeBreakdown())


def charges_for_day(*, strategy: Strategy, day: date, schedule: Schedule | None = None) -> ChargeBreakdown:
    """The charges of ``strategy``'s trades filled on ``day`` (IST), read from ``oms.models.Trade``."""
    from oms.models import Trade  # here: settings import this module before the apps are loaded

    start = datetime.combine(day, time.min, tzinfo=IST)
    trades = Trade.objects.filter(
        strategy=strategy, filled_at__gte=start, filled_at__lt=start + timedelta(days=1)
    )
    fields = ("order", "exchange", "tradingsymbol", "instrument_token", "product", "transaction_type",
              "quantity", "price", "filled_at")  # fmt: skip
    return charges_for_trades(trades.only(*fields).order_by(), schedule=schedule)
