"""Field parsers shared by every dump format: numbers, dates and text within the model's limits.

A malformed field raises ``RowError`` with a message saying which field and why; the
parser of the format rejects that row (``Rejects``) and goes on.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any
from zoneinfo import ZoneInfo

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
    text: str | int | Decimal | float | None, name: str, *, required: bool = True, maximum: int = MAX_INT64
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
    text: str | int | Decimal | float | None, name: str, limits: tuple[int, int], *, scale: int = 0
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
