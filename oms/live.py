"""LIVE orders at Kite: sending after commit, placements whose outcome is unknown, retries,
and Kite's order rows from postbacks and the ticker.

Sending (``order_send``): a LIVE order is handed to Kite only after its placement has
committed, outside any transaction (a call can take ``KITE_REQUEST_TIMEOUT`` seconds; no row
lock is held meanwhile). A claim in the cache (``oms:sending:<id>``) makes every send, retry
and cancel of one unknown order take turns, so two requests never send it twice. Kite's
answer is applied through the one update service:

- placed: Kite's order id (and, when Kite's answer was lost but its order book has the
  order's tag, its state and fills);
- ``BrokerLoginNeeded``: ``REJECTED`` "Kite login needed", with the Kite-login alert (no
  retry with the dead token);
- ``BrokerRateLimited`` (Kite's order caps, counted before sending, or its HTTP 429):
  ``REJECTED`` with ``risk_rule`` ``rate_limit``, answered like the pre-trade rate rule;
- ``BrokerRejected``: ``REJECTED`` with Kite's message (and the rejected-order alert);
- ``BrokerUnavailable`` (no answer, and Kite's order book could not tell either): the
  order stays ``PUT ORDER REQ RECEIVED`` with a ``broker_error`` event "unknown at broker"
  until Kite's order book (a poll, reconciliation), a postback or a retry tells.

A retry (``order_retry``: the same request replayed with its ``Idempotency-Key``, or the
kill switch keeping a square-off up) looks the order up by its tag first; found, Kite's
state is applied; not found, the order is checked by the risk rules again and sent once
(refused, it ends ``CANCELLED``: it never reached Kite and is not sent again).

Kite's order rows (``order_update_from_kite``: postbacks, the ticker's order messages)
are matched to our order by Kite's order id, else by our tag (an order whose placement
answer was lost); a slice of an autosliced order is recorded on its parent, whose status
follows all its slices (``KiteBroker.find``, the poll), never one slice's.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.db import connection, transaction
from django.utils import timezone

from oms import state
from oms.brokers.base import BrokerRejected, BrokerUnavailable
from oms.brokers.kite import (
    BrokerLoginNeeded,
    BrokerRateLimited,
    KiteBroker,
    autoslice_parent_id,
    order_id_from_tag,
    update_from_kite_order,
)
from oms.brokers.kite.rows import kite_integer, row_tags
from oms.models import Order, OrderEvent
from oms.risk import Refusal
from oms.updates import Applied, OrderUpdate, clean_payload, order_update
from tradingportal.security import redact

logger = logging.getLogger(__name__)
KITE = "kite"
SEND_CLAIM = "oms:sending:{}"
SQUARE_OFF_SOURCES = ("kill_switch", "risk_monitor", "mis_square_off")
UNKNOWN_AT_BROKER = (
    "unknown at broker: {reason}. The order stays PUT ORDER REQ RECEIVED until Kite's order book (a poll), a "
    "postback or a retry (the same request with the same Idempotency-Key) says; it is never sent twice"
)


@dataclass(frozen=True)
class Sent:
    order: Order
    refusal: Refusal | None = None  # refused for our own rate rule (Kite's caps, HTTP 429)


def is_square_off(order: Order) -> bool:
    """A system square-off (the kill switch, the risk monitor, the MIS square-off): only the
    market rules apply to it, and above the freeze quantity it goes out sliced."""
    return order.placed_by_id is None and order.source in SQUARE_OFF_SOURCES


def is_remote(order: Order) -> bool:
    return order.broker != "paper"


def unknown_at_broker(order: Order) -> bool:
    """A remote order that Kite has not answered for: sent with an outcome unknown, or not
    sent at all (a process that stopped between the commit and the send)."""
    return is_remote(order) and order.status == state.PUT_ORDER_REQ_RECEIVED and not order.broker_order_id


# --- the claim: one send (or retry, or cancel of an unknown order) at a time --------------------


def _lease() -> float:
    # Longer than a send can take: the placement, the lookup by tag and the order's trades.
    return max(60.0, 4 * settings.KITE_REQUEST_TIMEOUT)


def send_claim(order_id: int) -> bool | None:
    """Take the claim on sending ``order_id``: True taken, False held by another request,
    None when it cannot be known (the cache is down: nothing is sent then)."""
    try:
        return bool(cache.add(SEND_CLAIM.format(order_id), timezone.now().isoformat(), timeout=_lease()))
    except Exception:  # noqa: BLE001 - the cache (Redis) is unreachable
        logger.exception("the send claim of order %s cannot be taken: the cache is unreachable", order_id)
        return None


def send_release(order_id: int) -> None:
    try:
        cache.delete(SEND_CLAIM.format(order_id))
    except Exception:  # noqa: BLE001 - it expires by itself (the lease)
        logger.exception("the send claim of order %s could not be released; it expires by itself", order_id)


# --- sending ----------------------------------------------------------------------------------


def order_send(order: Order, *, actor: str, freeze_quantity: int | None = None, allow_autoslice: bool = False,
               retry: bool = False) -> Sent:  # fmt: skip
    """Hand ``order`` (committed, ``PUT ORDER REQ RECEIVED``) to Kite and apply the answer.
    Inside a caller's transaction the send waits for its commit (the order is answered as
    it is now)."""
    if connection.in_atomic_block:
        order_id = order.pk

        def later() -> None:
            order_send(Order.objects.select_related("strategy", "instrument").get(pk=order_id), actor=actor,
                       freeze_quantity=freeze_quantity, allow_autoslice=allow_autoslice, retry=retry)  # fmt: skip

        transaction.on_commit(later)
        return Sent(order)
    claimed = send_claim(order.pk)
    if not claimed:
        if claimed is None:
            record(order, OrderEvent.Kind.BROKER_ERROR, "not sent: the cache is unreachable, so the send cannot be "
                   "claimed; retry the request (same Idempotency-Key) when it is back", actor=actor)  # fmt: skip
        return Sent(order)
    try:
        return _send_claimed(order, actor=actor, freeze_quantity=freeze_quantity, allow_autoslice=allow_autoslice,
                             retry=retry)  # fmt: skip
    finally:
        send_release(order.pk)


def _send_claimed(order: Order, *, actor: str, freeze_quantity: int | None, allow_autoslice: bool,
                  retry: bool) -> Sent:  # fmt: skip
    refusal = None
    login_needed = ""
    try:
        update = KiteBroker().place(order, freeze_quantity=freeze_quantity, retry=retry,
                                    allow_autoslice=allow_autoslice)  # fmt: skip
    except BrokerLoginNeeded as exc:
        login_needed = str(exc)
        update = OrderUpdate(status=state.REJECTED, status_message=str(exc), alert=False)
    except BrokerRateLimited as exc:
        refusal = Refusal(rule="rate_limit", detail=str(exc))
        update = OrderUpdate(status=state.REJECTED, status_message=str(exc), rule="rate_limit", alert=False)
    except BrokerRejected as exc:
        update = OrderUpdate(status=state.REJECTED, status_message=str(exc))
    except BrokerUnavailable as exc:
        logger.warning("order %s: %s", order.pk, exc)
        return Sent(
            record(order, OrderEvent.Kind.BROKER_ERROR, UNKNOWN_AT_BROKER.format(reason=exc), actor=actor)
        )
    except Exception as exc:  # noqa: BLE001 - the same: Kite may have it; never sent twice
        logger.exception("placing order %s at Kite failed", order.pk)
        return Sent(record(order, OrderEvent.Kind.BROKER_ERROR, UNKNOWN_AT_BROKER.format(reason=type(exc).__name__),
                           actor=actor))  # fmt: skip
    result = order_update(order_id=order.pk, update=update, source=OrderEvent.Source.KITE, actor=actor)
    assert result.order is not None
    if login_needed:
        kite_login_alert(detail=login_needed, order=result.order)
    return Sent(result.order, refusal)


def kite_login_alert(*, detail: str, order: Order | None = None) -> None:
    """Kite refused the token: the desk is alerted (after commit; never raises)."""
    from alerts.conditions import alert_kite_login_needed

    transaction.on_commit(lambda: alert_kite_login_needed(detail=detail, order=order))


def record(
    order: Order, kind: str, message: str, *, actor: str, source: str = OrderEvent.Source.KITE
) -> Order:
    """An audit event that changes nothing on the order."""
    OrderEvent.objects.create(
        order=order, broker_order_id=order.broker_order_id or "", at=timezone.now(), kind=kind, source=source,
        actor=actor[:150], old_status=order.status, new_status=order.status, message=redact(message),
    )  # fmt: skip
    return order


# --- retries of unknown placements ------------------------------------------------------------


def last_event_at(order: Order) -> Any:
    """When the order's audit trail last moved (its last attempt, for an unknown one)."""
    return OrderEvent.objects.filter(order=order).order_by("-at", "-id").values_list("at", flat=True).first()


