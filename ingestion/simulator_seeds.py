"""Where the built-in simulator starts each instrument: read from the database.

``simulator_seeds(tokens)`` is the simulator's ``price_lookup`` (wrapped with
``sync_to_async`` by its callers: ``run_ingestion --simulate``, the in-process feed and
``run_simulator``). A spot instrument (an index, an equity) starts from the last known
real price, in this order:

1. the latest-tick store (``ingestion.latest``: what the feed last received);
2. the dump's ``last_price`` when it has one (Upstox dumps do; Kite's carry 0);
3. for an underlying with listed options, the median strike of its nearest expiry
   (strikes are listed around the money, so this is close to the spot);
4. otherwise a default per kind (the simulator's: 10000 for an index, 100 for the rest).

Futures and options are priced off their underlying, found from the derivative's
``name``: ``INDEX_UNDERLYINGS`` for index derivatives, else the NSE equity of that
symbol. A derivative whose underlying has no row (commodities, currencies) is priced off
a spot of its own, shared by every derivative of that name and seeded the same way.
"""

from __future__ import annotations

import logging
import statistics
from collections import defaultdict
from collections.abc import Iterable
from decimal import Decimal, InvalidOperation
from typing import Any

from django.db.models import Q
from django.utils import timezone

from ingestion.feed.simulated_market import DERIVATIVES, Seed, Underlying

logger = logging.getLogger(__name__)

# Derivative name -> (exchange, tradingsymbol) of the index it is written on.
INDEX_UNDERLYINGS = {
    "NIFTY": ("NSE", "NIFTY 50"),
    "BANKNIFTY": ("NSE", "NIFTY BANK"),
    "FINNIFTY": ("NSE", "NIFTY FIN SERVICE"),
    "MIDCPNIFTY": ("NSE", "NIFTY MID SELECT"),
    "SENSEX": ("BSE", "SENSEX"),
}
_NAME_OF_INDEX = {symbol: name for name, (_, symbol) in INDEX_UNDERLYINGS.items()}
_FIELDS = ("instrument_token", "tradingsymbol", "name", "exchange", "segment", "instrument_type", "strike",
           "expiry", "tick_size", "lot_size", "last_price")  # fmt: skip


def simulator_seeds(tokens: list[int]) -> dict[int, Seed]:
    """A ``Seed`` for each listed Kite instrument among ``tokens``; others are left out."""
    from instruments.models import Instrument

    listed = Instrument.objects.filter(source="kite", is_listed=True)
    rows = list(listed.filter(instrument_token__in=tokens).values(*_FIELDS))
    derivatives = [row for row in rows if _is_derivative(row)]
    underlyings = _underlying_rows(listed, {row["name"] for row in derivatives})
    spots = [row for row in rows if not _is_derivative(row)] + list(underlyings.values())
    prices = _known_prices(rows + list(underlyings.values()))
    prices.update(_strike_medians(listed, spots, prices))

    wanted = set(tokens)
    seeds: dict[int, Seed] = {}
    for row in spots:
        if row["instrument_token"] in wanted:
            seeds[row["instrument_token"]] = _seed(row, prices.get(row["instrument_token"]))
    virtual = _virtual_underlyings(
        listed, [row for row in derivatives if row["name"] not in underlyings], prices
    )
    for row in derivatives:
        spot = underlyings.get(row["name"])
        if spot is not None:
            underlying = Underlying(key=spot["instrument_token"], price=prices.get(spot["instrument_token"]),
                                    tick_size=spot["tick_size"])  # fmt: skip
        else:
            underlying = virtual[_virtual_key(row)]
        seeds[row["instrument_token"]] = _seed(row, prices.get(row["instrument_token"]), underlying)
    return seeds


def _is_derivative(row: dict[str, Any]) -> bool:
    return row["instrument_type"] in DERIVATIVES and bool(row["name"]) and row["expiry"] is not None


def _seed(row: dict[str, Any], price: Decimal | None, underlying: Underlying | None = None) -> Seed:
    return Seed(price=price, tick_size=row["tick_size"], lot_size=row["lot_size"] or 1,
                instrument_type=row["instrument_type"], strike=row["strike"], expiry=row["expiry"],
                underlying=underlying)  # fmt: skip


