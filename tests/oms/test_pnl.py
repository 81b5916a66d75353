"""Position arithmetic against hand-computed cases."""

from decimal import Decimal as D

import pytest
from hypothesis import given
from hypothesis import strategies as st

from oms.pnl import Book, apply_fill, day_m2m


def fills(book, *trades):
    return [apply_fill(book, side=side, quantity=qty, price=D(price)) for side, qty, price in trades]


def test_buy_then_sell_at_another_price_realises_the_difference():
    book = Book()
    assert fills(book, ("BUY", 10, "100.00"), ("SELL", 10, "104.50")) == [D(0), D("45.00")]
    assert book.quantity == 0 and book.open_cost == 0 and book.realised == D("45.00")
    assert book.unrealised(D("200")) == 0


def test_partial_fills_and_adding_to_a_position_use_the_weighted_average():
    book = Book()
    fills(book, ("BUY", 10, "100"), ("BUY", 30, "104"))  # average (1000 + 3120) / 40 = 103
    assert book.average_price == D("103.0000") and book.quantity == 40
    assert fills(book, ("SELL", 15, "110")) == [D("105")]  # (110 - 103) x 15
    assert book.quantity == 25 and book.average_price == D("103.0000")
    assert book.unrealised(D("101")) == D("-50")  # (101 - 103) x 25
    assert book.buy_quantity == 40 and book.buy_value == D("4120") and book.sell_value == D("1650")


def test_a_flip_from_long_to_short_in_one_order():
    book = Book()
    fills(book, ("BUY", 10, "100"))
    assert fills(book, ("SELL", 25, "90")) == [D("-100")]  # closes 10 at a loss of 10 each
    assert book.quantity == -15 and book.average_price == D("90.0000")
    assert book.unrealised(D("80")) == D("150")  # short 15 from 90, now 80


def test_short_first_then_cover():
    book = Book()
    fills(book, ("SELL", 50, "250.10"))
    assert book.quantity == -50 and book.average_price == D("250.1000")
    assert fills(book, ("BUY", 20, "249.60"), ("BUY", 30, "251.10")) == [D("10.00"), D("-30.00")]
    assert book.quantity == 0 and book.realised == D("-20.00")


def test_realised_is_not_zero_when_prices_differ():
    book = Book()
    fills(book, ("BUY", 1, "470"), ("SELL", 1, "470.05"))
    assert book.realised == D("0.05")


def test_the_days_mark_to_market_counts_what_was_carried_in_at_its_close():
    # 10 carried in at a close of 100, 5 more bought today at 102, marked at 105.
    assert day_m2m(day_buy_value=D("510"), day_sell_value=D(0), quantity=15, overnight_quantity=10,
                   close_price=D("100"), last_price=D("105")) == D("65")  # fmt: skip


def test_bad_fills_are_refused():
    with pytest.raises(ValueError):
        apply_fill(Book(), side="BUY", quantity=0, price=D(1))
    with pytest.raises(ValueError):
        apply_fill(Book(), side="HOLD", quantity=1, price=D(1))


prices = st.decimals(min_value=D("0.05"), max_value=D("50000"), places=2)
trades = st.lists(st.tuples(st.sampled_from(["BUY", "SELL"]), st.integers(1, 500), prices), max_size=40)


@given(trades, prices)
def test_pnl_is_cash_flow_plus_the_open_position_marked(trades, mark):
    """Whatever the fills, realised + unrealised equals what came in minus what went out
    plus the open quantity at the mark (to the rounding of partial closes)."""
    book = Book()
    for side, qty, price in trades:
        apply_fill(book, side=side, quantity=qty, price=price)
    cash = book.sell_value - book.buy_value
    assert book.quantity == book.buy_quantity - book.sell_quantity
    total = book.realised + book.unrealised(mark)
    assert abs(total - (cash + mark * book.quantity)) <= D("0.0001") * (len(trades) + 1)
