"""``KiteBroker``: the broker interface (``oms.brokers.base.Broker``) over kiteconnect.

Placement: the order's parameters (``tag``, ``algo_id``, ``market_protection``; autoslice
above the freeze quantity), the order rate counted, then one request. When its outcome is
unknown (no answer, a dropped connection, a 502/503), the order is looked up by its tag
in Kite's order book before anything else: found, it was placed and its update is
returned; not found, ``BrokerUnavailable``: the order stays ``PUT ORDER REQ RECEIVED``
until a poll or a postback tells, and a later ``place(order, retry=True)`` looks it up
again before it sends anything. An order Kite has answered for (``broker_order_id``) is
never sent again.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable, Mapping
from decimal import Decimal
from functools import partial
from typing import Any

import requests
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from kiteconnect import KiteConnect

from oms import state
from oms.brokers.base import BrokerError, BrokerRejected, BrokerUnavailable
from oms.brokers.kite.errors import CAUGHT, BrokerLoginNeeded, BrokerRateLimited, outcome_of
from oms.brokers.kite.rate import KiteOrderRate
from oms.brokers.kite.rows import (
    autoslice_parent_id,
    fills_from_kite_trades,
    kite_integer,
    kite_row,
    order_tag,
    row_tags,
    update_from_autoslice,
    update_from_kite_order,
)
from oms.updates import Fill, OrderUpdate
from tradingportal.security import redact

logger = logging.getLogger(__name__)
NAME = "kite"
DEFAULT_MARKET_PROTECTION = Decimal(-1)  # the exchange's automatic protection
PROTECTED = ("MARKET", "SL-M")  # order types Kite sends only with market protection
NEVER_REACHED = "cancelled here: the order is not in Kite's order book (its placement never reached Kite)"
VARIETIES = ("regular", "amo")
LOGIN_NEEDED = "Kite login needed"
_sessions = threading.local()


def _number(value: Decimal | int) -> str:
    """A price or a protection as Kite takes it: plain digits, never ``1E+1``."""
    return f"{Decimal(value).normalize():f}"


def _protection(strategy: Any) -> Decimal:
    """The strategy's ``market_protection`` (blank: -1, automatic); -1 or a percentage in (0, 100]."""
    value = getattr(strategy, "market_protection", None)
    protection = DEFAULT_MARKET_PROTECTION if value is None else Decimal(value)
    if protection != -1 and not 0 < protection <= 100:
        raise BrokerRejected(
            f"market_protection {_number(protection)} of strategy {strategy} is neither -1 (automatic) nor a "
            "percentage above 0 up to 100, and Kite refuses unprotected market orders"
        )
    return protection


def _cancel(client: KiteConnect, *, variety: str, order_id: str) -> Any:
    return client.cancel_order(variety=variety, order_id=order_id)


def _outcome(exc: BaseException, client: KiteConnect) -> BrokerError:
    """``exc`` as the OMS's outcome; Kite refusing the token (``TokenException``: the
    morning's rollover) also marks it refused in the session store, so that no later call
    sends it again (the next ones are ``BrokerLoginNeeded`` without calling Kite)."""
    from kitesession.store import token_refused

    outcome = outcome_of(exc)
    if isinstance(outcome, BrokerLoginNeeded):
        # Not alerted here: the OMS alerts "Kite login needed" itself, with the order it was
        # found on (``oms.live``, ``oms.services``, reconciliation).
        token_refused(token=client.access_token or "", detail=str(outcome), source="kite rest", alert=False)
    return outcome


def _tick_size(order: Any) -> Decimal | None:
    tick = getattr(getattr(order, "instrument", None), "tick_size", None)
    return Decimal(tick) if tick else None


