"""The paper broker's matching decisions: plain logic over a quote."""

from decimal import Decimal as D

from oms import state
from oms.brokers.paper import Quote, decide, quote_from_tick


def test_market_orders_take_the_other_side_or_the_last_price():
    book = Quote(last=D("100"), bid=D("99.95"), ask=D("100.05"))
    assert decide(side="BUY", order_type="MARKET", price=D(0), trigger_price=D(0), status=state.PUT_ORDER_REQ_RECEIVED,
                  quote=book, resting=False).fill_price == D("100.05")  # fmt: skip
    assert decide(side="SELL", order_type="MARKET", price=D(0), trigger_price=D(0),
                  status=state.PUT_ORDER_REQ_RECEIVED, quote=book, resting=False).fill_price == D("99.95")  # fmt: skip
    no_depth = Quote(last=D("100"))
    assert decide(side="BUY", order_type="MARKET", price=D(0), trigger_price=D(0), status=state.OPEN,
                  quote=no_depth, resting=False).fill_price == D("100")  # fmt: skip


def test_a_limit_fills_when_the_market_crosses_never_worse_than_its_price():
    quote = Quote(last=D("99"), bid=D("98.9"), ask=D("99.1"))
    marketable = decide(side="BUY", order_type="LIMIT", price=D("100"), trigger_price=D(0),
                        status=state.PUT_ORDER_REQ_RECEIVED, quote=quote, resting=False)  # fmt: skip
    assert marketable.fill_price == D("99.1")  # at the ask, better than the limit
    resting = decide(side="BUY", order_type="LIMIT", price=D("100"), trigger_price=D(0), status=state.OPEN,
                     quote=quote, resting=True)  # fmt: skip
    assert resting.fill_price == D("100")  # a resting order trades at its own price
    away = decide(side="SELL", order_type="LIMIT", price=D("100"), trigger_price=D(0), status=state.OPEN,
                  quote=quote, resting=True)  # fmt: skip
    assert away.fill_price is None


def test_stops_wait_for_their_trigger():
    below = Quote(last=D("99"))
    above = Quote(last=D("101"), ask=D("101.1"))
    kwargs = {"side": "BUY", "price": D("102"), "trigger_price": D("100"), "status": state.TRIGGER_PENDING,
              "resting": True}  # fmt: skip
    assert decide(order_type="SL", quote=below, **kwargs).triggered is False
    triggered = decide(order_type="SL", quote=above, **kwargs)
    assert triggered.triggered and triggered.fill_price == D("101.1")
    assert decide(order_type="SL-M", quote=above, **kwargs).fill_price == D("101.1")
    sell_stop = decide(side="SELL", order_type="SL-M", price=D(0), trigger_price=D("100"),
                       status=state.TRIGGER_PENDING, quote=below, resting=True)  # fmt: skip
    assert sell_stop.triggered and sell_stop.fill_price == D("99")


def test_ticks_become_quotes_with_decimals():
    quote = quote_from_tick({"last_price": "101.25", "bid": "101.2", "ask": "101.3"})
    assert quote == Quote(last=D("101.25"), bid=D("101.2"), ask=D("101.3"))
    assert quote_from_tick({"last_price": "0"}) is None and quote_from_tick(None) is None
