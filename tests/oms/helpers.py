"""Shared by the OMS tests: live prices in the latest-tick store, orders in one call."""

import json
from datetime import timedelta
from decimal import Decimal

from django.utils import timezone

from ingestion.latest import latest_store
from oms.risk import OrderRequest
from oms.services import order_place


def price(token: int, last: str, *, bid: str | None = None, ask: str | None = None, age: float = 0) -> None:
    """Put a tick for ``token`` in the latest-tick store, as the ingestion would."""
    tick = {"instrument_token": token, "last_price": last, "mode": "full" if bid else "quote"}
    if bid:
        tick.update(bid=bid, ask=ask, bid_quantity=100, ask_quantity=100)
    latest_store({token: json.dumps(tick)}, received_at=timezone.now() - timedelta(seconds=age))


def request(**overrides) -> OrderRequest:
    fields = {"transaction_type": "BUY", "quantity": 10, "product": "MIS", "order_type": "MARKET"}
    fields.update(overrides)
    for name in ("price", "trigger_price", "stop_loss", "target"):
        if isinstance(fields.get(name), str | int):
            fields[name] = Decimal(str(fields[name]))
    return OrderRequest(**fields)


_keys = iter(range(10**9))


def place(instrument, *, user=None, key=None, strategy=None, **overrides):
    return order_place(request=request(**overrides), user=user, idempotency_key=key or f"k{next(_keys)}",
                       strategy_name=strategy, instrument_token=instrument.instrument_token)  # fmt: skip
