"""Kite's websocket ticker protocol: parsing the server's binary frames, building them.

Plain functions over bytes, free of Django: this is the hot path (benchmarked in
bench/ingestion.py). A frame is a big-endian uint16 packet count, then for each packet a
uint16 length and the packet. Packet lengths name the mode: 8 (LTP), 28/32 (index
quote/full), 44 (quote), 184 (full, with 5+5 depth levels). A 1-byte frame is a
heartbeat. Prices are integers in paise (CDS: 10^-7 rupee, BCD: 10^-4); they become
exact ``Decimal`` here, never floats. Tokens, quantities and timestamps are unsigned;
prices are read signed so a negative price (it has happened) stays negative.
"""

from __future__ import annotations

import functools
import logging
import struct
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

logger = logging.getLogger(__name__)
IST = ZoneInfo("Asia/Kolkata")

SEGMENTS = {1: "NSE", 2: "NFO", 3: "CDS", 4: "BSE", 5: "BFO", 6: "BCD", 7: "MCX", 8: "MCXSX", 9: "INDICES"}
INDICES = 9
# Decimal places of the integer prices, by segment (token & 0xff).
PRICE_PLACES = {3: 7, 6: 4}
DEFAULT_PLACES = 2

LTP, INDEX_QUOTE, INDEX_FULL, QUOTE, FULL = 8, 28, 32, 44, 184
MODE_OF_LENGTH = {LTP: "ltp", INDEX_QUOTE: "quote", INDEX_FULL: "full", QUOTE: "quote", FULL: "full"}

_U16 = struct.Struct(">H")
_LTP = struct.Struct(">Ii")
_INDEX = struct.Struct(">Iiiiiii")  # token, last, high, low, open, close, change
_INDEX_FULL = struct.Struct(">IiiiiiiI")  # + exchange timestamp
_QUOTE = struct.Struct(">IiIiIIIiiii")  # token, last, last qty, avg, volume, buy qty, sell qty, o, h, l, c
_FULL_TAIL = struct.Struct(">IIIII")  # last trade time, oi, oi day high, oi day low, exchange timestamp
_DEPTH = struct.Struct(">IiH2x")  # quantity, price, orders, padding
_DEPTH_ALL = struct.Struct(">" + "IiH2x" * 10)  # building only

_SCALES = {places: Decimal(1).scaleb(-places) for places in (2, 4, 7)}


def _price(value: int, places: int) -> Decimal:
    # An integer times 10^-places is exact (well within the context's 28 digits).
    return Decimal(value) * _SCALES[places]


@functools.lru_cache(maxsize=4096)
def _timestamp(value: int) -> str | None:
    if not value:
        return None
    try:
        return datetime.fromtimestamp(value, tz=UTC).astimezone(IST).isoformat()
    except (OverflowError, OSError, ValueError):
        return None


_CENT = Decimal("0.01")
_CENT_ZERO = Decimal("0.00")


def _change(last: Decimal, close: Decimal) -> tuple[Decimal, Decimal]:
    """Absolute change from the previous close and the same as a percentage (2 places)."""
    absolute = last - close
    if not close:
        return absolute, Decimal(0)
    percent = (absolute * 100 / close).quantize(_CENT)
    return absolute, percent if percent else _CENT_ZERO


def parse_packet(packet: bytes, depth_levels: int = 5) -> dict[str, Any] | None:
    """One packet as a tick dict, or None if its length is not one Kite sends.

    ``depth_levels`` (1-5) limits how much of a full packet's market depth is decoded:
    the hot path takes the best bid and ask only.
    """
    length = len(packet)
    token = int.from_bytes(packet[0:4], "big") if length >= 4 else 0
    segment = token & 0xFF
    places = PRICE_PLACES.get(segment, DEFAULT_PLACES)
    if length == LTP:
        token, last = _LTP.unpack(packet)
        return {"instrument_token": token, "mode": "ltp", "tradable": segment != INDICES,
                "last_price": _price(last, places)}  # fmt: skip
    if length in (INDEX_QUOTE, INDEX_FULL):
        if length == INDEX_FULL:
            token, last, high, low, open_, close, _, stamp = _INDEX_FULL.unpack(packet)
        else:
            token, last, high, low, open_, close, _ = _INDEX.unpack(packet)
            stamp = 0
        last_price, close_price = _price(last, places), _price(close, places)
        change, change_percent = _change(last_price, close_price)
        tick = {
            "instrument_token": token, "mode": MODE_OF_LENGTH[length], "tradable": False,
            "last_price": last_price, "change": change, "change_percent": change_percent,
            "ohlc": {"open": _price(open_, places), "high": _price(high, places), "low": _price(low, places),
                     "close": close_price},
        }  # fmt: skip
        if stamp:
            tick["exchange_timestamp"] = _timestamp(stamp)
        return tick
    if length in (QUOTE, FULL):
        token, last, last_qty, average, volume, buy_qty, sell_qty, open_, high, low, close = (
            _QUOTE.unpack_from(packet)
        )
        last_price, close_price = _price(last, places), _price(close, places)
        change, change_percent = _change(last_price, close_price)
        tick = {
            "instrument_token": token, "mode": "quote", "tradable": segment != INDICES,
            "last_price": last_price, "change": change, "change_percent": change_percent,
            "last_traded_quantity": last_qty, "average_traded_price": _price(average, places),
            "volume": volume, "total_buy_quantity": buy_qty, "total_sell_quantity": sell_qty,
            "ohlc": {"open": _price(open_, places), "high": _price(high, places), "low": _price(low, places),
                     "close": close_price},
        }  # fmt: skip
        if length == FULL:
            trade_time, oi, oi_high, oi_low, stamp = _FULL_TAIL.unpack_from(packet, 44)
            book = {}
            for side, start in (("buy", 64), ("sell", 124)):
                levels = []
                for level in range(depth_levels):
                    quantity, price, orders = _DEPTH.unpack_from(packet, start + level * 12)
                    levels.append({"quantity": quantity, "price": _price(price, places), "orders": orders})
                book[side] = levels
            tick.update(
                mode="full", last_trade_time=_timestamp(trade_time), oi=oi, oi_day_high=oi_high, oi_day_low=oi_low,
                exchange_timestamp=_timestamp(stamp), depth=book,
            )  # fmt: skip
        return tick
    return None


