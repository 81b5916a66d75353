"""Upstox's instrument master: JSON (an array of objects, usually gzipped) or its CSV flavour.

Prices are parsed as ``Decimal`` straight from the JSON text, never through ``float``.
Expiries come as epoch milliseconds (the contract's date is the IST calendar date) and
``tick_size`` in paise.
"""

from __future__ import annotations

import codecs
import functools
import io
import json
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import IO, Any

from instruments.sync.errors import BadInput
from instruments.sync.parsing.fields import (
    MAX_INT32,
    PRICE,
    TICK,
    Rejects,
    Row,
    RowError,
    epoch_ms_to_date,
    parse_date,
    parse_decimal,
    parse_int,
    parse_text,
)
from instruments.sync.parsing.streams import cell, csv_records, header_index, text_stream

# Upstox segment -> (Kite exchange, Kite segment; a trailing "-" takes FUT/OPT).
UPSTOX_SEGMENTS = {
    "NSE_EQ": ("NSE", "NSE"),
    "BSE_EQ": ("BSE", "BSE"),
    "NSE_INDEX": ("NSE", "INDICES"),
    "BSE_INDEX": ("BSE", "INDICES"),
    "MCX_INDEX": ("MCX", "INDICES"),
    "GLOBAL_INDEX": ("GLOBAL", "INDICES"),
    "GLOBAL_INDICATOR": ("GLOBAL", "INDICES"),
    "NSE_FO": ("NFO", "NFO-"),
    "BSE_FO": ("BFO", "BFO-"),
    "NCD_FO": ("CDS", "CDS-"),
    "BCD_FO": ("BCD", "BCD-"),
    "MCX_FO": ("MCX", "MCX-"),
    "NSE_COM": ("NCO", "NCO-"),
}
FUTURE_TYPES = {"FUT", "FUTIDX", "FUTSTK", "FUTCUR", "FUTCOM", "FUTIRC", "FUTIRT", "FUTENR", "FUTBLN"}
OPTION_TYPES = {"OPTIDX", "OPTSTK", "OPTCUR", "OPTFUT", "OPTCOM", "OPTIRC", "OPTBLN", "OPTENR"}


def _upstox_kind(segment: str, raw_type: str, option_type: str, symbol: str) -> str:
    """Kite's instrument type (EQ, FUT, CE, PE) for an Upstox row."""
    if segment.endswith(("_EQ", "_INDEX", "_INDICATOR")):
        return "EQ"  # equities (series/group codes EQ, BE, A, X...) and indices, as Kite has them
    if raw_type in ("CE", "PE", "FUT"):
        return raw_type
    if raw_type in FUTURE_TYPES:
        return "FUT"
    if raw_type in OPTION_TYPES:
        if option_type in ("CE", "PE"):
            return option_type
        if symbol.endswith(("CE", "PE")):
            return symbol[-2:]
        raise RowError(f"option {raw_type} without option_type CE/PE")
    if not raw_type:
        raise RowError("missing instrument_type")
    return raw_type


def _upstox_row(line: int, get: Callable[[str], Any], *, tick_in_paise: bool) -> Row:
    key = parse_text(get("instrument_key"), "instrument_key", required=True)
    upstox_segment = parse_text(
        get("segment") or get("exchange") or key.split("|", 1)[0], "segment", upper=True
    )
    symbol = parse_text(get("trading_symbol") or get("tradingsymbol"), "tradingsymbol", required=True)
    kind = _upstox_kind(
        upstox_segment,
        parse_text(get("instrument_type"), "instrument_type", upper=True),
        parse_text(get("option_type"), "instrument_type", upper=True),
        symbol,
    )
    exchange, segment = UPSTOX_SEGMENTS.get(upstox_segment, (upstox_segment.split("_", 1)[0], upstox_segment))
    if segment.endswith("-"):
        segment += "OPT" if kind in ("CE", "PE") else "FUT"
    expiry_value = get("expiry")
    if isinstance(expiry_value, int | Decimal) or (
        isinstance(expiry_value, str) and expiry_value.strip().isdigit()
    ):
        expiry = epoch_ms_to_date(expiry_value)
    else:
        expiry = parse_date(expiry_value)
    strike = get("strike_price")
    return (
        line,
        None,
        parse_int(get("exchange_token"), "exchange_token", required=False),
        key,
        symbol,
        parse_text(get("name"), "name"),
        parse_decimal(get("last_price"), "last_price", PRICE),
        expiry,
        parse_decimal(strike if strike not in (None, "") else get("strike"), "strike", PRICE),
        parse_decimal(get("tick_size"), "tick_size", TICK, scale=2 if tick_in_paise else 0),
        parse_int(get("lot_size") or 0, "lot_size", maximum=MAX_INT32),
        kind,
        segment,
        exchange,
    )


