"""The simulator's prices: seeds from the database, consistent sessions, derivatives priced
off their underlying, and what a client parses off the wire."""

import asyncio
import json
import random
from datetime import date, datetime, timedelta
from decimal import Decimal

import pytest
from django.utils import timezone
from hypothesis import given, settings
from hypothesis import strategies as st
from websockets.asyncio.client import connect

from ingestion.feed.protocol import parse_frame
from ingestion.feed.simulated_market import (
    I32_MAX,
    IST,
    RATE,
    YEAR_SECONDS,
    Seed,
    SimulatedMarket,
    Underlying,
    expiry_timestamp,
    future_price,
    option_price,
)
from ingestion.feed.simulator import SLICES, KiteSimulator
from ingestion.latest import latest_store
from ingestion.simulator_seeds import simulator_seeds
from tests.factories import InstrumentFactory

NIFTY_50, RELIANCE, USDINR = 256265, 738561, (1234 << 8) | 3
TICK = Decimal("0.05")


def on_grid(price: Decimal, tick: Decimal) -> bool:
    return (price / tick) == (price / tick).to_integral_value()


def years(seconds: int) -> Decimal:
    return Decimal(seconds) / YEAR_SECONDS


# --- options and futures -------------------------------------------------------------------

prices = st.integers(min_value=20, max_value=2_000_000).map(lambda n: n * TICK)  # 1 .. 100000 rupees
horizons = st.integers(min_value=0, max_value=2 * YEAR_SECONDS)
volatilities = st.sampled_from([0.06, 0.15, 0.3, 0.8])


@st.composite
def contracts(draw):
    spot = draw(prices)
    strike = (spot * Decimal(draw(st.integers(min_value=50, max_value=150))) / 100 / TICK).to_integral_value()
    return spot, max(TICK, strike * TICK), draw(horizons), draw(volatilities)


@settings(max_examples=300, deadline=None)
@given(contracts())
def test_option_prices_respect_their_bounds_and_put_call_parity(contract):
    spot, strike, seconds, volatility = contract
    call = option_price(
        spot=spot, strike=strike, seconds=seconds, call=True, tick=TICK, volatility=volatility
    )
    put = option_price(
        spot=spot, strike=strike, seconds=seconds, call=False, tick=TICK, volatility=volatility
    )
    assert isinstance(call, Decimal) and isinstance(put, Decimal)
    assert on_grid(call, TICK) and on_grid(put, TICK)
    assert call >= max(TICK, spot - strike)  # never below intrinsic value, never below one tick
    discounted = strike * (-RATE * years(seconds)).exp()
    assert put >= max(TICK, discounted - spot)  # a European put's lower bound
    # Put-call parity, up to the rounding to a tick and the one-tick floor of each price.
    assert abs((call - put) - (spot - discounted)) <= Decimal("1.5") * TICK + Decimal("1e-9")


@settings(max_examples=300, deadline=None)
@given(contracts(), st.integers(min_value=1, max_value=20_000))
def test_option_prices_move_with_the_spot(contract, steps_up):
    spot, strike, seconds, volatility = contract
    higher = spot + steps_up * TICK
    for call in (True, False):
        low = option_price(
            spot=spot, strike=strike, seconds=seconds, call=call, tick=TICK, volatility=volatility
        )
        high = option_price(
            spot=higher, strike=strike, seconds=seconds, call=call, tick=TICK, volatility=volatility
        )
        assert high >= low if call else high <= low


def test_option_prices_match_the_textbook_example():
    # Hull, Options, Futures and Other Derivatives, example 15.6: S=42, K=40, r=10%, sigma=20%, T=6 months.
    common = {"spot": Decimal(42), "strike": Decimal(40), "seconds": YEAR_SECONDS // 2, "tick": Decimal("0.01"),
              "volatility": 0.2, "rate": Decimal("0.1")}  # fmt: skip
    assert option_price(call=True, **common) == Decimal("4.76")
    assert option_price(call=False, **common) == Decimal("0.81")


@settings(max_examples=200, deadline=None)
@given(prices, horizons)
def test_a_future_is_the_spot_carried_to_expiry(spot, seconds):
    price = future_price(spot=spot, seconds=seconds, tick=TICK)
    assert on_grid(price, TICK)
    assert abs(price - spot * (RATE * years(seconds)).exp()) <= TICK / 2
    assert price >= spot  # near the spot, at a premium while rates are positive


# --- sessions ----------------------------------------------------------------------------

NOW = datetime(2030, 1, 7, 11, 0, tzinfo=IST).timestamp()
EXPIRY = date(2030, 1, 31)
NIFTY = Underlying(key=NIFTY_50, price=Decimal("24350.50"))


