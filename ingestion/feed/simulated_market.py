"""The simulator's market: where each instrument's price starts and how it moves.

Spot instruments (indices, equities, and anything whose underlying is unknown) take a
random walk in tick-size steps, up to about a basis point a move, from their seed price.
Derivatives are priced off their underlying's walk: futures at the spot plus carry at
``RATE``, options by Black-Scholes on a fixed volatility (``volatility_for``). An
underlying walks whether or not it is subscribed itself, so every option and future on
NIFTY moves with the same NIFTY 50. Each quote keeps a consistent session,
``low <= open, close, last <= high``, rolled over at midnight IST (the previous close is
the last price of the day before).

Prices are integers in the protocol's units (paise; 10^-7 rupee for CDS, 10^-4 for BCD),
always on the instrument's tick size. Floats appear only inside ``black_scholes``; its
result becomes a ``Decimal`` rounded to the tick. Free of Django: where the seeds come
from (the latest-tick store, the instrument master) is ``ingestion/simulator_seeds.py``.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from datetime import date, datetime, time
from decimal import ROUND_CEILING, ROUND_HALF_EVEN, Decimal
from zoneinfo import ZoneInfo

from ingestion.feed.protocol import DEFAULT_PLACES, INDICES, PRICE_PLACES

IST = ZoneInfo("Asia/Kolkata")
IST_OFFSET_SECONDS = 19800  # India has no daylight saving time
YEAR_SECONDS = 365 * 24 * 3600
EXPIRY_TIME = time(15, 30)  # derivatives expire at the close on their expiry date
RATE = Decimal("0.065")  # carry of futures, discounting of options
MOVE_BASIS = 10_000  # a walk moves at most price / MOVE_BASIS (rounded up to a tick) per move
U32_MAX = 0xFFFF_FFFF  # volumes and OI are uint32 in the protocol
I32_MAX = 0x7FFF_FFFF  # prices are int32: at most 214.7483647 rupees for CDS (10^-7 units)
CDS, BCD = 3, 6
DERIVATIVES = frozenset({"FUT", "CE", "PE"})


def places_of(token: int) -> int:
    """Decimal places of the protocol's integer prices for ``token``'s segment."""
    return PRICE_PLACES.get(token & 0xFF, DEFAULT_PLACES)


def default_tick(token: int) -> Decimal:
    return Decimal("0.0025") if token & 0xFF in (CDS, BCD) else Decimal("0.05")


def default_price(token: int) -> Decimal:
    """A start for an instrument nothing is known about (no last price, no options)."""
    return Decimal(10000) if token & 0xFF == INDICES else Decimal(100)


def volatility_for(token: int, underlying: int | str) -> float:
    """The fixed annual volatility options on ``underlying`` are priced with."""
    if isinstance(underlying, int) and underlying & 0xFF == INDICES:
        return 0.15
    if token & 0xFF in (CDS, BCD):
        return 0.06
    return 0.30


@dataclass(frozen=True)
class Underlying:
    """What a derivative is priced off: its spot's token (or ``"EXCHANGE:NAME"`` when the
    spot has no row of its own), the spot's seed price and tick size."""

    key: int | str
    price: Decimal | None = None
    tick_size: Decimal = Decimal(0)


@dataclass(frozen=True)
class Seed:
    """Where the simulator starts one instrument and how it prices it.

    ``price`` is the last known price (``None``: unknown). Futures and options
    (``instrument_type`` FUT, CE, PE, with an ``expiry``) with an ``underlying`` are
    priced off it; everything else walks from ``price``.
    """

    price: Decimal | None = None
    tick_size: Decimal = Decimal(0)
    lot_size: int = 1
    instrument_type: str = ""
    strike: Decimal = Decimal(0)
    expiry: date | None = None
    underlying: Underlying | None = None

    @property
    def kind(self) -> str:
        if self.underlying is None or self.expiry is None or self.instrument_type not in DERIVATIVES:
            return "spot"
        if self.instrument_type == "FUT":
            return "future"
        return "option" if self.strike > 0 else "spot"


# --- pricing -------------------------------------------------------------------------------


def to_tick(value: Decimal, tick: Decimal, rounding: str = ROUND_HALF_EVEN) -> Decimal:
    """``value`` on a multiple of ``tick``."""
    return (value / tick).to_integral_value(rounding) * tick


def expiry_timestamp(expiry: date) -> float:
    """The epoch second a contract expiring on ``expiry`` stops trading (15:30 IST)."""
    return datetime.combine(expiry, EXPIRY_TIME, tzinfo=IST).timestamp()


