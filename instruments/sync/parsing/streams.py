"""Bytes to text and CSV records, refusing what is plainly not a dump (HTML, binary, empty)."""

from __future__ import annotations

import codecs
import csv
import io
from collections.abc import Iterator
from typing import IO

from instruments.sync.errors import BadInput


def text_stream(stream: IO[bytes]) -> io.TextIOWrapper:
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


def csv_records(text: io.TextIOWrapper) -> Iterator[tuple[int, list[str]]]:
    reader = csv.reader(text)
    try:
        for record in reader:
            yield reader.line_num, record
    except UnicodeDecodeError as exc:
        raise BadInput(f"the input is not UTF-8 text near line {reader.line_num + 1}: {exc.reason}") from exc
    except csv.Error as exc:
        raise BadInput(f"the CSV is malformed near line {reader.line_num}: {exc}") from exc


def header_index(
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
        raise BadInput(f"not a {what}: the header lacks {', '.join(missing)}", detail=f" (got: {shown!r})")
    return index


def cell(record: list[str], index: dict[str, int], name: str) -> str:
    position = index.get(name)
    if position is None or position >= len(record):
        return ""
    return record[position]