def seeds_strategy():
    price = st.one_of(st.none(), prices)
    spot = st.builds(
        Seed, price=price, tick_size=st.sampled_from([Decimal(0), Decimal("0.05"), Decimal("0.01")])
    )
    derivative = st.builds(
        Seed, instrument_type=st.sampled_from(["FUT", "CE", "PE"]), expiry=st.just(EXPIRY), lot_size=st.just(75),
        strike=st.integers(min_value=400, max_value=600).map(lambda n: Decimal(n * 50)), underlying=st.just(NIFTY),
    )  # fmt: skip
    return st.lists(st.one_of(spot, derivative, st.none(), prices), min_size=1, max_size=8)


@settings(max_examples=60, deadline=None)
@given(
    seeds_strategy(), st.integers(min_value=0, max_value=2**32), st.lists(st.integers(0, 7200), max_size=40)
)
def test_every_quote_keeps_a_consistent_session(seeds, rng_seed, gaps):
    market = SimulatedMarket(rng=random.Random(rng_seed), slices=SLICES)
    segments = [1, 9, 2, 3]  # NSE, an index, NFO, a currency (prices in 10^-7 rupee)
    tokens = [((1000 + n) << 8) | segments[n % 4] for n in range(len(seeds))]
    for token, seed in zip(tokens, seeds, strict=True):
        market.add(token, seed, now=NOW)
    now = NOW
    for gap in [1] * 30 + gaps + [86400] + [1] * 30:  # ticking, quiet spells, the next day
        now += gap
        for slot in range(SLICES):
            market.advance(slot, now)
        for quote in market.quotes.values():
            assert all(
                isinstance(v, int) for v in (quote.open, quote.high, quote.low, quote.close, quote.last)
            )
            assert quote.low <= min(quote.open, quote.close, quote.last)
            assert quote.high >= max(quote.open, quote.close, quote.last)
            assert quote.last % quote.step == 0
            assert quote.low > 0 and quote.high <= I32_MAX  # the protocol's int32
            assert quote.average % quote.step == 0


def test_a_new_day_starts_from_the_last_close():
    market = SimulatedMarket(rng=random.Random(7), slices=1)
    quote = market.add(RELIANCE, Decimal("2400.55"), now=NOW)
    now = NOW
    for _ in range(200):
        now += 1
        market.advance(0, now)
    last = quote.last
    midnight = datetime(2030, 1, 8, 0, 0, 1, tzinfo=IST).timestamp()
    market.advance(0, midnight)
    assert quote.close == last  # yesterday's last is today's previous close
    assert quote.low <= quote.open <= quote.high
    assert quote.volume <= 20  # volume starts again


def test_the_underlying_walks_while_only_its_derivatives_are_subscribed():
    market = SimulatedMarket(rng=random.Random(3), slices=1)
    future = market.add(
        (5000 << 8) | 2, Seed(instrument_type="FUT", expiry=EXPIRY, underlying=NIFTY), now=NOW
    )
    seen = set()
    for n in range(50):
        market.advance(0, NOW + n)
        seen.add(future.last)
    assert NIFTY_50 in market.walks and NIFTY_50 not in market.quotes
    assert len(seen) > 5
    assert all(Decimal(24000) < Decimal(p).scaleb(-2) < Decimal(24800) for p in seen)


# --- seeds from the database ---------------------------------------------------------------


def option_row(name, strike, kind="CE", expiry=None, exchange="NFO", **extra):
    return InstrumentFactory(name=name, tradingsymbol=f"{name}{strike}{kind}", instrument_type=kind,
                             segment=f"{exchange}-OPT", exchange=exchange, expiry=expiry or timezone.localdate() + timedelta(days=20),
                             strike=Decimal(strike), last_price=0, lot_size=75, **extra)  # fmt: skip


def index_row(symbol, token, exchange="NSE", price=0):
    return InstrumentFactory(instrument_token=token, tradingsymbol=symbol, name=symbol, segment="INDICES",
                             exchange=exchange, last_price=price, tick_size=0, lot_size=0)  # fmt: skip


@pytest.mark.django_db
def test_the_latest_tick_wins_then_the_dump_price_then_a_default():
    streamed = InstrumentFactory(instrument_token=RELIANCE, tradingsymbol="RELIANCE", last_price=0)
    upstox_like = InstrumentFactory(tradingsymbol="INFY", last_price=Decimal("1500.25"))
    unknown = InstrumentFactory(tradingsymbol="TINY", last_price=0)
    also_dump = InstrumentFactory(tradingsymbol="TCS", last_price=Decimal("3100"))
    latest_store({RELIANCE: json.dumps({"instrument_token": RELIANCE, "last_price": "2950.10"}),
                  also_dump.instrument_token: json.dumps({"last_price": "3120.45"})})  # fmt: skip
    seeds = simulator_seeds([streamed.instrument_token, upstox_like.instrument_token, unknown.instrument_token,
                             also_dump.instrument_token, 999_999_999])  # fmt: skip
    assert seeds[RELIANCE].price == Decimal("2950.10")
    assert seeds[upstox_like.instrument_token].price == Decimal("1500.25")
    assert seeds[also_dump.instrument_token].price == Decimal("3120.45")  # newer than the dump
    assert seeds[unknown.instrument_token].price is None  # the simulator's default
    assert seeds[RELIANCE].kind == "spot" and seeds[RELIANCE].tick_size == Decimal("0.05")
    assert 999_999_999 not in seeds