def order_retry(*, order_id: int, actor: str) -> Sent:
    """Settle a LIVE order whose placement's outcome is unknown: Kite's order book is read
    for its tag; found, Kite's state is applied; not found, the order is checked by the risk
    rules again (its own quantity not counted twice) and sent, once. Refused then, it ends
    ``CANCELLED`` (it never reached Kite). An order that is not unknown, or that another
    request is sending right now, is answered as it is."""
    from oms.selectors import freeze_quantity_of

    order = Order.objects.select_related("strategy", "instrument").get(pk=order_id)
    if not unknown_at_broker(order):
        return Sent(order)
    if connection.in_atomic_block:  # Kite is never called inside a transaction: after the caller's commit
        transaction.on_commit(lambda: order_retry(order_id=order_id, actor=actor))
        return Sent(order)
    if not send_claim(order.pk):
        return Sent(order)
    try:
        order.refresh_from_db()
        if not unknown_at_broker(order):
            return Sent(order)
        try:
            found = KiteBroker().find(order)
        except BrokerLoginNeeded as exc:
            kite_login_alert(detail=str(exc), order=order)
            return Sent(record(order, OrderEvent.Kind.BROKER_ERROR, f"not retried: {exc}", actor=actor))
        except (BrokerRejected, BrokerUnavailable) as exc:
            return Sent(record(order, OrderEvent.Kind.BROKER_ERROR,
                               f"not retried: Kite's order book could not be read ({exc})", actor=actor))  # fmt: skip
        if found is not None:
            logger.info("order %s was at Kite after all as %s", order.pk, found.broker_order_id)
            result = order_update(order_id=order.pk, update=found, source=OrderEvent.Source.KITE, actor=actor)
            assert result.order is not None
            return Sent(result.order)
        refusal = _checked_again(order, actor=actor)
        if refusal is not None:
            order.refresh_from_db()
            return Sent(order, refusal)
        return _send_claimed(order, actor=actor, freeze_quantity=freeze_quantity_of(instrument=order.instrument),
                             allow_autoslice=order.strategy.allow_autoslice or is_square_off(order), retry=True)  # fmt: skip
    finally:
        send_release(order.pk)