def _underlying_rows(listed: Any, names: set[str]) -> dict[str, dict[str, Any]]:
    """Derivative name -> the row of its spot (an index or an NSE equity), where one exists."""
    if not names:
        return {}
    condition = Q(
        exchange="NSE", segment="NSE", instrument_type="EQ", tradingsymbol__in=names - set(INDEX_UNDERLYINGS)
    )
    for name in names & set(INDEX_UNDERLYINGS):
        exchange, symbol = INDEX_UNDERLYINGS[name]
        condition |= Q(exchange=exchange, segment="INDICES", tradingsymbol=symbol)
    found: dict[str, dict[str, Any]] = {}
    for row in listed.filter(condition).values(*_FIELDS):
        name = _option_name(row)
        if name in names:
            found[name] = row
    return found


def _price(value: Any) -> Decimal | None:
    try:
        price = Decimal(str(value))
    except (InvalidOperation, TypeError, ValueError):
        return None
    return price if price.is_finite() and price > 0 else None


def _known_prices(rows: Iterable[dict[str, Any]]) -> dict[int, Decimal]:
    """Token -> the latest tick's price, else the dump's ``last_price``, where either is known."""
    from ingestion.latest import latest_ticks

    rows = list(rows)
    tokens = [row["instrument_token"] for row in rows]
    try:
        latest = latest_ticks(tokens)
    except Exception:  # noqa: BLE001 - the dump's prices and the defaults still serve
        logger.warning("simulator seeds: the latest-tick store is unreachable; using the dump's prices",
                       exc_info=True)  # fmt: skip
        latest = {}
    prices: dict[int, Decimal] = {}
    for row in rows:
        token = row["instrument_token"]
        price = _price(latest[token].get("last_price")) if token in latest else None
        price = price or _price(row["last_price"])
        if price is not None:
            prices[token] = price
    return prices


def _option_name(row: dict[str, Any]) -> str:
    """The ``name`` the options on this spot row carry."""
    if row["segment"] == "INDICES":
        return _NAME_OF_INDEX.get(row["tradingsymbol"], row["tradingsymbol"])
    return row["tradingsymbol"]


def _medians(listed: Any, names: set[str]) -> dict[str, Decimal]:
    """Option name -> the median strike of its nearest listed expiry."""
    if not names:
        return {}
    today = timezone.localdate()
    strikes: dict[str, dict[Any, list[Decimal]]] = defaultdict(lambda: defaultdict(list))
    options = listed.filter(instrument_type__in=("CE", "PE"), name__in=names, expiry__gte=today, strike__gt=0)
    for name, expiry, strike in options.values_list("name", "expiry", "strike").iterator(chunk_size=5000):
        strikes[name][expiry].append(strike)
    return {name: statistics.median_low(by_expiry[min(by_expiry)]) for name, by_expiry in strikes.items()}


def _strike_medians(
    listed: Any, spots: list[dict[str, Any]], known: dict[int, Decimal]
) -> dict[int, Decimal]:
    """A price for each spot without a known one that has listed options."""
    unknown = [row for row in spots if row["instrument_token"] not in known]
    medians = _medians(listed, {_option_name(row) for row in unknown})
    return {
        row["instrument_token"]: medians[_option_name(row)] for row in unknown if _option_name(row) in medians
    }


def _virtual_key(row: dict[str, Any]) -> str:
    return f"{row['exchange']}:{row['name']}"


def _virtual_underlyings(
    listed: Any, rows: list[dict[str, Any]], known: dict[int, Decimal]
) -> dict[str, Underlying]:
    """A spot of their own for derivatives whose underlying has no row: seeded at the median
    strike of the name's options, else the price of its nearest future that has one."""
    medians = _medians(listed, {row["name"] for row in rows})
    by_key: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        by_key[_virtual_key(row)].append(row)
    found: dict[str, Underlying] = {}
    for key, group in by_key.items():
        futures = sorted((r for r in group if r["instrument_type"] == "FUT"), key=lambda r: r["expiry"])
        price = medians.get(group[0]["name"]) or next(
            (known[r["instrument_token"]] for r in futures if r["instrument_token"] in known), None
        )
        found[key] = Underlying(key=key, price=price, tick_size=group[0]["tick_size"])
    return found
