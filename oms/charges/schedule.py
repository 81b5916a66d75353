"""The charge table: Zerodha's published schedule, a desk's overrides, and their validation.

``schedule_load`` reads the overrides (a JSON file, then JSON text) over ``DEFAULT_SCHEDULE``
and refuses a bad table with the input, the key and the reason (a ``ScheduleError``, which is
Django's ``ImproperlyConfigured``: settings load it, so a bad table stops start-up).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from django.core.exceptions import ImproperlyConfigured

ZERO = Decimal(0)
HUNDRED = Decimal(100)
CRORE = Decimal(10_000_000)
QUANTA = {"rupee": Decimal(1), "paisa": Decimal("0.01")}
PAISA = QUANTA["paisa"]
BUY, SELL = "BUY", "SELL"

# Charge classes: the columns of Zerodha's charges page.
STATUTORY_CLASSES = (
    "equity_delivery", "equity_intraday", "equity_futures", "equity_options",
    "currency_futures", "currency_options", "commodity_futures", "commodity_options",
)  # fmt: skip
# MTF orders pay their own brokerage; their statutory charges are those of delivery.
BROKERAGE_CLASSES = (*STATUTORY_CLASSES, "equity_mtf")
EQUITY_PRODUCTS = {"CNC": "equity_delivery", "MIS": "equity_intraday", "MTF": "equity_mtf"}
DERIVATIVE_EXCHANGES = {"NFO": "equity", "BFO": "equity", "CDS": "currency", "BCD": "currency",
                        "MCX": "commodity", "NCO": "commodity"}  # fmt: skip
CASH_EXCHANGES = ("NSE", "BSE")
CLASS_EXCHANGES = {
    "equity_delivery": CASH_EXCHANGES, "equity_intraday": CASH_EXCHANGES,
    "equity_futures": ("NFO", "BFO"), "equity_options": ("NFO", "BFO"),
    "currency_futures": ("CDS", "BCD"), "currency_options": ("CDS", "BCD"),
    "commodity_futures": ("MCX", "NCO"), "commodity_options": ("MCX", "NCO"),
}  # fmt: skip
COMPONENTS = ("brokerage", "stt", "exchange", "sebi", "stamp", "gst")

# Zerodha's published charges, percentages as strings (exact), from sources up to Oct 2026:
# - zerodha.com/charges (Equity, Currency, Commodity tabs): brokerage, STT/CTT, transaction
#   charges, GST "18% on (brokerage + SEBI charges + transaction charges)", SEBI Rs 10/crore.
# - STT on F&O from 1 April 2026 (Finance Act 2026): futures 0.05% (was 0.02%), options 0.15%
#   of the premium sold (was 0.1%).
# - NSE circular FA73061 (27 Feb 2026, from 1 Mar 2026): cash market Rs 307/crore each side,
#   exchange and IPFT together, the 0.00307% Zerodha shows; F&O 0.00183% and 0.03553% are the
#   earlier 0.00173% and 0.03503% plus NSE's IPFT (support.zerodha.com "What are IPFT charges?":
#   "included under exchange transaction charges in the contract note").
# - Stamp duty (uniform from 1 July 2020, zerodha.com/z-connect/general/uniform-stamp-duty):
#   delivery 0.015%, intraday 0.003%, futures 0.002%, options 0.003%, currency 0.0001%.
# - MTF brokerage 0.3% or Rs 20 (zerodha.com/calculators/mtf-calculator).
# - MCX 0.0021% (futures), 0.0418% (options premium): zerodha.com/charges of June 2026 as quoted
#   by a third party (HDFC Sky publishes the same MCX rates).
# - Currency NSE 0.00035% / 0.0311%, BSE 0.00045% / 0.001%: Zerodha's page as last seen
#   (2024-25); not re-checked for 2026. NCO (NSE commodity) has no published rate here: a
#   desk trading it adds ``exchange.commodity_*.NCO``.
# - Rounding: STT to the rupee, half up (support.zerodha.com "How is the Securities
#   Transaction Tax (STT) calculated?"); stamp duty to the rupee as Zerodha's brokerage
#   calculator does; the rest to the paisa.
DEFAULT_SCHEDULE: dict[str, Any] = {
    "brokerage": {
        "equity_delivery": {"percent": None, "max": "0"},
        "equity_intraday": {"percent": "0.03", "max": "20"},
        "equity_mtf": {"percent": "0.3", "max": "20"},
        "equity_futures": {"percent": "0.03", "max": "20"},
        "equity_options": {"percent": None, "max": "20"},
        "currency_futures": {"percent": "0.03", "max": "20"},
        "currency_options": {"percent": None, "max": "20"},
        "commodity_futures": {"percent": "0.03", "max": "20"},
        "commodity_options": {"percent": None, "max": "20"},
    },
    "stt": {
        "equity_delivery": {"buy": "0.1", "sell": "0.1"},
        "equity_intraday": {"buy": "0", "sell": "0.025"},
        "equity_futures": {"buy": "0", "sell": "0.05"},
        "equity_options": {"buy": "0", "sell": "0.15"},
        "currency_futures": {"buy": "0", "sell": "0"},
        "currency_options": {"buy": "0", "sell": "0"},
        "commodity_futures": {"buy": "0", "sell": "0.01"},  # non-agricultural commodities
        "commodity_options": {"buy": "0", "sell": "0.05"},
    },
    "exchange": {
        "equity_delivery": {"NSE": "0.00307", "BSE": "0.00375"},
        "equity_intraday": {"NSE": "0.00307", "BSE": "0.00375"},
        "equity_futures": {"NFO": "0.00183", "BFO": "0"},
        "equity_options": {"NFO": "0.03553", "BFO": "0.0325"},
        "currency_futures": {"CDS": "0.00035", "BCD": "0.00045"},
        "currency_options": {"CDS": "0.0311", "BCD": "0.001"},
        "commodity_futures": {"MCX": "0.0021"},
        "commodity_options": {"MCX": "0.0418"},
    },
    "stamp": {
        "equity_delivery": "0.015",
        "equity_intraday": "0.003",
        "equity_futures": "0.002",
        "equity_options": "0.003",
        "currency_futures": "0.0001",
        "currency_options": "0.0001",
        "commodity_futures": "0.002",
        "commodity_options": "0.003",
    },
    "sebi_per_crore": "10",
    "gst_percent": "18",
    "rounding": {
        "brokerage": "paisa",
        "stt": "rupee",
        "exchange": "paisa",
        "sebi": "paisa",
        "stamp": "rupee",
        "gst": "paisa",
    },  # fmt: skip
}


class ScheduleError(ImproperlyConfigured):
    """A charge table that cannot be used; the message names the input, the key and why."""


@dataclass(frozen=True)
class Brokerage:
    percent: Decimal | None
    max: Decimal

    def on(self, value: Decimal) -> Decimal:
        if self.percent is None:
            return self.max
        return min(value * self.percent / HUNDRED, self.max)


@dataclass(frozen=True)
class Schedule:
    """A validated charge table (percentages as Decimals, as written)."""

    brokerage: Mapping[str, Brokerage]
    stt: Mapping[str, Mapping[str, Decimal]]  # class -> BUY/SELL -> percent
    exchange: Mapping[str, Mapping[str, Decimal]]  # class -> exchange -> percent
    stamp: Mapping[str, Decimal]  # class -> percent of the buy value
    sebi_per_crore: Decimal
    gst_percent: Decimal
    rounding: Mapping[str, Decimal]  # component -> quantum
    source: str = "default"

    def round(self, component: str, value: Decimal) -> Decimal:
        return value.quantize(self.rounding[component], rounding=ROUND_HALF_UP).quantize(PAISA)


def _object(raw: Any, where: str, keys: Iterable[str]) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise ScheduleError(f"{where}: expected an object, not {raw!r}")
    allowed = list(keys)
    unknown = sorted(set(raw) - set(allowed))
    if unknown:
        raise ScheduleError(f"{where}: unknown key {unknown[0]!r} (known: {', '.join(allowed)})")
    missing = [key for key in allowed if key not in raw]
    if missing:
        raise ScheduleError(f"{where}: {missing[0]!r} is missing")
    return raw


def _number(raw: Any, where: str, *, percent: bool = True) -> Decimal:
    # Floats are refused: a rate is money arithmetic, written exactly ("0.03" or 0.03 in JSON).
    if isinstance(raw, bool) or not isinstance(raw, str | int | Decimal):
        raise ScheduleError(f'{where}: {raw!r} is not a number; write it like "0.03"')
    try:
        value = Decimal(raw.strip() if isinstance(raw, str) else raw)
    except InvalidOperation:
        raise ScheduleError(f'{where}: {raw!r} is not a number; write it like "0.03"') from None
    if not value.is_finite() or value < 0:
        raise ScheduleError(f"{where}: {raw!r} must be a finite number, 0 or more")
    if percent and value > HUNDRED:
        raise ScheduleError(f"{where}: {raw!r} is a percentage above 100")
    return value


def schedule_parse(raw: Any, *, source: str = "default") -> Schedule:
    """Validate a whole table (every class, every key) into a ``Schedule``."""
    where = source
    top = _object(raw, where, DEFAULT_SCHEDULE)
    brokerage: dict[str, Brokerage] = {}
    for klass, row in _object(top["brokerage"], f"{where}: brokerage", BROKERAGE_CLASSES).items():
        row = _object(row, f"{where}: brokerage.{klass}", ("percent", "max"))
        rate = row["percent"]
        brokerage[klass] = Brokerage(
            percent=None if rate is None else _number(rate, f"{where}: brokerage.{klass}.percent"),
            max=_number(row["max"], f"{where}: brokerage.{klass}.max", percent=False),
        )
    stt = {
        klass: {side.upper(): _number(value, f"{where}: stt.{klass}.{side}") for side, value in
                _object(row, f"{where}: stt.{klass}", ("buy", "sell")).items()}
        for klass, row in _object(top["stt"], f"{where}: stt", STATUTORY_CLASSES).items()
    }  # fmt: skip
    exchange: dict[str, dict[str, Decimal]] = {}
    for klass, row in _object(top["exchange"], f"{where}: exchange", STATUTORY_CLASSES).items():
        if not isinstance(row, dict):
            raise ScheduleError(f"{where}: exchange.{klass}: expected an object, not {row!r}")
        for code in row:
            if code not in CLASS_EXCHANGES[klass]:
                raise ScheduleError(f"{where}: exchange.{klass}: {code!r} is not an exchange of {klass} "
                                    f"(Kite's codes: {', '.join(CLASS_EXCHANGES[klass])})")  # fmt: skip
        exchange[klass] = {
            code: _number(value, f"{where}: exchange.{klass}.{code}") for code, value in row.items()
        }
    stamp = {
        klass: _number(value, f"{where}: stamp.{klass}")
        for klass, value in _object(top["stamp"], f"{where}: stamp", STATUTORY_CLASSES).items()
    }
    rounding: dict[str, Decimal] = {}
    for component, name in _object(top["rounding"], f"{where}: rounding", COMPONENTS).items():
        if name not in QUANTA:
            raise ScheduleError(f'{where}: rounding.{component}: {name!r}; use "rupee" or "paisa"')
        rounding[component] = QUANTA[name]
    return Schedule(
        brokerage=brokerage, stt=stt, exchange=exchange, stamp=stamp,
        sebi_per_crore=_number(top["sebi_per_crore"], f"{where}: sebi_per_crore", percent=False),
        gst_percent=_number(top["gst_percent"], f"{where}: gst_percent"),
        rounding=rounding, source=source,
    )  # fmt: skip


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number")


def _json(text: str, where: str) -> dict[str, Any]:
    try:
        raw = json.loads(text, parse_float=Decimal, parse_int=Decimal, parse_constant=_refuse_constant)
    except ValueError as exc:  # json.JSONDecodeError is a ValueError
        raise ScheduleError(f"{where}: not valid JSON ({exc})") from None
    if not isinstance(raw, dict):
        raise ScheduleError(f"{where}: expected a JSON object of overrides, not {type(raw).__name__}")
    return raw


def _merge(base: dict[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def schedule_load(*, file: str = "", text: str = "") -> Schedule:
    """Zerodha's table with a desk's overrides: a JSON file (``CHARGES_SCHEDULE_FILE``), then
    JSON text (``CHARGES_SCHEDULE``), each merged key by key over what came before (a desk
    writes only what changed, e.g. ``{"stt": {"equity_options": {"sell": "0.1"}}}``)."""
    raw = copy.deepcopy(DEFAULT_SCHEDULE)
    schedule = schedule_parse(raw)
    layers = []
    if file:
        where = f"CHARGES_SCHEDULE_FILE={file}"
        try:
            content = Path(file).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ScheduleError(f"{where}: cannot be read ({exc.__class__.__name__}: {exc})") from None
        layers.append((where, content))
    if text.strip():
        layers.append(("CHARGES_SCHEDULE", text))
    for where, content in layers:
        raw = _merge(raw, _json(content, where))
        schedule = schedule_parse(raw, source=where)  # a bad value is blamed on the layer that set it
    if layers:
        schedule = replace(schedule, source="default + " + " + ".join(where for where, _ in layers))
    return schedule
