"""Position arithmetic: plain functions over Decimals and integers, free of Django.

A position is net quantity (signed: short is negative) and the signed cost of that open
quantity (the sum of ``quantity x price`` of what is still open, by weighted average, as
Kite's ``average_price``). A fill in the position's direction adds to it; a fill against
it closes up to the open quantity, realising ``(price - average) x closed`` (long) or
``(average - price) x closed`` (short), and any remainder opens the other way at the
fill's price (a flip). Values are exact except where a partial close divides the cost
(rounded to 8 places).

- ``unrealised = last_price x quantity - open_cost``
- ``pnl = realised + unrealised``
- ``m2m`` (the day's mark to market, as Kite computes it) ``= day_sell_value - day_buy_value +
  quantity x last_price - overnight_quantity x close_price``
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal

ZERO = Decimal(0)
COST_PLACES = Decimal("0.00000001")
PRICE_PLACES = Decimal("0.0001")
BUY, SELL = "BUY", "SELL"


@dataclass
class Book:
    quantity: int = 0
    open_cost: Decimal = ZERO
    realised: Decimal = ZERO
    buy_quantity: int = 0
    buy_value: Decimal = ZERO
    sell_quantity: int = 0
    sell_value: Decimal = ZERO

    @property
    def average_price(self) -> Decimal:
        """The average price of the open quantity (0 when flat), to 4 places."""
        if not self.quantity:
            return ZERO
        return (self.open_cost / self.quantity).quantize(PRICE_PLACES, rounding=ROUND_HALF_EVEN)

    def unrealised(self, last_price: Decimal | None) -> Decimal:
        if not self.quantity or last_price is None:
            return ZERO
        return last_price * self.quantity - self.open_cost


def day_m2m(*, day_buy_value: Decimal, day_sell_value: Decimal, quantity: int, overnight_quantity: int,
            close_price: Decimal, last_price: Decimal) -> Decimal:  # fmt: skip
    """The day's mark to market: today's trades plus the move of what was carried in."""
    return day_sell_value - day_buy_value + last_price * quantity - close_price * overnight_quantity


def apply_fill(book: Book, *, side: str, quantity: int, price: Decimal) -> Decimal:
    """Apply one fill to ``book`` in place; returns the P&L it realised."""
    if quantity <= 0:
        raise ValueError(f"a fill needs a positive quantity, not {quantity}")
    if side == BUY:
        book.buy_quantity += quantity
        book.buy_value += price * quantity
        signed = quantity
    elif side == SELL:
        book.sell_quantity += quantity
        book.sell_value += price * quantity
        signed = -quantity
    else:
        raise ValueError(f"unknown side {side!r}")
    if book.quantity == 0 or (book.quantity > 0) == (signed > 0):
        book.quantity += signed
        book.open_cost += price * signed
        return ZERO
    direction = 1 if book.quantity > 0 else -1
    open_quantity = abs(book.quantity)
    closing = min(quantity, open_quantity)
    if closing == open_quantity:
        removed = book.open_cost
    else:
        removed = (book.open_cost * closing / open_quantity).quantize(COST_PLACES, rounding=ROUND_HALF_EVEN)
    realised = direction * price * closing - removed
    book.realised += realised
    book.open_cost -= removed
    book.quantity -= direction * closing
    remainder = quantity - closing
    if remainder:
        book.quantity = signed // quantity * remainder
        book.open_cost = price * book.quantity
    return realised