class KiteBroker:
    name = NAME
    local = False  # remote: the services call it after commit, outside any transaction

    def _client(self) -> KiteConnect:
        """A client with the token the Kite session store gives now (read on every call: a
        new login is used at once). No usable token (none saved, expired, refused by Kite
        before): ``BrokerLoginNeeded``, and Kite is not called."""
        from ingestion.credentials import kite_credentials
        from kitesession.store import session_state

        if not settings.KITE_API_KEY:
            raise BrokerRejected("Kite is not configured: set KITE_API_KEY")
        try:
            api_key, token = kite_credentials()
        except ImproperlyConfigured as exc:  # KITE_TOKEN_KEY cannot read the stored session
            raise BrokerRejected(f"Kite's stored session cannot be read: {exc}") from None
        if not token:
            why = session_state().detail.removeprefix(f"{LOGIN_NEEDED}: ")
            raise BrokerLoginNeeded(f"{LOGIN_NEEDED}: no access token to use ({why}); log in to Kite from the "
                                    "portal (/kite/login/)")  # fmt: skip
        client = KiteConnect(api_key, access_token=token, root=settings.KITE_API_URL,
                             timeout=settings.KITE_REQUEST_TIMEOUT)  # fmt: skip
        # One connection pool per thread, kept from call to call.
        session = getattr(_sessions, "session", None)
        if session is None:
            session = _sessions.session = requests.Session()
        client.reqsession = session
        return client

    def _call(self, call: Callable[[KiteConnect], Any], client: KiteConnect | None = None) -> Any:
        client = client or self._client()
        try:
            return call(client)
        except CAUGHT as exc:
            raise _outcome(exc, client) from exc

    # --- placing ---------------------------------------------------------------------------------

    def place(self, order: Any, *, freeze_quantity: int | None = None, retry: bool = False,
              allow_autoslice: bool | None = None) -> OrderUpdate:  # fmt: skip
        """Send ``order`` (an ``oms.models.Order``, with its strategy) to Kite.

        ``freeze_quantity``: the exchange's limit per order for the instrument (above it, the
        order is sliced by Kite when ``allow_autoslice`` (default: the strategy's) allows it,
        else refused). ``retry``: the order may have been sent before with an unknown outcome:
        it is sent only when Kite's order book does not have it."""
        if order.broker_order_id:
            logger.warning(
                "order %s is at Kite already as %s: not sent again", order.pk, order.broker_order_id
            )
            return self.find(order) or OrderUpdate(broker_order_id=order.broker_order_id)
        if order.variety not in VARIETIES:
            raise BrokerRejected(f"{order.variety} orders are not supported through the Kite broker")
        params = self._place_params(order)
        slices = math.ceil(order.quantity / freeze_quantity) if freeze_quantity else 1
        if allow_autoslice is None:
            allow_autoslice = bool(getattr(order.strategy, "allow_autoslice", False))
        if slices > 1 and not allow_autoslice:
            raise BrokerRejected(
                f"quantity {order.quantity} is above the exchange's freeze quantity {freeze_quantity} for "
                f"{order.exchange}:{order.tradingsymbol}: send at most {freeze_quantity} an order, or allow "
                "autoslice on the strategy"
            )
        client = self._client()
        if retry:
            try:
                found = self.find(order, client=client)
            except BrokerRejected as exc:  # the token, the rate: Kite may have it; nothing is sent
                raise BrokerUnavailable(
                    f"Kite's order book could not be read ({exc}): not sent again"
                ) from exc
            if found is not None:
                logger.info(
                    "order %s is at Kite already as %s: not sent again", order.pk, found.broker_order_id
                )
                return found
        KiteOrderRate(client.api_key).admit(orders=slices)
        try:
            if slices > 1:
                return self._sliced(order, client.place_autoslice_order(**params))
            broker_order_id = str(client.place_order(**params))
        except CAUGHT as exc:
            outcome = _outcome(exc, client)
            if not isinstance(outcome, BrokerUnavailable):
                logger.warning("Kite refused order %s: %s", order.pk, outcome)
                raise outcome from exc
            logger.warning("order %s: %s; looking for its tag %s in Kite's order book", order.pk, outcome,
                           params["tag"])  # fmt: skip
            found = self._find_quietly(order)
            if found is None:
                raise outcome from exc
            logger.info("order %s was placed at Kite as %s after all", order.pk, found.broker_order_id)
            return found
        logger.info("order %s placed at Kite as %s (tag %s)", order.pk, broker_order_id, params["tag"])
        return OrderUpdate(
            broker_order_id=broker_order_id, payload={"order_id": broker_order_id, "tag": params["tag"]}
        )

    def _place_params(self, order: Any) -> dict[str, Any]:
        params: dict[str, Any] = {
            "variety": order.variety, "exchange": order.exchange, "tradingsymbol": order.tradingsymbol,
            "transaction_type": order.transaction_type, "quantity": int(order.quantity), "product": order.product,
            "order_type": order.order_type, "validity": order.validity, "tag": order_tag(order.pk),
        }  # fmt: skip
        if order.order_type in ("LIMIT", "SL"):
            params["price"] = _number(order.price)
        if order.order_type in ("SL", "SL-M"):
            params["trigger_price"] = _number(order.trigger_price)
        if order.validity == "TTL":
            params["validity_ttl"] = int(order.validity_ttl)
        if order.order_type in PROTECTED:
            params["market_protection"] = _number(_protection(order.strategy))
        algo_id = str(getattr(order.strategy, "algo_id", "") or "").strip()
        if algo_id:
            params["algo_id"] = algo_id
        return params

    def _sliced(self, order: Any, data: Mapping[str, Any]) -> OrderUpdate:
        """The answer to an autoslice placement: the parent id, and a child per slice (an
        order id, or the error that refused that slice)."""
        parent = str(data["order_id"])
        children = [c for c in data.get("children") or [] if isinstance(c, dict)]
        errors = [c["error"] for c in children if c.get("error")]
        placed = [c for c in children if c.get("order_id")]
        reasons = "; ".join(
            sorted({redact(str(e.get("message") if isinstance(e, dict) else e)) for e in errors})
        )
        if not placed:
            raise BrokerRejected(
                f"Kite refused every slice of the order: {reasons or 'no reason given'}"[:2000]
            )
        logger.info("order %s placed at Kite as %s in %s slices, %s refused", order.pk, parent, len(placed),
                    len(errors))  # fmt: skip
        message = (
            f"{len(errors)} of {len(children)} slices refused by Kite: {reasons}"[:2000] if errors else ""
        )
        return OrderUpdate(broker_order_id=parent, status_message=message, payload=dict(data))

    def _find_quietly(self, order: Any) -> OrderUpdate | None:
        try:
            return self.find(order)
        except (BrokerRejected, BrokerUnavailable) as exc:  # any failure: the outcome stays unknown
            logger.warning("order %s: Kite's order book could not be read either (%s): outcome unknown", order.pk,
                           exc)  # fmt: skip
            return None

    # --- our order in Kite's books -----------------------------------------------------------------

    def _rows_of(self, order: Any, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The rows of Kite's order book that are ``order``'s: its tag, Kite's id or (an
        autosliced order) its slices, on its instrument and side."""
        tag, known = order_tag(order.pk), order.broker_order_id
        ours = [
            row for row in rows
            if tag in row_tags(row) or (known and known in (str(row.get("order_id")), autoslice_parent_id(row)))
        ]  # fmt: skip
        mine = []
        for row in ours:
            fields = (
                row.get("exchange"),
                row.get("tradingsymbol"),
                row.get("transaction_type"),
                row.get("product"),
            )
            if fields != (order.exchange, order.tradingsymbol, order.transaction_type, order.product):
                logger.error("Kite order %s carries the tag of order %s but not its instrument, side or product: "
                             "not taken as ours", row.get("order_id"), order.pk)  # fmt: skip
                continue
            mine.append(row)
        return mine

    def find(self, order: Any, *, client: KiteConnect | None = None) -> OrderUpdate | None:
        """``order`` as Kite's order book has it now, with its fills; None when Kite does not
        have it. ``BrokerUnavailable`` when Kite cannot be asked (nothing is known then)."""
        rows = self._rows_of(order, self._call(lambda c: c.orders(), client))
        if not rows:
            return None
        parent = next((p for p in map(autoslice_parent_id, rows) if p), None)
        if parent is not None:
            update = update_from_autoslice(parent, rows, quantity=order.quantity)
            if any(kite_integer(row.get("filled_quantity")) for row in rows):
                slices = {str(row["order_id"]): parent for row in rows if autoslice_parent_id(row) == parent}
                update.fills = self._fills(order, lambda c: c.trades(), slices)
            return update
        if len(rows) > 1:
            logger.error("%s Kite orders carry the tag of order %s: the first is taken", len(rows), order.pk)
        row = rows[0]
        update = update_from_kite_order(row, tick_size=_tick_size(order))
        if kite_integer(row.get("filled_quantity")):
            broker_order_id = str(row["order_id"])
            own = {broker_order_id: broker_order_id}
            update.fills = self._fills(order, lambda c: c.order_trades(broker_order_id), own)
        return update

    def _fills(self, order: Any, read: Callable[[KiteConnect], Any], owners: Mapping[str, str]) -> list[Fill]:
        """``order``'s fills from the trades ``read`` returns: those of the Kite orders in
        ``owners`` (Kite order id -> the id ``order`` has at Kite), at its tick places."""
        try:
            rows = [row for row in self._call(read) if str(row.get("order_id")) in owners]
        except BrokerUnavailable as exc:
            logger.warning("Kite's trades of order %s could not be read (%s): its fills come with the next poll",
                           order.pk, exc)  # fmt: skip
            return []
        tick = _tick_size(order)
        ticks = {kite_integer(row.get("instrument_token")) or 0: tick for row in rows} if tick else None
        return [
            fill
            for fills in fills_from_kite_trades(rows, tick_sizes=ticks, parents=owners).values()
            for fill in fills
        ]

    # --- modifying and cancelling ------------------------------------------------------------------

    def _broker_order_id(self, order: Any) -> str:
        if order.broker_order_id:
            return str(order.broker_order_id)
        found = self.find(order)
        if found is None or not found.broker_order_id:
            raise BrokerUnavailable(
                f"order {order.pk} is not in Kite's order book (yet): its outcome is unknown"
            )
        return found.broker_order_id

    def modify(self, order: Any, *, quantity: int | None, price: Decimal | None,
               trigger_price: Decimal | None) -> OrderUpdate:  # fmt: skip
        """Change a working order at Kite. The new values are returned as sent; Kite's next
        update of the order (a poll, a postback) says what the exchange made of them."""
        broker_order_id = self._broker_order_id(order)
        params: dict[str, Any] = {
            "variety": order.variety, "order_id": broker_order_id, "order_type": order.order_type,
            "quantity": int(quantity if quantity is not None else order.quantity), "validity": order.validity,
        }  # fmt: skip
        if order.order_type in ("LIMIT", "SL"):
            params["price"] = _number(price if price is not None else order.price)
        if order.order_type in ("SL", "SL-M"):
            params["trigger_price"] = _number(
                trigger_price if trigger_price is not None else order.trigger_price
            )
        if order.order_type in PROTECTED:
            params["market_protection"] = _number(_protection(order.strategy))
        self._call(lambda c: c.modify_order(**params))
        logger.info("order %s (Kite %s) modified", order.pk, broker_order_id)
        return OrderUpdate(broker_order_id=broker_order_id, quantity=quantity, price=price, trigger_price=trigger_price,
                           payload={"order_id": broker_order_id, "modify": {k: str(v) for k, v in params.items()}})  # fmt: skip

    def cancel(self, order: Any) -> OrderUpdate:
        """Ask Kite to cancel ``order`` (an autosliced one: each of its working slices). It is
        ``CANCEL PENDING`` until Kite's next update says ``CANCELLED`` (or that a fill won).

        An order Kite has not answered for (its placement's outcome unknown) is looked up by
        its tag first: not in Kite's order book, it never reached Kite and is ``CANCELLED``
        here; finished there already, Kite's row is the answer."""
        broker_order_id, found = order.broker_order_id, None
        if not broker_order_id:
            found = self.find(order)
            if found is None:
                logger.info("order %s is not in Kite's order book: cancelled here", order.pk)
                return OrderUpdate(status=state.CANCELLED, status_message=NEVER_REACHED)
            if not found.broker_order_id or (found.status and state.is_terminal(found.status)):
                return found
            broker_order_id = found.broker_order_id
        try:
            self._call(partial(_cancel, variety=order.variety, order_id=broker_order_id))
        except (BrokerLoginNeeded, BrokerRateLimited):
            raise
        except BrokerRejected as refused:
            # An autosliced order's id is not an order at Kite: its slices are.
            for child in self._working_slices(order, broker_order_id, refused):
                self._call(partial(_cancel, variety=order.variety, order_id=child))
        logger.info("order %s (Kite %s): cancel sent", order.pk, broker_order_id)
        return OrderUpdate(broker_order_id=broker_order_id, status=state.CANCEL_PENDING,
                           status_message="cancel sent to Kite", payload={"order_id": broker_order_id},
                           fills=found.fills if found is not None else [])  # fmt: skip

    def _working_slices(self, order: Any, parent: str, refused: BrokerRejected) -> list[str]:
        """The slices of ``parent`` still working at Kite; ``refused`` is raised again when
        ``parent`` has no slices (or none can be seen)."""
        try:
            rows = self._rows_of(order, self._call(lambda c: c.orders()))
        except BrokerUnavailable:
            raise refused from None
        slices = [row for row in rows if autoslice_parent_id(row) == parent]
        if not slices:
            raise refused
        working = [str(r["order_id"]) for r in slices if not state.is_terminal(str(r.get("status")).upper())]
        if not working:
            raise BrokerRejected(
                f"every slice of order {order.pk} at Kite is finished already: nothing to cancel"
            )
        return working

    # --- Kite's books, for polls and reconciliation -------------------------------------------------

    def orders(self) -> list[dict[str, Any]]:
        """Today's order book (each order's latest row), numbers as Decimal, times aware."""
        return kite_row(self._call(lambda c: c.orders()))

    def trades(self) -> list[dict[str, Any]]:
        """Today's trades, numbers as Decimal, times aware."""
        return kite_row(self._call(lambda c: c.trades()))

    def positions(self) -> list[dict[str, Any]]:
        """The net positions (Kite's ``net`` list), numbers as Decimal."""
        return kite_row(self._call(lambda c: c.positions()).get("net", []))
