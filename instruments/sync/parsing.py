"""Parsing broker dumps into rows for the staging table: plain functions over streams.

A row is a tuple in ``ROW_FIELDS`` order. A malformed row is rejected with its line
number and reason and parsing goes on; an input that is not a dump at all raises
``BadInput``. Nothing holds more than one row at a time.

Real dumps: Kite's CSV quotes names and leaves ``expiry``/``strike`` empty; files
re-saved by spreadsheets carry ``24350.0`` in integer columns, CRLF line endings and a
BOM. Upstox's JSON uses epoch milliseconds for ``expiry`` and paise for ``tick_size``.
"""

from __future__ import annotations

import codecs
import csv
import functools
import io
import json
import operator
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from typing import IO, Any
from zoneinfo import ZoneInfo

from instruments.sync.errors import BadInput

IST = ZoneInfo("Asia/Kolkata")

ROW_FIELDS = (
    "line", "instrument_token", "exchange_token", "instrument_key", "tradingsymbol", "name", "last_price",
    "expiry", "strike", "tick_size", "lot_size", "instrument_type", "segment", "exchange",
)  # fmt: skip
Row = tuple[Any, ...]

# (max_digits, decimal_places) of the model's columns, and string lengths.
PRICE = (18, 4)
TICK = (12, 6)
MAX_LEN = {
    "tradingsymbol": 64,
    "name": 128,
    "instrument_type": 16,
    "segment": 32,
    "exchange": 16,
    "instrument_key": 64,
}
MAX_INT32 = 2**31 - 1
MAX_INT64 = 2**63 - 1
KEEP_REJECTS = 50


class RowError(ValueError):
    """One field of one row is malformed; the message says which and why."""


@dataclass
class Rejects:
    """Rejected rows: the count, and the first ``KEEP_REJECTS`` with line and reason."""

    count: int = 0
    first: list[dict[str, Any]] = field(default_factory=list)

    def add(self, line: int, reason: str) -> None:
        self.count += 1
        if len(self.first) < KEEP_REJECTS:
            self.first.append({"line": line, "reason": reason})


# --- field parsers -------------------------------------------------------------------


def parse_int(
    text: str | int | float | None, name: str, *, required: bool = True, maximum: int = MAX_INT64
) -> int | None:
    if text is None or text == "":
        if required:
            raise RowError(f"missing {name}")
        return None
    if isinstance(text, bool):
        raise RowError(f"bad {name} {text!r}")
    if isinstance(text, int):
        value = text
    else:
        raw = str(text).strip()
        try:
            value = int(raw)
        except ValueError:
            # Spreadsheets re-save integer columns as "24350.0".
            try:
                number = Decimal(raw)
            except InvalidOperation:
                raise RowError(f"bad {name} {raw!r}: not a number") from None
            if not number.is_finite() or number != number.to_integral_value():
                raise RowError(f"bad {name} {raw!r}: not a whole number") from None
            value = int(number)
    if value < 0 or value > maximum:
        raise RowError(f"bad {name} {text!r}: out of range")
    return value


_PLAIN_DECIMAL = re.compile(r"-?(\d+)(?:\.(\d*))?")
_ZERO = Decimal(0)


def parse_decimal(
    text: str | int | float | None, name: str, limits: tuple[int, int], *, scale: int = 0
) -> Decimal:
    """A decimal within the column's digits; empty means 0. ``scale`` shifts the point left."""
    if text is None or text == "":
        return _ZERO
    if not scale and text.__class__ is str:
        # The common case, checked on the text: plain digits within the column's size.
        plain = _PLAIN_DECIMAL.fullmatch(text)  # type: ignore[arg-type]
        if plain:
            max_digits, places = limits
            fraction = (plain.group(2) or "").rstrip("0")
            if len(fraction) <= places and len(plain.group(1).lstrip("0")) <= max_digits - places:
                return Decimal(text)  # type: ignore[arg-type]
    if isinstance(text, bool):
        raise RowError(f"bad {name} {text!r}")
    raw = repr(text) if isinstance(text, float) else str(text).strip()
    try:
        value = Decimal(raw)
    except InvalidOperation:
        raise RowError(f"bad {name} {raw!r}: not a number") from None
    if not value.is_finite():
        raise RowError(f"bad {name} {raw!r}: not a finite number")
    if scale:
        value = value.scaleb(-scale)
    max_digits, places = limits
    value = value.normalize() if value else Decimal(0)
    exponent = value.as_tuple().exponent
    assert isinstance(exponent, int)
    if -exponent > places:
        raise RowError(f"bad {name} {raw!r}: more than {places} decimal places")
    if value.adjusted() >= max_digits - places:
        raise RowError(f"bad {name} {raw!r}: too large")
    return value


