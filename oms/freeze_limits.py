"""The exchanges' freeze quantities (``FreezeLimit``): reading NSE's file and bringing the
table in line with it (``python manage.py freeze_limits``).

NSE publishes the freeze quantity of every F&O underlying as ``qtyfreeze.xls`` (columns
``SYMBOL`` and ``VOL_FRZ_QTY``, in units). This reads its CSV form (the same columns, as a
spreadsheet saves it: padded or quoted names, ``1,800`` or ``1800.0``, a BOM, CRLF, title
rows above the header), gzipped or not. The ``.xls`` itself is an Excel binary that only a
package this portal does not ship (xlrd) can read: it is refused with that said.

An update is one transaction: new underlyings are inserted, changed quantities updated
(``source`` "file"), rows the file does not name are kept (an underlying that left F&O
does no harm), and a malformed row is rejected with its line number while the rest apply.
"""

from __future__ import annotations

import csv
import io
import logging
import re
from dataclasses import asdict, dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from django.db import transaction
from django.utils import timezone

from instruments.sync.errors import BadInput, SyncError
from instruments.sync.sources import describe_input, open_dump
from oms.models import FreezeLimit
from tradingportal.locks import LockHeld, named_lock

logger = logging.getLogger(__name__)

FREEZE_EXCHANGES = {
    "NFO": "NFO (NSE F&O)",
    "BFO": "BFO (BSE F&O)",
    "CDS": "CDS (NSE currency)",
    "BCD": "BCD (BSE currency)",
    "MCX": "MCX (commodities)",
}
UNDERLYING_PATTERN = re.compile(r"[A-Z0-9&_.-]{1,64}")
MAX_BYTES = 5 * 1024 * 1024  # NSE's file is a few kB
HEADER_SEARCH_ROWS = 20
MAX_QUANTITY = 2**31 - 1
SYMBOL, QUANTITY = "SYMBOL", "VOL_FRZ_QTY"
# A browser-like agent: NSE's archive refuses some clients without one. No credentials go anywhere.
REQUEST_HEADERS = {"User-Agent": "Mozilla/5.0 (compatible; kite-trading-desk freeze_limits)"}


class FreezeLimitsError(Exception):
    """Why an update stopped (nothing was written); ``exit_code`` is the command's."""

    exit_code = 1


class FreezeFileBad(FreezeLimitsError):
    """Not NSE's freeze file in a form this reads (an .xls, an HTML page, no such columns)."""

    exit_code = 3


class FreezeLimitsLocked(FreezeLimitsError):
    exit_code = 5


class FreezeSourceUnreachable(FreezeLimitsError):
    exit_code = 6


EXIT_CODES = {
    0: "ok (rows may have been rejected: see the summary)",
    1: "unexpected error",
    2: "bad command-line usage",
    FreezeFileBad.exit_code: "bad input: not NSE's freeze file as CSV (an .xls, an HTML page, no SYMBOL and "
    "VOL_FRZ_QTY columns, no valid row)",
    FreezeLimitsLocked.exit_code: "another freeze_limits update is running",
    FreezeSourceUnreachable.exit_code: "source unreachable: file missing or URL failed",
}


@dataclass(frozen=True)
class FreezeRow:
    line: int
    underlying: str
    quantity: int


@dataclass
class FreezeReport:
    exchange: str
    input: str
    dry_run: bool
    rows_read: int = 0
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    rejected: int = 0
    not_in_file: int = 0  # rows of the exchange the file does not name (kept)
    changes: list[dict[str, Any]] = field(default_factory=list)  # underlying, old (None: new), new
    rejects: list[dict[str, Any]] = field(default_factory=list)  # line, reason

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


# --- reading the file ----------------------------------------------------------------------------


def _text(data: bytes) -> str:
    if data[:4] == b"\xd0\xcf\x11\xe0":
        raise FreezeFileBad(
            "this is an Excel .xls file (NSE's qtyfreeze.xls): the portal reads its CSV form, since reading "
            ".xls needs a package it does not ship (xlrd). Open the file in a spreadsheet, save it as CSV and "
            "run again with --file."
        )
    if data[:4] == b"PK\x03\x04":
        raise FreezeFileBad("this is an Excel .xlsx (or another zip) file: save it as CSV and run again.")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        try:
            text = data.decode("cp1252")  # a CSV saved by a spreadsheet on Windows
        except UnicodeDecodeError:
            raise FreezeFileBad("the file is not text (neither UTF-8 nor Windows-1252)") from None
    if not text.strip():
        raise FreezeFileBad("the file is empty")
    if text.lstrip()[:1] == "<":
        raise FreezeFileBad(
            "this is an HTML page, not NSE's freeze file (the site may have refused the download)"
        )
    return text


def _quantity(raw: str) -> int | None:
    """``1800``, ``1,800``, ``1800.0`` -> 1800; anything else (a fraction, 0, text) -> None."""
    try:
        value = Decimal(raw.replace(",", "").strip())
    except InvalidOperation:
        return None
    if not value.is_finite() or value != value.to_integral_value() or not 1 <= value <= MAX_QUANTITY:
        return None
    return int(value)


