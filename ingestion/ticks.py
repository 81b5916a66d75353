"""Shaping ticks for the dashboards, the API and the OMS: plain functions over dicts,
free of Django (the hot path, benchmarked in bench/ingestion.py)."""

from __future__ import annotations

import json
from typing import Any

_ENCODER = json.JSONEncoder(separators=(",", ":"))


def dumps(value: Any) -> str:
    """Compact JSON, as the dashboards receive it."""
    return _ENCODER.encode(value)


def present(tick: dict[str, Any], meta: dict[str, Any]) -> dict[str, Any]:
    """A tick as the dashboard, the API and the OMS read it: enriched, prices as strings."""
    out: dict[str, Any] = {
        "instrument_token": tick["instrument_token"],
        "tradingsymbol": meta.get("tradingsymbol", ""),
        "exchange": meta.get("exchange", ""),
        "segment": meta.get("segment", ""),
        "lot_size": meta.get("lot_size"),
        "mode": tick["mode"],
        "last_price": str(tick["last_price"]),
    }
    if "change" in tick:
        out["change"] = str(tick["change"])
        out["change_percent"] = str(tick["change_percent"])
    for key in ("volume", "oi", "oi_day_high", "oi_day_low", "last_traded_quantity", "exchange_timestamp",
                "last_trade_time", "total_buy_quantity", "total_sell_quantity"):  # fmt: skip
        if key in tick:
            out[key] = tick[key]
    if "ohlc" in tick:
        out["ohlc"] = {k: str(v) for k, v in tick["ohlc"].items()}
    if "average_traded_price" in tick:
        out["average_traded_price"] = str(tick["average_traded_price"])
    book = tick.get("depth")
    if book:
        best_bid, best_ask = book["buy"][0], book["sell"][0]
        if best_bid["quantity"]:
            out["bid"], out["bid_quantity"] = str(best_bid["price"]), best_bid["quantity"]
        if best_ask["quantity"]:
            out["ask"], out["ask_quantity"] = str(best_ask["price"]), best_ask["quantity"]
    return out