_MAX_RECORD = 1 << 20


def _json_records(text: io.TextIOWrapper) -> Iterator[Any]:
    """Objects of a top-level JSON array (or one per line), decoded one at a time.

    Numbers with a fraction or exponent become ``Decimal`` (a float would turn
    ``12345678901234.5678`` into ``12345678901234.568``); integers stay ``int``.
    """
    decoder = json.JSONDecoder(parse_float=Decimal)
    buffer = ""
    position = 0
    eof = False
    started = False
    array = False

    def fill() -> bool:
        nonlocal buffer, position, eof
        try:
            chunk = text.read(1 << 16)
        except UnicodeDecodeError as exc:
            raise BadInput(f"the input is not UTF-8 text: {exc.reason}") from exc
        if not chunk:
            eof = True
            return False
        buffer = buffer[position:] + chunk
        position = 0
        return True

    while True:
        while position < len(buffer) and buffer[position] in " \t\r\n,":
            position += 1
        if position >= len(buffer):
            if eof or not fill():
                break
            continue
        if not started:
            started = True
            if buffer[position] == "[":
                array = True
                position += 1
                continue
            if buffer[position] != "{":
                raise BadInput("not an Upstox JSON dump: expected a JSON array of instruments")
        if array and buffer[position] == "]":
            return
        try:
            value, end = decoder.raw_decode(buffer, position)
        except json.JSONDecodeError:
            # Usually the record continues in the next chunk; a record that stays
            # undecodable for a whole extra megabyte is malformed, not incomplete.
            if not eof and len(buffer) - position < _MAX_RECORD and fill():
                continue
            raise BadInput("the JSON is truncated or malformed (the download may be incomplete)") from None
        position = end
        yield value
    if array:
        raise BadInput("the JSON array is not closed: the dump is truncated")


UPSTOX_CSV_ALIASES: dict[str, tuple[str, ...]] = {
    "instrument_key": ("instrument_key",),
    "exchange_token": ("exchange_token",),
    "tradingsymbol": ("tradingsymbol", "trading_symbol"),
    "name": ("name",),
    "last_price": ("last_price",),
    "expiry": ("expiry",),
    "strike": ("strike", "strike_price"),
    "tick_size": ("tick_size",),
    "lot_size": ("lot_size",),
    "instrument_type": ("instrument_type",),
    "option_type": ("option_type",),
    "exchange": ("exchange",),
    "segment": ("segment",),
}


def parse_upstox(stream: IO[bytes], rejects: Rejects) -> Iterator[Row]:
    """Rows of Upstox's instrument master: JSON (array of objects) or CSV."""
    text = text_stream(stream)
    first = text.buffer.peek(64).lstrip(codecs.BOM_UTF8 + b" \t\r\n")[:1]  # type: ignore[attr-defined]
    seen: dict[str, int] = {}
    if first in (b"[", b"{"):
        records: Iterator[tuple[int, Callable[[str], Any]]] = (
            (number, (record.get if isinstance(record, dict) else None))  # type: ignore[misc]
            for number, record in enumerate(_json_records(text), start=1)
        )
        tick_in_paise = True
    else:
        rows = csv_records(text)
        try:
            _, header = next(rows)
        except StopIteration:
            raise BadInput("the input is empty: no header, no rows") from None
        index = header_index(header, ("instrument_key", "tradingsymbol", "instrument_type"), UPSTOX_CSV_ALIASES,
                              "Upstox instrument dump")  # fmt: skip
        width = len(header)

        def csv_getters() -> Iterator[tuple[int, Callable[[str], Any] | None]]:
            for line, record in rows:
                if not record or (len(record) == 1 and not record[0].strip()):
                    continue
                if len(record) != width:
                    rejects.add(line, f"expected {width} fields, got {len(record)}")
                    continue
                yield line, functools.partial(cell, record, index)

        records = csv_getters()  # type: ignore[assignment]
        tick_in_paise = False
    for line, get in records:
        if get is None:
            rejects.add(line, "not a JSON object")
            continue
        try:
            row = _upstox_row(line, get, tick_in_paise=tick_in_paise)
        except RowError as exc:
            rejects.add(line, str(exc))
            continue
        key = row[3]
        if key in seen:
            rejects.add(line, f"duplicate instrument_key {key} (first at {seen[key]})")
            continue
        seen[key] = line
        yield row