@pytest.mark.django_db
def test_an_index_without_a_price_starts_at_the_middle_of_its_nearest_strikes():
    index_row("NIFTY 50", NIFTY_50)
    for strike in (24000, 24300, 24350, 24400, 24700):
        option_row("NIFTY", strike)
    option_row(
        "NIFTY", 18000, expiry=timezone.localdate() + timedelta(days=400)
    )  # a far expiry, listed long ago
    option_row(
        "NIFTY", 10000, expiry=timezone.localdate() - timedelta(days=3), is_listed=False
    )  # delisted, expired
    assert simulator_seeds([NIFTY_50])[NIFTY_50].price == Decimal(24350)


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("name", "exchange", "symbol"),
    [("NIFTY", "NSE", "NIFTY 50"), ("BANKNIFTY", "NSE", "NIFTY BANK"), ("FINNIFTY", "NSE", "NIFTY FIN SERVICE"),
     ("MIDCPNIFTY", "NSE", "NIFTY MID SELECT"), ("SENSEX", "BSE", "SENSEX")],
)  # fmt: skip
def test_index_derivatives_are_priced_off_their_index(name, exchange, symbol):
    index = index_row(symbol, (77 << 8) | 9, exchange=exchange, price=Decimal("51234.50"))
    index_row("DECOY", (78 << 8) | 9, exchange=exchange, price=Decimal("1"))
    derivative_exchange = "BFO" if exchange == "BSE" else "NFO"
    option = option_row(name, 51200, "PE", exchange=derivative_exchange)
    future = InstrumentFactory(name=name, tradingsymbol=f"{name}FUT", instrument_type="FUT", segment="NFO-FUT",
                               exchange=derivative_exchange, expiry=timezone.localdate() + timedelta(days=20), last_price=0)  # fmt: skip
    seeds = simulator_seeds([option.instrument_token, future.instrument_token])
    for seed in seeds.values():
        assert seed.underlying == Underlying(
            key=index.instrument_token, price=Decimal("51234.50"), tick_size=0
        )
    assert seeds[option.instrument_token].kind == "option" and seeds[option.instrument_token].strike == 51200
    assert seeds[future.instrument_token].kind == "future"
    assert index.instrument_token not in seeds  # not asked for: walked by the simulator, not streamed


@pytest.mark.django_db
def test_stock_derivatives_are_priced_off_the_nse_equity():
    nse = InstrumentFactory(
        tradingsymbol="RELIANCE", exchange="NSE", segment="NSE", last_price=Decimal("2400.55")
    )
    InstrumentFactory(tradingsymbol="RELIANCE", exchange="BSE", segment="BSE", last_price=Decimal("1"))
    option = option_row("RELIANCE", 2400)
    seed = simulator_seeds([option.instrument_token])[option.instrument_token]
    assert seed.underlying is not None and seed.underlying.key == nse.instrument_token
    assert seed.underlying.price == Decimal("2400.55")


@pytest.mark.django_db
def test_a_derivative_without_a_spot_row_gets_a_spot_of_its_own():
    near = InstrumentFactory(name="CRUDEOIL", tradingsymbol="CRUDEOIL30JANFUT", instrument_type="FUT",
                             segment="MCX-FUT", exchange="MCX", expiry=timezone.localdate() + timedelta(days=10),
                             last_price=Decimal("6120"), tick_size=1)  # fmt: skip
    far = InstrumentFactory(name="CRUDEOIL", tradingsymbol="CRUDEOIL30FEBFUT", instrument_type="FUT",
                            segment="MCX-FUT", exchange="MCX", expiry=timezone.localdate() + timedelta(days=40),
                            last_price=0, tick_size=1)  # fmt: skip
    seeds = simulator_seeds([near.instrument_token, far.instrument_token])
    assert seeds[near.instrument_token].underlying == seeds[far.instrument_token].underlying
    assert seeds[far.instrument_token].underlying == Underlying(
        key="MCX:CRUDEOIL", price=Decimal(6120), tick_size=1
    )


# --- over the wire ---------------------------------------------------------------------------