def _checked_again(order: Order, *, actor: str) -> Refusal | None:
    """The risk rules on an order about to be sent again (the kill switch may have been
    engaged since); refused, it ends here, never sent."""
    from oms.risk import risk_check
    from oms.services import locked_strategy, order_request_of, risk_context

    with transaction.atomic():
        strategy = locked_strategy(pk=order.strategy_id)
        ctx = risk_context(strategy=strategy, instrument=order.instrument, request=order_request_of(order),
                           exclude_order=order.pk, square_off=is_square_off(order))  # fmt: skip
        refusal = risk_check(ctx)
        if refusal is None:
            return None
        record(order, OrderEvent.Kind.RISK_REJECTED, f"{refusal.rule}: {refusal.detail}", actor=actor,
               source=OrderEvent.Source.RISK)  # fmt: skip
        order_update(order_id=order.pk, source=OrderEvent.Source.RISK, actor=actor, update=OrderUpdate(
            status=state.CANCELLED, status_message=f"not in Kite's order book and not sent again: {refusal.rule}: "
                                                   f"{refusal.detail}"[:2000]))  # fmt: skip
        return refusal


# --- Kite's order rows: postbacks and the ticker ------------------------------------------------


def _same_contract(order: Order, row: Mapping[str, Any]) -> bool:
    fields = (row.get("exchange"), row.get("tradingsymbol"), row.get("transaction_type"), row.get("product"))
    return fields == (order.exchange, order.tradingsymbol, order.transaction_type, order.product)


