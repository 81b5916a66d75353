"""Kite's rows as the OMS's own types: plain functions, no I/O (property-tested).

kiteconnect parses Kite's JSON numbers as floats; every number is taken back as the exact
decimal Kite wrote (``Decimal(str(x))``: a float's shortest text is that number) and
quantized to the instrument's places, never through ``Decimal(float)``. Kite's timestamps
are exchange time (IST) without a zone; they are made aware here.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from datetime import datetime
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from typing import Any
from zoneinfo import ZoneInfo

from oms import state
from oms.updates import Fill, OrderUpdate

logger = logging.getLogger(__name__)
IST = ZoneInfo("Asia/Kolkata")
TAG_PREFIX = "TP"
TAG_LENGTH = 20  # Kite's limit
DB_PLACES = Decimal("0.0001")  # the OMS's price columns
NOISE = Decimal("0.000001")  # what a float's text can carry beyond the places Kite meant
TIMESTAMPS = ("order_timestamp", "exchange_timestamp", "exchange_update_timestamp", "fill_timestamp")


# --- tags ----------------------------------------------------------------------------------------


def order_tag(order_id: int) -> str:
    """The tag that names our order ``order_id`` at Kite: ``TP`` and the id."""
    tag = f"{TAG_PREFIX}{int(order_id)}"
    if len(tag) > TAG_LENGTH:
        raise ValueError(f"order id {order_id} does not fit Kite's {TAG_LENGTH}-character tag")
    return tag


def order_id_from_tag(tag: Any) -> int | None:
    """Our order id from a Kite tag (None: not one of ours)."""
    digits = tag[len(TAG_PREFIX) :] if isinstance(tag, str) and tag.startswith(TAG_PREFIX) else ""
    return int(digits) if digits.isascii() and digits.isdigit() else None


def row_tags(row: Mapping[str, Any]) -> list[str]:
    """A row's ``tag`` and its ``tags`` (Kite adds ``autoslice:<parent>``, ``mktp:<n>``)."""
    tags = [row.get("tag"), *(row.get("tags") or [])]
    return [t for t in tags if isinstance(t, str)]


def autoslice_parent_id(row: Mapping[str, Any]) -> str | None:
    """The parent order id of an autoslice child row (Kite tags them ``autoslice:<parent>``)."""
    for tag in row_tags(row):
        if tag.startswith("autoslice:") and tag[len("autoslice:") :]:
            return tag[len("autoslice:") :]
    return None


# --- values -----------------------------------------------------------------------------------------


def _places(tick_size: Decimal | None) -> Decimal:
    exponent = Decimal(tick_size).normalize().as_tuple().exponent if tick_size else None
    if not isinstance(exponent, int):
        return DB_PLACES
    return max(Decimal(1).scaleb(min(exponent, 0)), DB_PLACES)


def kite_decimal(value: Any, *, tick_size: Decimal | None = None) -> Decimal | None:
    """A Kite number as the exact ``Decimal`` Kite wrote, to the places of ``tick_size``
    (else the OMS's 4). A value off those places by more than float noise is kept to 4
    places (and logged), never rounded to a price Kite did not send."""
    if value is None or value == "" or isinstance(value, bool):
        return None
    try:
        exact = value if isinstance(value, Decimal) else Decimal(str(value))
    except (InvalidOperation, ValueError):
        return None
    if not exact.is_finite():
        return None
    places = _places(tick_size)
    rounded = exact.quantize(places, rounding=ROUND_HALF_EVEN)
    if places != DB_PLACES and abs(rounded - exact) > NOISE:
        logger.warning(
            "Kite price %s is not on the places of tick size %s; kept to 4 places", exact, tick_size
        )
        rounded = exact.quantize(DB_PLACES, rounding=ROUND_HALF_EVEN)
    return rounded


def kite_time(value: Any) -> datetime | None:
    """A Kite timestamp (``YYYY-MM-DD HH:MM:SS`` exchange time, or kiteconnect's naive
    datetime) as an aware datetime in IST."""
    if isinstance(value, str) and len(value) == 19:
        try:
            value = datetime.strptime(value, "%Y-%m-%d %H:%M:%S")  # noqa: DTZ007 - IST, made aware below
        except ValueError:
            return None
    if not isinstance(value, datetime):
        return None
    return value.replace(tzinfo=IST) if value.tzinfo is None else value.astimezone(IST)


def kite_integer(value: Any) -> int | None:
    if isinstance(value, bool) or value is None or value == "":
        return None
    try:
        number = Decimal(str(value))
    except (InvalidOperation, ValueError):
        return None
    return int(number) if number.is_finite() and number == number.to_integral_value() else None


def kite_row(value: Any) -> Any:
    """A row (or list of rows) as kiteconnect returns it, with its floats as exact Decimals
    and its timestamps aware in IST; everything else as it is."""
    if isinstance(value, dict):
        return {k: (kite_time(v) or v) if k in TIMESTAMPS else kite_row(v) for k, v in value.items()}
    if isinstance(value, list):
        return [kite_row(v) for v in value]
    if isinstance(value, float):
        return Decimal(str(value))
    return value