def _normal_cdf(x: float) -> float:
    return 0.5 * math.erfc(-x / math.sqrt(2.0))


def black_scholes(
    *, spot: float, strike: float, years: float, rate: float, volatility: float, call: bool
) -> float:
    """The Black-Scholes value of a European option (no dividends)."""
    if years <= 0 or volatility <= 0 or spot <= 0 or strike <= 0:
        return max(0.0, spot - strike) if call else max(0.0, strike - spot)
    deviation = volatility * math.sqrt(years)
    d1 = (math.log(spot / strike) + (rate + volatility * volatility / 2) * years) / deviation
    d2 = d1 - deviation
    discounted = strike * math.exp(-rate * years)
    if call:
        return spot * _normal_cdf(d1) - discounted * _normal_cdf(d2)
    return discounted * _normal_cdf(-d2) - spot * _normal_cdf(-d1)


def option_price(*, spot: Decimal, strike: Decimal, seconds: int, call: bool, tick: Decimal, volatility: float,
                 rate: Decimal = RATE) -> Decimal:  # fmt: skip
    """An option's price on its tick: Black-Scholes, never below its European lower bound
    (``spot - discounted strike`` for a call, the reverse for a put) and never below one
    tick, the least an exchange quotes."""
    seconds = max(0, seconds)
    years = Decimal(seconds) / YEAR_SECONDS
    value = black_scholes(spot=float(spot), strike=float(strike), years=float(years), rate=float(rate),
                          volatility=volatility, call=call)  # fmt: skip
    price = to_tick(Decimal(value), tick)
    discounted = strike * (-rate * years).exp()
    bound = spot - discounted if call else discounted - spot
    if bound > 0:
        price = max(price, to_tick(bound, tick, ROUND_CEILING))
    return max(price, tick)


def future_price(*, spot: Decimal, seconds: int, tick: Decimal, rate: Decimal = RATE) -> Decimal:
    """A future's price on its tick: the spot carried at ``rate`` to expiry."""
    carry = (rate * Decimal(max(0, seconds)) / YEAR_SECONDS).exp()
    return max(to_tick(spot * carry, tick), tick)


# --- the market ----------------------------------------------------------------------------


