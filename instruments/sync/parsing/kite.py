"""Kite's ``/instruments`` CSV (the full dump or one exchange's)."""

from __future__ import annotations

import operator
from collections.abc import Iterator
from typing import IO

from instruments.sync.errors import BadInput
from instruments.sync.parsing.fields import (
    MAX_INT32,
    PRICE,
    TICK,
    Rejects,
    Row,
    RowError,
    parse_date,
    parse_decimal,
    parse_int,
    parse_text,
)
from instruments.sync.parsing.streams import csv_records, header_index, text_stream

KITE_ALIASES: dict[str, tuple[str, ...]] = {
    name: (name,)
    for name in ("instrument_token", "exchange_token", "tradingsymbol", "name", "last_price", "expiry",
                 "strike", "tick_size", "lot_size", "instrument_type", "segment", "exchange")
}  # fmt: skip
KITE_REQUIRED = ("instrument_token", "tradingsymbol", "instrument_type", "segment", "exchange")


def parse_kite_csv(stream: IO[bytes], rejects: Rejects) -> Iterator[Row]:
    """Rows of Kite's ``/instruments`` CSV (the full dump or one exchange's)."""
    rows = csv_records(text_stream(stream))
    try:
        _, header = next(rows)
    except StopIteration:
        raise BadInput("the input is empty: no header, no rows") from None
    index = header_index(header, KITE_REQUIRED, KITE_ALIASES, "Kite instrument dump")
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
