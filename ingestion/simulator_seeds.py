"""Where the built-in simulator starts each instrument's price: read from the database.

``simulator_seeds(tokens)`` is the simulator's ``price_lookup`` (wrapped with
``sync_to_async`` by its callers: ``run_ingestion --simulate``, the in-process feed and
``run_simulator``).
"""

from __future__ import annotations

from decimal import Decimal


def simulator_seeds(tokens: list[int]) -> dict[int, Decimal]:
    """The last known price of each listed Kite instrument among ``tokens`` that has one."""
    from instruments.models import Instrument

    rows = Instrument.objects.filter(source="kite", is_listed=True, instrument_token__in=tokens)
    return {
        token: price for token, price in rows.values_list("instrument_token", "last_price") if token and price
    }
