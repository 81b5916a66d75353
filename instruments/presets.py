"""Named active sets for ``sync_instruments --filter``. Add a preset by adding an entry.

A preset selects listed, unexpired Kite instruments; applying it makes the active set
exactly that selection.
"""

from collections.abc import Callable

from django.db.models import Q

DERIVATIVES = ("FUT", "CE", "PE")


def _index_with_derivatives(*, index_symbol: str, underlying: str) -> Q:
    return Q(segment="INDICES", tradingsymbol=index_symbol) | Q(
        exchange="NFO", name=underlying, instrument_type__in=DERIVATIVES
    )


PRESETS: dict[str, Callable[[], Q]] = {
    "nifty": lambda: _index_with_derivatives(index_symbol="NIFTY 50", underlying="NIFTY"),
    "banknifty": lambda: _index_with_derivatives(index_symbol="NIFTY BANK", underlying="BANKNIFTY"),
}
# `all` is not a preset: it leaves the active flags alone.
PRESET_CHOICES = (*PRESETS, "all")