def freeze_file_parse(data: bytes) -> tuple[list[FreezeRow], list[dict[str, Any]]]:
    """The rows of NSE's freeze file (CSV form) and the rejected lines (line, reason).
    Raises ``FreezeFileBad`` when it is not such a file or has no valid row."""
    reader = csv.reader(io.StringIO(_text(data), newline=""))
    columns: tuple[int, int] | None = None
    for _ in range(HEADER_SEARCH_ROWS):
        header = next(reader, None)
        if header is None:
            break
        names = [cell.strip().upper() for cell in header]
        if SYMBOL in names and QUANTITY in names:
            columns = names.index(SYMBOL), names.index(QUANTITY)
            break
    if columns is None:
        raise FreezeFileBad(f"no {SYMBOL} and {QUANTITY} columns in the first {HEADER_SEARCH_ROWS} rows")
    rows: list[FreezeRow] = []
    rejects: list[dict[str, Any]] = []
    seen: dict[str, int] = {}
    for cells in reader:
        line = reader.line_num
        if not any(cell.strip() for cell in cells):
            continue
        symbol_raw, quantity_raw = (cells[i].strip() if i < len(cells) else "" for i in columns)
        symbol = symbol_raw.upper()
        quantity = _quantity(quantity_raw)
        reason = None
        if not symbol:
            reason = f"no {SYMBOL}"
        elif not UNDERLYING_PATTERN.fullmatch(symbol):
            reason = f"{SYMBOL} {symbol_raw[:40]!r} is not an underlying's symbol"
        elif quantity is None:
            reason = f"{QUANTITY} {quantity_raw[:40]!r} for {symbol} is not a whole number of units above 0"
        elif symbol in seen:
            reason = f"{symbol} again (first on line {seen[symbol]})"
        if reason:
            rejects.append({"line": line, "reason": reason})
            continue
        seen[symbol] = line
        rows.append(FreezeRow(line=line, underlying=symbol, quantity=quantity))  # type: ignore[arg-type]
    if not rows:
        raise FreezeFileBad(f"no valid row ({len(rejects)} rejected)")
    return rows, rejects


def _read(*, path: str | None, url: str | None) -> bytes:
    try:
        with open_dump(path=path, url=url, headers_for=lambda _url: dict(REQUEST_HEADERS)) as stream:
            data = stream.read(MAX_BYTES + 1)
    except BadInput as exc:  # a broken gzip stream
        raise FreezeFileBad(str(exc)) from exc
    except SyncError as exc:  # missing file, URL failed or broke off
        raise FreezeSourceUnreachable(str(exc)) from exc
    if len(data) > MAX_BYTES:
        raise FreezeFileBad(f"larger than {MAX_BYTES // (1024 * 1024)} MB: not NSE's freeze file")
    return data


# --- writing the table ---------------------------------------------------------------------------


def freeze_limits_update(
    *, exchange: str = "NFO", path: str | None = None, url: str | None = None, dry_run: bool = False
) -> FreezeReport:
    """Bring the freeze quantities of ``exchange`` in line with the file at ``path`` or
    ``url``; ``dry_run`` reports what would change and writes nothing."""
    if exchange not in FREEZE_EXCHANGES:
        raise FreezeLimitsError(f"unknown exchange {exchange!r}: one of {', '.join(FREEZE_EXCHANGES)}")
    if not (path or url):
        raise FreezeSourceUnreachable("no input: give --file PATH or --url URL")
    report = FreezeReport(exchange=exchange, input=describe_input(path=path, url=url), dry_run=dry_run)
    rows, rejects = freeze_file_parse(_read(path=path, url=url))
    report.rows_read, report.rejected, report.rejects = len(rows) + len(rejects), len(rejects), rejects[:50]
    try:
        with named_lock("freeze_limits"), transaction.atomic():
            existing = {
                limit.underlying: limit
                for limit in FreezeLimit.objects.select_for_update().filter(exchange=exchange)
            }
            now = timezone.now()
            new, changed = [], []
            for row in rows:
                limit = existing.get(row.underlying)
                if limit is None:
                    new.append(FreezeLimit(exchange=exchange, underlying=row.underlying,
                                           freeze_quantity=row.quantity, source="file", updated_at=now))  # fmt: skip
                    report.changes.append({"underlying": row.underlying, "old": None, "new": row.quantity})
                elif limit.freeze_quantity != row.quantity:
                    report.changes.append(
                        {"underlying": row.underlying, "old": limit.freeze_quantity, "new": row.quantity}
                    )
                    limit.freeze_quantity, limit.source, limit.updated_at = row.quantity, "file", now
                    changed.append(limit)
                else:
                    report.unchanged += 1
            report.inserted, report.updated = len(new), len(changed)
            report.not_in_file = len(set(existing) - {row.underlying for row in rows})
            if not dry_run:
                FreezeLimit.objects.bulk_create(new)
                FreezeLimit.objects.bulk_update(changed, ["freeze_quantity", "source", "updated_at"])
    except LockHeld:
        raise FreezeLimitsLocked("another freeze_limits update is running; try again when it ends") from None
    logger.info("freeze limits %s%s: %s inserted, %s updated, %s unchanged, %s rejected", exchange,
                " (dry run)" if dry_run else "", report.inserted, report.updated, report.unchanged,
                report.rejected)  # fmt: skip
    return report