async def collect(simulator, subscriptions, until):
    """Subscribe ({token: mode}) like a Kite client and parse frames until ``until(ticks)``."""
    ticks = []
    async with connect(f"{simulator.url}/?api_key=k&access_token=t") as ws:
        await ws.send(json.dumps({"a": "subscribe", "v": list(subscriptions)}))
        for mode in ("ltp", "full"):
            tokens = [t for t, m in subscriptions.items() if m == mode]
            if tokens:
                await ws.send(json.dumps({"a": "mode", "v": [mode, tokens]}))
        while not until(ticks):
            message = await asyncio.wait_for(ws.recv(), 10)
            if isinstance(message, bytes):
                ticks.extend(parse_frame(message))
    return ticks


@pytest.mark.django_db
def test_over_the_wire_prices_start_from_the_seeds_and_derivatives_follow_the_index():
    index_row("NIFTY 50", NIFTY_50)
    latest_store({NIFTY_50: json.dumps({"instrument_token": NIFTY_50, "last_price": "24350.50"})})
    InstrumentFactory(instrument_token=RELIANCE, tradingsymbol="RELIANCE", last_price=Decimal("2400.55"))
    expiry = timezone.localdate() + timedelta(days=30)
    call = option_row("NIFTY", 24350, "CE", expiry=expiry)
    put = option_row("NIFTY", 24350, "PE", expiry=expiry)
    future = InstrumentFactory(name="NIFTY", tradingsymbol="NIFTYFUT", instrument_type="FUT", segment="NFO-FUT",
                               exchange="NFO", expiry=expiry, last_price=0, lot_size=75)  # fmt: skip
    derivatives = [call.instrument_token, put.instrument_token, future.instrument_token]
    seeds = simulator_seeds([RELIANCE, *derivatives])  # NIFTY 50 itself is not subscribed

    async def lookup(tokens):
        return {token: seeds[token] for token in tokens if token in seeds}

    subscriptions = {RELIANCE: "full", call.instrument_token: "quote", put.instrument_token: "full",
                     future.instrument_token: "ltp"}  # fmt: skip

    def enough(ticks):
        futures = {t["last_price"] for t in ticks if t["instrument_token"] == future.instrument_token}
        return len(ticks) >= 120 and len(futures) >= 3  # the unsubscribed index walks: the future moves

    async def run():
        simulator = await KiteSimulator(interval=0.05, price_lookup=lookup, seed=11).start()
        try:
            return await collect(simulator, subscriptions, enough)
        finally:
            await simulator.stop()

    ticks = asyncio.run(run())
    by_token = {}
    for tick in ticks:
        assert on_grid(tick["last_price"], TICK)
        if "ohlc" in tick:
            ohlc = tick["ohlc"]
            assert ohlc["low"] <= min(ohlc["open"], ohlc["close"], tick["last_price"])
            assert ohlc["high"] >= max(ohlc["open"], ohlc["close"], tick["last_price"])
            assert all(on_grid(v, TICK) for v in ohlc.values())
        if tick["mode"] == "full":
            best_bid, best_ask = tick["depth"]["buy"][0]["price"], tick["depth"]["sell"][0]["price"]
            assert best_bid < tick["last_price"] < best_ask
        by_token[tick["instrument_token"]] = tick
    assert {t: by_token[t]["mode"] for t in by_token} == subscriptions
    assert abs(by_token[RELIANCE]["last_price"] - Decimal("2400.55")) < Decimal("24")  # within 1%, not 100
    assert by_token[RELIANCE]["ohlc"]["close"] == Decimal("2400.55")  # the last known price is the close
    # The future is near the spot (about 24350), options priced off it by Black-Scholes.
    c, p, fut = (by_token[t]["last_price"] for t in derivatives)
    assert Decimal(24000) < fut < Decimal(24900)
    assert Decimal(250) < c < Decimal(700) and Decimal(150) < p < Decimal(600)
    seconds = expiry_timestamp(expiry) - datetime.now(tz=IST).timestamp()
    carry = (RATE * years(int(seconds))).exp()
    spot = fut / carry
    assert abs((c - p) - (spot - Decimal(24350) / carry)) < Decimal(60)  # parity, the index moving meanwhile


def test_a_plain_price_lookup_still_seeds_the_simulator():
    prices = {RELIANCE: Decimal("812.35"), USDINR: Decimal("83.2525")}

    async def lookup(tokens):
        return {token: prices[token] for token in tokens}

    async def run():
        simulator = await KiteSimulator(interval=0.05, price_lookup=lookup).start()
        try:
            return await collect(
                simulator, {RELIANCE: "quote", USDINR: "quote"}, lambda ticks: len(ticks) >= 10
            )
        finally:
            await simulator.stop()

    ticks = asyncio.run(run())
    for tick in ticks:
        assert abs(tick["last_price"] - prices[tick["instrument_token"]]) < Decimal("1")
        tick_size = Decimal("0.0025") if tick["instrument_token"] == USDINR else TICK
        assert on_grid(tick["last_price"], tick_size)