_DATE_FORMATS = ("%d-%m-%Y", "%d/%m/%Y", "%d-%b-%Y", "%d-%b-%y", "%d%b%Y", "%Y/%m/%d")


def parse_date(text: str | None, name: str = "expiry") -> date | None:
    if not text:
        return None
    raw = text.strip()
    if not raw:
        return None
    if len(raw) >= 10 and raw[4] == "-" and raw[7] == "-":
        try:
            return date(int(raw[0:4]), int(raw[5:7]), int(raw[8:10]))
        except ValueError:
            raise RowError(f"bad {name} {raw!r}: not a date") from None
    for fmt in _DATE_FORMATS:
        try:
            return datetime.strptime(raw, fmt).date()  # noqa: DTZ007 - a calendar date, no time
        except ValueError:
            continue
    raise RowError(f"bad {name} {raw!r}: not a date (expected YYYY-MM-DD)")


def parse_text(text: Any, name: str, *, required: bool = False, upper: bool = False) -> str:
    value = text.strip() if text.__class__ is str else ("" if text is None else str(text).strip())
    if upper:
        value = value.upper()
    if required and not value:
        raise RowError(f"missing {name}")
    limit = MAX_LEN.get(name)
    if limit and len(value) > limit:
        raise RowError(f"bad {name}: longer than {limit} characters")
    return value


def epoch_ms_to_date(value: Any) -> date | None:
    """Upstox expiries are epoch milliseconds; the contract's date is the IST calendar date."""
    if value is None or value == "":
        return None
    millis = parse_int(value, "expiry")
    assert millis is not None
    try:
        return datetime.fromtimestamp(millis / 1000, tz=UTC).astimezone(IST).date()
    except (OverflowError, OSError, ValueError):
        raise RowError(f"bad expiry {value!r}: not an epoch timestamp") from None


# --- text streams ------------------------------------------------------------------


def _text(stream: IO[bytes]) -> io.TextIOWrapper:
    """Decode UTF-8 (a BOM is dropped); refuse what is plainly not a dump."""
    head = stream.peek(512)[:512] if hasattr(stream, "peek") else b""
    if not head.strip(b" \t\r\n\xef\xbb\xbf"):
        raise BadInput("the input is empty: no header, no rows")
    lowered = head.lstrip(codecs.BOM_UTF8 + b" \t\r\n").lower()
    if lowered.startswith((b"<!doctype html", b"<html", b"<?xml", b"<head", b"<body")):
        raise BadInput(
            "the input is an HTML/XML page, not an instrument dump (check the URL and credentials)"
        )
    if b"\x00" in head:
        raise BadInput("the input is binary, not an instrument dump")
    return io.TextIOWrapper(stream, encoding="utf-8-sig", errors="strict", newline="")  # type: ignore[arg-type]


def _csv_rows(text: io.TextIOWrapper) -> Iterator[tuple[int, list[str]]]:
    reader = csv.reader(text)
    try:
        for record in reader:
            yield reader.line_num, record
    except UnicodeDecodeError as exc:
        raise BadInput(f"the input is not UTF-8 text near line {reader.line_num + 1}: {exc.reason}") from exc
    except csv.Error as exc:
        raise BadInput(f"the CSV is malformed near line {reader.line_num}: {exc}") from exc


def _header_index(
    header: list[str], required: tuple[str, ...], aliases: dict[str, tuple[str, ...]], what: str
) -> dict[str, int]:
    names = [h.strip().lower().lstrip("\ufeff") for h in header]
    index: dict[str, int] = {}
    for canonical, options in aliases.items():
        for option in options:
            if option in names:
                index[canonical] = names.index(option)
                break
    missing = [c for c in required if c not in index]
    if missing:
        shown = ",".join(header[:12])[:200]
        raise BadInput(f"not a {what}: the header lacks {', '.join(missing)} (got: {shown!r})")
    return index


# --- Kite ----------------------------------------------------------------------------

