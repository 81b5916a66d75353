"""Parsing broker dumps into rows for the staging table: plain functions over streams.

A row is a tuple in ``ROW_FIELDS`` order. A malformed row is rejected with its line
number and reason and parsing goes on; an input that is not a dump at all raises
``BadInput``. Nothing holds more than one row at a time.

- ``fields``: the field parsers (numbers, dates, text within the model's limits);
- ``streams``: bytes to text and CSV records, refusing HTML, binary and empty input;
- ``kite``: Kite's CSV (quoted names, empty ``expiry``/``strike``, files re-saved by
  spreadsheets with ``24350.0`` integers, CRLF and a BOM);
- ``upstox``: Upstox's JSON (epoch-millisecond expiries, ``tick_size`` in paise, prices
  as ``Decimal``) and CSV.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import IO

from instruments.sync.parsing.fields import (
    KEEP_REJECTS,
    ROW_FIELDS,
    Rejects,
    Row,
    RowError,
    epoch_ms_to_date,
    parse_date,
    parse_decimal,
    parse_int,
    parse_text,
)
from instruments.sync.parsing.kite import parse_kite_csv
from instruments.sync.parsing.upstox import parse_upstox

PARSERS: dict[str, Callable[[IO[bytes], Rejects], Iterator[Row]]] = {
    "kite": parse_kite_csv,
    "upstox": parse_upstox,
}

__all__ = [
    "KEEP_REJECTS",
    "PARSERS",
    "ROW_FIELDS",
    "Rejects",
    "Row",
    "RowError",
    "epoch_ms_to_date",
    "parse_date",
    "parse_decimal",
    "parse_int",
    "parse_kite_csv",
    "parse_text",
    "parse_upstox",
]