def _units(price: Decimal, places: int, step: int) -> int:
    """``price`` as protocol units on the ``step`` grid, at least one step and at most what
    the protocol's int32 can carry."""
    units = int(price.scaleb(places).to_integral_value(ROUND_HALF_EVEN))
    return min(I32_MAX // step * step, max(step, (units + step // 2) // step * step))


def _step(tick: Decimal, places: int) -> int:
    return max(1, int(tick.scaleb(places).to_integral_value(ROUND_CEILING)))


class Walk:
    """A random walk of one spot price, in protocol units on its tick grid."""

    __slots__ = ("ceiling", "places", "slot", "step", "units")

    def __init__(self, *, price: Decimal, places: int, tick: Decimal, slot: int) -> None:
        self.places = places
        self.step = _step(tick, places)
        self.ceiling = I32_MAX // self.step * self.step
        self.units = _units(price, places, self.step)
        self.slot = slot

    def move(self, rng: random.Random) -> None:
        reach = max(1, self.units // (self.step * MOVE_BASIS))
        self.units = min(self.ceiling, max(self.step, self.units + self.step * rng.randint(-reach, reach)))

    @property
    def price(self) -> Decimal:
        return Decimal(self.units).scaleb(-self.places)


class Quote:
    """One instrument's simulated session: last price, OHLC, volume, OI (protocol units)."""

    __slots__ = ("average", "call", "close", "expires_at", "high", "kind", "last", "last_quantity", "lot",
                 "low", "oi", "oi_high", "oi_low", "open", "places", "slot", "step", "strike", "tick",
                 "turnover", "volatility", "volume", "walk")  # fmt: skip

    def __init__(
        self, *, token: int, seed: Seed, walk: Walk, slot: int, now: float, rng: random.Random
    ) -> None:
        self.places = places_of(token)
        self.tick = seed.tick_size if seed.tick_size > 0 else default_tick(token)
        self.step = _step(self.tick, self.places)
        self.tick = Decimal(self.step).scaleb(-self.places)  # what the step really is in rupees
        self.lot = max(1, seed.lot_size)
        self.kind = seed.kind
        self.walk, self.slot = walk, slot
        self.strike = seed.strike
        self.call = seed.instrument_type == "CE"
        self.expires_at = expiry_timestamp(seed.expiry) if seed.expiry else 0.0
        key = seed.underlying.key if seed.underlying else token
        self.volatility = volatility_for(token, key)
        self.last = self.price(now)
        self.open = self.high = self.low = self.close = self.average = self.last
        self.volume = self.turnover = self.last_quantity = 0
        self.oi = rng.randint(1000, 100_000) * self.lot if self.kind != "spot" else 0
        self.oi_high = self.oi_low = self.oi

    def price(self, now: float) -> int:
        """The price now, in protocol units: the walk's, or derived from it."""
        walk = self.walk
        if self.kind == "spot":
            if walk.places == self.places and walk.step == self.step:
                return walk.units
            return _units(walk.price, self.places, self.step)
        seconds = int(self.expires_at - now)
        if self.kind == "future":
            price = future_price(spot=walk.price, seconds=seconds, tick=self.tick)
        else:
            price = option_price(spot=walk.price, strike=self.strike, seconds=seconds, call=self.call,
                                 tick=self.tick, volatility=self.volatility)  # fmt: skip
        return _units(price, self.places, self.step)

    def update(self, now: float, rng: random.Random) -> None:
        last = self.last = self.price(now)
        if last > self.high:
            self.high = last
        elif last < self.low:
            self.low = last
        quantity = rng.randint(1, 20) * self.lot
        if self.volume + quantity <= U32_MAX:
            self.volume += quantity
            self.turnover += quantity * last
            self.last_quantity = quantity
            self.average = (self.turnover // self.volume + self.step // 2) // self.step * self.step
        if self.kind != "spot":
            self.oi = min(U32_MAX, max(0, self.oi + rng.randint(-10, 10) * self.lot))
            self.oi_high, self.oi_low = max(self.oi_high, self.oi), min(self.oi_low, self.oi)

    def roll(self) -> None:
        """A new trading day: today's close is tomorrow's previous close and open."""
        self.close = self.open = self.high = self.low = self.average = self.last
        self.volume = self.turnover = self.last_quantity = 0
        self.oi_high = self.oi_low = self.oi


class SimulatedMarket:
    """Every walk and quote of one simulator. ``advance(slot, now)`` moves the walks and
    re-prices the quotes of one of ``slices`` slots (the simulator spreads an interval
    over them)."""

    def __init__(self, *, rng: random.Random, slices: int) -> None:
        self.rng = rng
        self.slices = slices
        self.walks: dict[int | str, Walk] = {}
        self.quotes: dict[int, Quote] = {}
        self._walks_by_slot: list[list[Walk]] = [[] for _ in range(slices)]
        self._quotes_by_slot: list[list[Quote]] = [[] for _ in range(slices)]
        self._day: int | None = None

    def add(self, token: int, seed: Seed | Decimal | None, *, now: float) -> Quote:
        """The quote of ``token`` (made once, from ``seed``: a ``Seed``, a bare last price, or None)."""
        if token in self.quotes:
            return self.quotes[token]
        if not isinstance(seed, Seed):
            seed = Seed(price=seed if seed is not None and seed > 0 else None)
        if seed.kind == "spot":
            walk = self._walk(token, price=seed.price or default_price(token), places=places_of(token),
                              tick=seed.tick_size if seed.tick_size > 0 else default_tick(token))  # fmt: skip
        else:
            assert seed.underlying is not None  # kind says so
            key = seed.underlying.key
            token_of_key = key if isinstance(key, int) else token
            fallback = seed.strike if seed.kind == "option" else seed.price or default_price(token_of_key)
            tick = seed.underlying.tick_size if seed.underlying.tick_size > 0 else default_tick(token_of_key)
            walk = self._walk(key, price=seed.underlying.price or fallback, places=places_of(token_of_key),
                              tick=tick)  # fmt: skip
        slot = len(self.quotes) % self.slices
        quote = self.quotes[token] = Quote(
            token=token, seed=seed, walk=walk, slot=slot, now=now, rng=self.rng
        )
        self._quotes_by_slot[slot].append(quote)
        return quote

    def _walk(self, key: int | str, *, price: Decimal, places: int, tick: Decimal) -> Walk:
        walk = self.walks.get(key)
        if walk is None:
            slot = len(self.walks) % self.slices
            walk = self.walks[key] = Walk(price=price, places=places, tick=tick, slot=slot)
            self._walks_by_slot[slot].append(walk)
        return walk

    def advance(self, slot: int, now: float) -> None:
        day = int(now + IST_OFFSET_SECONDS) // 86400
        if day != self._day:
            if self._day is not None:
                for quote in self.quotes.values():
                    quote.roll()
            self._day = day
        rng = self.rng
        for walk in self._walks_by_slot[slot]:
            walk.move(rng)
        for quote in self._quotes_by_slot[slot]:
            quote.update(now, rng)