KITE_ALIASES: dict[str, tuple[str, ...]] = {
    name: (name,)
    for name in ("instrument_token", "exchange_token", "tradingsymbol", "name", "last_price", "expiry",
                 "strike", "tick_size", "lot_size", "instrument_type", "segment", "exchange")
}  # fmt: skip
KITE_REQUIRED = ("instrument_token", "tradingsymbol", "instrument_type", "segment", "exchange")


def _row_cell(record: list[str], index: dict[str, int], name: str) -> str:
    return _cell(record, index, name)


def _cell(record: list[str], index: dict[str, int], name: str) -> str:
    position = index.get(name)
    if position is None or position >= len(record):
        return ""
    return record[position]


def parse_kite_csv(stream: IO[bytes], rejects: Rejects) -> Iterator[Row]:
    """Rows of Kite's ``/instruments`` CSV (the full dump or one exchange's)."""
    rows = _csv_rows(_text(stream))
    try:
        _, header = next(rows)
    except StopIteration:
        raise BadInput("the input is empty: no header, no rows") from None
    index = _header_index(header, KITE_REQUIRED, KITE_ALIASES, "Kite instrument dump")
    width = len(header)
    # Columns a dump lacks read as the empty cell appended at position ``width``.
    cells = operator.itemgetter(*(index.get(name, width) for name in KITE_ALIASES))
    seen: dict[int, int] = {}
    for line, record in rows:
        if len(record) != width:
            if not record or (len(record) == 1 and not record[0].strip()):
                continue
            rejects.add(line, f"expected {width} fields, got {len(record)}")
            continue
        record.append("")
        (
            token_text,
            exchange_token,
            symbol,
            name,
            price,
            expiry,
            strike,
            tick,
            lot,
            kind,
            segment,
            exchange,
        ) = cells(record)
        try:
            token = parse_int(token_text, "instrument_token")
            if not token:
                raise RowError("bad instrument_token 0")
            row = (
                line,
                token,
                parse_int(exchange_token, "exchange_token", required=False),
                "",
                parse_text(symbol, "tradingsymbol", required=True),
                parse_text(name, "name"),
                parse_decimal(price, "last_price", PRICE),
                parse_date(expiry),
                parse_decimal(strike, "strike", PRICE),
                parse_decimal(tick, "tick_size", TICK),
                parse_int(lot or "0", "lot_size", maximum=MAX_INT32),
                parse_text(kind, "instrument_type", required=True, upper=True),
                parse_text(segment, "segment", required=True, upper=True),
                parse_text(exchange, "exchange", required=True, upper=True),
            )
        except RowError as exc:
            rejects.add(line, str(exc))
            continue
        first = seen.get(token)  # type: ignore[arg-type]
        if first is not None:
            rejects.add(line, f"duplicate instrument_token {token} (first on line {first})")
            continue
        seen[token] = line  # type: ignore[index]
        yield row


# --- Upstox --------------------------------------------------------------------------

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
    if isinstance(expiry_value, int | float) or (
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
    """Objects of a top-level JSON array (or one per line), decoded one at a time."""
    decoder = json.JSONDecoder()
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
    text = _text(stream)
    first = text.buffer.peek(64).lstrip(codecs.BOM_UTF8 + b" \t\r\n")[:1]  # type: ignore[attr-defined]
    seen: dict[str, int] = {}
    if first in (b"[", b"{"):
        records: Iterator[tuple[int, Callable[[str], Any]]] = (
            (number, (record.get if isinstance(record, dict) else None))  # type: ignore[misc]
            for number, record in enumerate(_json_records(text), start=1)
        )
        tick_in_paise = True
    else:
        rows = _csv_rows(text)
        try:
            _, header = next(rows)
        except StopIteration:
            raise BadInput("the input is empty: no header, no rows") from None
        index = _header_index(header, ("instrument_key", "tradingsymbol", "instrument_type"), UPSTOX_CSV_ALIASES,
                              "Upstox instrument dump")  # fmt: skip
        width = len(header)

        def csv_records() -> Iterator[tuple[int, Callable[[str], Any] | None]]:
            for line, record in rows:
                if not record or (len(record) == 1 and not record[0].strip()):
                    continue
                if len(record) != width:
                    rejects.add(line, f"expected {width} fields, got {len(record)}")
                    continue
                yield line, functools.partial(_row_cell, record, index)

        records = csv_records()  # type: ignore[assignment]
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


PARSERS: dict[str, Callable[[IO[bytes], Rejects], Iterator[Row]]] = {
    "kite": parse_kite_csv,
    "upstox": parse_upstox,
}