def sequence_of(row: Mapping[str, Any]) -> int | None:
    """Milliseconds since the epoch of the row's exchange update time, else of the latest
    of its order and exchange times (Kite moves ``order_timestamp`` on a modification)."""
    latest = kite_time(row.get("exchange_update_timestamp"))
    if latest is None:
        times = [kite_time(row.get(key)) for key in ("order_timestamp", "exchange_timestamp")]
        latest = max((t for t in times if t is not None), default=None)
    return int(latest.timestamp() * 1000) if latest else None


# --- orders and trades ---------------------------------------------------------------------------------


def update_from_kite_order(row: Mapping[str, Any], *, tick_size: Decimal | None = None) -> OrderUpdate:
    """One row of Kite's order book (or of an order's history, a postback, a ticker order
    message) as an update: the status and its message, Kite's and the exchange's ids, a
    ``sequence`` (``sequence_of``) and, for a modified order (``modified``), its quantity,
    price, trigger price and type as Kite has them now."""
    update = OrderUpdate(
        status=str(row.get("status") or "").upper() or None,
        status_message=str(row.get("status_message") or "")[:2000],
        broker_order_id=str(row["order_id"]) if row.get("order_id") else None,
        exchange_order_id=str(row.get("exchange_order_id") or ""),
        sequence=sequence_of(row),
        payload=dict(row),
    )
    if row.get("modified"):
        update.quantity = kite_integer(row.get("quantity"))
        update.price = kite_decimal(row.get("price"), tick_size=tick_size)
        update.trigger_price = kite_decimal(row.get("trigger_price"), tick_size=tick_size)
        update.order_type = str(row["order_type"]) if row.get("order_type") else None
    return update


def update_from_autoslice(
    parent_order_id: str, rows: Iterable[Mapping[str, Any]], *, quantity: int
) -> OrderUpdate:
    """Our one order that Kite sliced, from its children's rows (the others are ignored):
    working while any child works (``OPEN``; ``TRIGGER PENDING`` when every working child
    waits for its trigger); once every child is finished, ``COMPLETE`` when they filled
    all of ``quantity``, ``REJECTED`` when every child was and nothing filled, else
    ``CANCELLED`` with what did not fill (slices Kite refused at placement never reach
    the book). The fills come from the children's trades
    (``fills_from_kite_trades(..., parents=...)``)."""
    children = [row for row in rows if autoslice_parent_id(row) == parent_order_id]
    summary = [
        {k: row.get(k) for k in ("order_id", "status", "quantity", "filled_quantity")} for row in children
    ]
    update = OrderUpdate(
        broker_order_id=parent_order_id, payload={"order_id": parent_order_id, "children": summary}
    )
    if not children:
        return update
    statuses = [str(row.get("status") or "").upper() for row in children]
    filled = sum(kite_integer(row.get("filled_quantity")) or 0 for row in children)
    update.sequence = max((s for s in map(sequence_of, children) if s is not None), default=None)
    reasons = "; ".join(sorted({str(row["status_message"]) for row in children if row.get("status_message")}))
    working = [s for s in statuses if not state.is_terminal(s)]
    live = [s for s in working if s in state.WORKING]
    if working:
        update.status = state.TRIGGER_PENDING if live and set(live) == {state.TRIGGER_PENDING} else (
            state.OPEN if live else working[0])  # fmt: skip
    elif filled >= quantity:
        update.status = state.COMPLETE
    elif filled == 0 and set(statuses) == {state.REJECTED}:
        update.status, update.status_message = state.REJECTED, reasons[:2000]
    else:
        update.status = state.CANCELLED
        ended = f"the sliced order ended with {filled} of {quantity} filled"
        update.status_message = (f"{ended}: {reasons}" if reasons else ended)[:2000]
    return update


def fills_from_kite_trades(rows: Iterable[Mapping[str, Any]], *, tick_sizes: Mapping[int, Decimal] | None = None,
                           parents: Mapping[str, str] | None = None) -> dict[str, list[Fill]]:  # fmt: skip
    """Kite's trade rows as fills, by the broker order id they belong to (an autoslice
    child's under its parent, through ``parents``: child id -> parent id).

    Prices are exact Decimals to the instrument's tick places (``tick_sizes`` by
    instrument token), times aware in IST. Exchange trade ids are unique only within a
    segment and a day, so a fill's id is ``<Kite order id>:<trade id>`` (Kite's order ids
    are unique): the same trade seen twice is the same fill, two trades are never one."""
    fills: dict[str, list[Fill]] = {}
    for row in rows:
        order_id, trade_id = str(row.get("order_id") or ""), str(row.get("trade_id") or "")
        quantity = kite_integer(row.get("quantity"))
        token = kite_integer(row.get("instrument_token"))
        tick = (tick_sizes or {}).get(token) if token is not None else None
        price = kite_decimal(row.get("average_price"), tick_size=tick)
        if not order_id or not trade_id or quantity is None or price is None:
            logger.warning(
                "a Kite trade row without its order, trade id, quantity or price was skipped (%s)", trade_id
            )
            continue
        fill = Fill(
            trade_id=f"{order_id}:{trade_id}", quantity=quantity, price=price,
            at=kite_time(row.get("fill_timestamp")) or kite_time(row.get("exchange_timestamp")),
            exchange_order_id=str(row.get("exchange_order_id") or ""),
        )  # fmt: skip
        fills.setdefault((parents or {}).get(order_id, order_id), []).append(fill)
    return fills