def parse_frame(frame: bytes, depth_levels: int = 5) -> list[dict[str, Any]]:
    """Every well-formed packet of a binary frame. A heartbeat gives nothing; a malformed
    frame or packet is logged and skipped, never raised."""
    size = len(frame)
    if size < 2:
        return []
    count = _U16.unpack_from(frame, 0)[0]
    ticks: list[dict[str, Any]] = []
    offset = 2
    for _ in range(count):
        if offset + 2 > size:
            logger.warning("truncated frame: %s of %s packets read (%s bytes)", len(ticks), count, size)
            break
        length = _U16.unpack_from(frame, offset)[0]
        offset += 2
        packet = frame[offset : offset + length]
        offset += length
        if len(packet) != length:
            logger.warning("truncated packet: %s of %s bytes", len(packet), length)
            break
        try:
            tick = parse_packet(packet, depth_levels)
        except struct.error:  # pragma: no cover - lengths are checked above
            tick = None
        if tick is None:
            logger.warning("skipped a packet of unexpected length %s", length)
            continue
        ticks.append(tick)
    return ticks


# --- building frames (the simulator, tests) ----------------------------------------------


def _scaled(price: Decimal, places: int) -> int:
    return int(price.scaleb(places).to_integral_value())


def build_packet(mode: str, token: int, *, last: Decimal, close: Decimal | None = None,
                 open_: Decimal | None = None, high: Decimal | None = None, low: Decimal | None = None,
                 volume: int = 0, last_quantity: int = 0, average: Decimal | None = None, buy_quantity: int = 0,
                 sell_quantity: int = 0, last_trade_time: int = 0, oi: int = 0, oi_day_high: int = 0,
                 oi_day_low: int = 0, exchange_timestamp: int = 0,
                 depth: list[tuple[int, Decimal, int]] | None = None) -> bytes:  # fmt: skip
    """The packet Kite sends for ``token`` in ``mode`` (index tokens get index packets)."""
    places = PRICE_PLACES.get(token & 0xFF, DEFAULT_PLACES)
    close = last if close is None else close
    flat: list[int] = []
    for quantity, price, orders in (depth or [])[:10]:
        flat += [quantity, _scaled(price, places), orders]
    return pack_units(
        mode, token, last=_scaled(last, places), close=_scaled(close, places),
        open_=_scaled(open_ if open_ is not None else last, places),
        high=_scaled(high if high is not None else last, places), low=_scaled(low if low is not None else last, places),
        average=_scaled(average if average is not None else last, places), volume=volume,
        last_quantity=last_quantity, buy_quantity=buy_quantity, sell_quantity=sell_quantity,
        last_trade_time=last_trade_time, oi=oi, oi_day_high=oi_day_high, oi_day_low=oi_day_low,
        exchange_timestamp=exchange_timestamp, depth=flat,
    )  # fmt: skip


_NO_DEPTH = (0,) * 30


def pack_units(mode: str, token: int, *, last: int, close: int, open_: int, high: int, low: int, average: int,
               volume: int = 0, last_quantity: int = 0, buy_quantity: int = 0, sell_quantity: int = 0,
               last_trade_time: int = 0, oi: int = 0, oi_day_high: int = 0, oi_day_low: int = 0,
               exchange_timestamp: int = 0, depth: list[int] | tuple[int, ...] = ()) -> bytes:  # fmt: skip
    """``build_packet`` over integer price units (paise, or 10^-7 rupee for CDS): the
    simulator's fast path. ``depth`` is up to 30 ints: (quantity, price, orders) x 10."""
    if mode == "ltp":
        return _LTP.pack(token, last)
    if token & 0xFF == INDICES:
        if mode == "full":
            return _INDEX_FULL.pack(token, last, high, low, open_, close, last - close, exchange_timestamp)
        return _INDEX.pack(token, last, high, low, open_, close, last - close)
    packet = _QUOTE.pack(
        token, last, last_quantity, average, volume, buy_quantity, sell_quantity, open_, high, low, close
    )
    if mode != "full":
        return packet
    levels = tuple(depth) + _NO_DEPTH[len(depth) :]
    return packet + _FULL_TAIL.pack(last_trade_time, oi, oi_day_high, oi_day_low, exchange_timestamp) + \
        _DEPTH_ALL.pack(*levels[:30])  # fmt: skip


def build_frame(packets: list[bytes]) -> bytes:
    parts = [_U16.pack(len(packets))]
    for packet in packets:
        parts.append(_U16.pack(len(packet)))
        parts.append(packet)
    return b"".join(parts)


HEARTBEAT = b"\x00"