def kite_order_of(row: Mapping[str, Any]) -> tuple[Order | None, bool]:
    """Our order a Kite order row is about, and whether the row is one slice of it (an
    autosliced order): by Kite's order id, by the slice's parent id, else by our tag when
    Kite's id is not known here yet (the placement's answer was lost)."""
    orders = Order.objects.filter(broker=KITE).select_related("instrument", "strategy")
    broker_order_id = str(row.get("order_id") or "")
    parent = autoslice_parent_id(row)
    if broker_order_id:
        found = orders.filter(broker_order_id=broker_order_id).first()
        if found is not None:
            return found, False
    if parent:
        found = orders.filter(broker_order_id=parent).first()
        if found is not None:
            return found, True
    ours = next((pk for pk in map(order_id_from_tag, row_tags(row)) if pk is not None), None)
    found = orders.filter(pk=ours).first() if ours is not None else None
    if found is None:
        return None, False
    if not _same_contract(found, row):
        logger.error("Kite order %s carries the tag of order %s but not its instrument, side or product: not ours",
                     broker_order_id, found.pk)  # fmt: skip
        return None, False
    if parent:
        return found, True  # a slice of our order whose parent id we have not heard yet
    if found.broker_order_id:
        # A second Kite order with our tag: never applied to ours (reconciliation reports it).
        logger.error("Kite order %s carries the tag of order %s, which is Kite's %s", broker_order_id, found.pk,
                     found.broker_order_id)  # fmt: skip
        return None, False
    return found, False


def order_update_from_kite(*, data: Mapping[str, Any], source: str) -> Applied:
    """A Kite order row (a postback, a ticker order message) through the update service:
    Kite's status and message, its ids, the row's sequence (an older row never undoes a newer
    one) and, for a modified order, its new values."""
    order, is_slice = kite_order_of(data)
    if order is not None and is_slice:
        return _slice_noted(order, data, source=source)
    tick_size = order.instrument.tick_size if order is not None else None
    update = update_from_kite_order(data, tick_size=tick_size)
    return order_update(update=update, source=source, broker=KITE, actor=source,
                        order_id=order.pk if order is not None else None)  # fmt: skip


def _slice_noted(order: Order, row: Mapping[str, Any], *, source: str) -> Applied:
    """One slice's row, recorded on its parent; the parent's status follows all its slices
    (``KiteBroker.find``, the poll), never one slice's."""
    status = str(row.get("status") or "").upper()
    filled, quantity = kite_integer(row.get("filled_quantity")) or 0, kite_integer(row.get("quantity")) or 0
    message = (f"slice {row.get('order_id')} of this autosliced order: {status} ({filled}/{quantity} filled); the "
               "order follows all its slices (the next poll)")  # fmt: skip
    with transaction.atomic():
        event = OrderEvent.objects.create(
            order=order, broker_order_id=order.broker_order_id or "", at=timezone.now(), kind=OrderEvent.Kind.STATUS,
            source=source, actor=source, old_status=order.status, new_status=order.status, message=message,
            payload=clean_payload(dict(row)),
        )  # fmt: skip
    return Applied(order=order, events=[event])
