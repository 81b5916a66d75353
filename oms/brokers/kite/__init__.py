"""The Kite broker: our orders at Zerodha Kite through ``kiteconnect``, and Kite's rows as ours.

- ``broker``: ``KiteBroker`` (``oms.brokers.base.Broker``). Every call builds its client
  from ``ingestion.credentials.kite_credentials()`` (the one place the feed reads the
  token too), so the morning's new token is used without a restart, and talks to
  ``KITE_API_URL`` with ``KITE_REQUEST_TIMEOUT``. Each order carries ``tag`` =
  ``order_tag(our id)`` so that it can be found in Kite's order book whatever happened
  to the answer, the strategy's exchange ``algo_id`` when it has one, and
  ``market_protection`` on MARKET and SL-M orders (the strategy's, default ``-1``: the
  exchange's automatic protection); an order above the exchange's freeze quantity goes
  out with ``place_autoslice_order`` when the strategy allows it, else it is refused with
  the limit named.
- ``errors``: every kiteconnect and ``requests`` error as one of the OMS's outcomes, never
  an unknown one: ``TokenException`` -> ``BrokerLoginNeeded`` ("Kite login needed"; no
  retry with the dead token); HTTP 429 -> ``BrokerRateLimited`` (not placed);
  ``OrderException``/``InputException``/``PermissionException``/``GeneralException``
  (and Kite's other types, e.g. margin errors) -> ``BrokerRejected`` with Kite's message;
  no answer, ``NetworkException``, ``DataException`` or an answer we cannot read ->
  ``BrokerUnavailable`` (the outcome is unknown). A placement whose outcome is unknown is
  looked up by its tag at once: found, it was placed; it is never sent again blindly
  (``place(order, retry=True)`` looks it up first too).
- ``rate``: Kite's order caps (``KITE_ORDERS_PER_SECOND``/``_MINUTE``/``_DAY``) counted
  before sending, across processes: an order over a cap is refused and never sent.
- ``rows``: pure functions from Kite's rows to the OMS's ``OrderUpdate`` and ``Fill``,
  with Kite's JSON numbers (floats to kiteconnect) as exact ``Decimal`` and its
  timestamps aware in IST.

The token travels only in the Authorization header: it is in no log line, exception or
payload.
"""

from oms.brokers.kite.broker import NAME, KiteBroker
from oms.brokers.kite.errors import BrokerLoginNeeded, BrokerRateLimited
from oms.brokers.kite.rate import KiteOrderRate, kite_order_rate_reset
from oms.brokers.kite.rows import (
    autoslice_parent_id,
    fills_from_kite_trades,
    kite_decimal,
    kite_row,
    kite_time,
    order_id_from_tag,
    order_tag,
    update_from_autoslice,
    update_from_kite_order,
)

__all__ = [
    "NAME", "BrokerLoginNeeded", "BrokerRateLimited", "KiteBroker", "KiteOrderRate", "autoslice_parent_id",
    "fills_from_kite_trades", "kite_decimal", "kite_order_rate_reset", "kite_row", "kite_time", "order_id_from_tag",
    "order_tag", "update_from_autoslice", "update_from_kite_order",
]  # fmt: skip
