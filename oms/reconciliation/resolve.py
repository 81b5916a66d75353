"""A person's resolution of a reconciliation issue: accept the broker's side, keep ours (with
a note), or dismiss.

Accepting the broker's side goes through the one update service (source ``reconcile``,
the person as the actor) where there is something of ours to change:

- ``order_closed``, ``status_mismatch``, ``filled_quantity``: the fills the broker has
  and we do not, as one fill inferred from Kite's filled quantity and average price
  (trade id ``reconcile:<issue id>``; its price is what makes our average Kite's), then
  Kite's status through the state machine. Refused when the order changed since the run
  found the difference (the next run says whether it remains), when Kite has fewer fills
  than we do (recorded fills are never removed), or when the state machine refuses the
  status (e.g. an order finished here and working at Kite: act at Kite, then dismiss);
- ``order_missing``: the order is not at Kite: it is closed here as ``CANCELLED``;
- ``fill_missing``: Kite's trade is applied as a fill (refused when the update service
  refuses it: an overfill, a fill on an order rejected here);
- ``fill_conflict``: refused (a recorded fill is never rewritten);
- ``order_unknown``, ``order_duplicate`` and the position kinds: nothing of ours to change
  (orders and positions move only with fills): what was accepted is recorded on the issue.

Keeping ours needs a note. Every resolution records who, when and the note on the issue;
for an issue about one of our orders, also an audit event on the order. All in one
transaction with the issue row locked: a resolution the update service refuses changes
nothing.
"""

from __future__ import annotations

import logging
from datetime import datetime
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from typing import Any

from django.db import transaction
from django.utils import timezone

from oms import state
from oms.brokers.kite import NAME as KITE
from oms.models import Order, OrderEvent, ReconciliationIssue
from oms.reconciliation.differences import (
    FILL_CONFLICT,
    FILL_MISSING,
    ORDER_KINDS,
    ORDER_MISSING,
)
from oms.updates import Fill, OrderUpdate, order_update

logger = logging.getLogger(__name__)
Resolution = ReconciliationIssue.Resolution
PRICE_PLACES = Decimal("0.0001")
# What the update service records when it does not apply something.
REFUSED = {OrderEvent.Kind.ILLEGAL_TRANSITION, OrderEvent.Kind.STALE_UPDATE, OrderEvent.Kind.WARNING,
           OrderEvent.Kind.OVERFILL, OrderEvent.Kind.CONFLICTING_FILL, OrderEvent.Kind.DUPLICATE_FILL,
           OrderEvent.Kind.MODIFY_REFUSED, OrderEvent.Kind.UNKNOWN_ORDER}  # fmt: skip
LABELS: dict[str, str] = {Resolution.ACCEPT_BROKER: "accepted the broker's side", Resolution.ACCEPT_OURS: "kept ours",
          Resolution.DISMISSED: "dismissed"}  # fmt: skip


class ResolutionError(Exception):
    """The resolution cannot be made; the message says why and what to do instead."""


def _decimal(value: Any) -> Decimal | None:
    try:
        number = Decimal(str(value))
    except (InvalidOperation, ValueError):
        return None
    return number if number.is_finite() else None


def _inferred_fill(issue: ReconciliationIssue, order: Order) -> Fill | None:
    """The fill that makes ``order`` filled as Kite says (None: nothing is missing)."""
    theirs = int(issue.broker.get("filled_quantity") or 0)
    missing = theirs - order.filled_quantity
    if missing < 0:
        raise ResolutionError(
            f"Kite has {theirs} filled and we have {order.filled_quantity}: recorded fills are never removed. "
            "Keep ours with a note, or dismiss once it is put right at Kite."
        )
    if missing == 0:
        return None
    average = _decimal(issue.broker.get("average_price"))
    price = ((average * theirs - order.fill_value) / missing).quantize(PRICE_PLACES, rounding=ROUND_HALF_EVEN) if (
        average is not None) else None  # fmt: skip
    if price is None or price <= 0:
        raise ResolutionError(
            f"Kite's average price {issue.broker.get('average_price')!r} and our fills give no price for the "
            f"{missing} missing: keep ours with a note, or dismiss"
        )
    return Fill(trade_id=f"reconcile:{issue.pk}", quantity=missing, price=price, at=timezone.now())


def _order_of(issue: ReconciliationIssue, *, lock: bool = False) -> Order | None:
    if issue.order_id is None:
        return None
    orders = Order.objects.select_for_update() if lock else Order.objects
    return orders.filter(pk=issue.order_id).first()


def _existing(order: Order | None) -> Order:
    if order is None:
        raise ResolutionError("the order this issue is about no longer exists")
    return order


def _unchanged(issue: ReconciliationIssue, order: Order | None) -> Order:
    """``order`` as the run saw it (an order difference is about its status and fills then)."""
    order = _existing(order)
    seen = (issue.ours.get("status"), issue.ours.get("filled_quantity"))
    if seen != (order.status, order.filled_quantity):
        raise ResolutionError(
            f"the order changed since this was found ({seen[0]}, {seen[1]} filled; now {order.status}, "
            f"{order.filled_quantity} filled): the next reconciliation run says whether a difference remains. "
            "Dismiss this one."
        )
    return order


def reconciliation_issue_check(*, issue: ReconciliationIssue, resolution: str, note: str) -> str | None:
    """Why ``resolution`` of ``issue`` cannot be made (None: it can be, as far as can be
    told before the update service has its say)."""
    if issue.resolved:
        return "this issue is resolved already"
    if resolution not in LABELS:
        return f"unknown resolution {resolution!r}; one of: {', '.join(LABELS)}"
    if resolution == Resolution.ACCEPT_OURS and not note.strip():
        return "say in the note why ours is right"
    if resolution != Resolution.ACCEPT_BROKER:
        return None
    try:
        if issue.kind == FILL_CONFLICT:
            raise ResolutionError(
                "a recorded fill is never rewritten: keep ours with a note, or dismiss once it is put right"
            )
        if issue.kind in ORDER_KINDS:
            order = _unchanged(issue, _order_of(issue))
            _inferred_fill(issue, order)
            theirs = str(issue.broker.get("status") or "")
            if theirs and not state.transition_allowed(order.status, theirs):
                raise ResolutionError(
                    f"the order cannot go from {order.status} to Kite's {theirs} (the state machine refuses it): "
                    "put it right at Kite (e.g. cancel the order there), then dismiss this issue"
                )
        elif issue.kind in (ORDER_MISSING, FILL_MISSING):
            order = _existing(_order_of(issue))
            if issue.kind == ORDER_MISSING and order.is_terminal:
                raise ResolutionError(f"the order is {order.status} already")
    except ResolutionError as exc:
        return str(exc)
    return None


def _apply(issue: ReconciliationIssue, update: OrderUpdate, *, actor: str) -> None:
    applied = order_update(
        order_id=issue.order_id, update=update, source=OrderEvent.Source.RECONCILE, broker=KITE, actor=actor
    )
    refused = [event for event in applied.events if event.kind in REFUSED]
    if applied.order is None or refused:
        reason = refused[0].message if refused else "the order no longer exists"
        raise ResolutionError(f"the update service did not apply the broker's side: {reason}")
    wanted = update.status
    if wanted and applied.order.status != wanted:
        raise ResolutionError(f"the order is {applied.order.status}, not Kite's {wanted}, after applying it")


def _accept_broker(issue: ReconciliationIssue, *, actor: str) -> bool:
    """Apply the broker's side where it changes something of ours; returns whether it did."""
    message = f"Kite's side accepted in reconciliation (issue {issue.pk}) by {actor}"
    payload = {"reconciliation_issue": issue.pk, "broker": issue.broker}
    if issue.kind in ORDER_KINDS:
        order = _unchanged(issue, _order_of(issue, lock=True))
        fill = _inferred_fill(issue, order)
        status = str(issue.broker.get("status") or "")
        update = OrderUpdate(fills=[fill] if fill else [], payload=payload,
                             status=status if status and status != order.status else None,
                             status_message=(str(issue.broker.get("status_message") or "") or message)
                             if status and status != order.status else "")  # fmt: skip
        _apply(issue, update, actor=actor)
        return True
    if issue.kind == ORDER_MISSING:
        order = _existing(_order_of(issue, lock=True))
        if order.is_terminal:
            raise ResolutionError(f"the order is {order.status} already")
        closed = f"not in Kite's order book: closed in reconciliation (issue {issue.pk}) by {actor}"
        _apply(
            issue, OrderUpdate(status=state.CANCELLED, status_message=closed, payload=payload), actor=actor
        )
        return True
    if issue.kind == FILL_MISSING:
        _existing(_order_of(issue, lock=True))
        broker = issue.broker
        price, quantity = _decimal(broker.get("price")), int(broker.get("quantity") or 0)
        if price is None or quantity <= 0 or not broker.get("trade_id"):
            raise ResolutionError("Kite's trade as recorded has no usable quantity, price or id")
        at = broker.get("at")
        fill = Fill(trade_id=str(broker["trade_id"]), quantity=quantity, price=price,
                    at=_parse_time(at) if isinstance(at, str) else None,
                    exchange_order_id=str(broker.get("exchange_order_id") or ""))  # fmt: skip
        _apply(issue, OrderUpdate(fills=[fill], payload=payload), actor=actor)
        return True
    if issue.kind == FILL_CONFLICT:
        raise ResolutionError(
            "a recorded fill is never rewritten: keep ours with a note, or dismiss once it is put right"
        )
    return False


def _parse_time(value: str) -> datetime | None:
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


def reconciliation_issue_resolve(
    *, issue_id: int, resolution: str, note: str = "", by: Any
) -> ReconciliationIssue:
    """Resolve issue ``issue_id`` as ``by`` (a user): see the module. ``ResolutionError``
    says why it cannot be made; nothing is changed then."""
    actor = by.get_username() if by is not None else "system"
    with transaction.atomic():
        issue = ReconciliationIssue.objects.select_for_update().filter(pk=issue_id).first()
        if issue is None:
            raise ResolutionError(f"there is no reconciliation issue {issue_id}")
        problem = reconciliation_issue_check(issue=issue, resolution=resolution, note=note)
        if problem:
            raise ResolutionError(problem)
        applied = _accept_broker(issue, actor=actor) if resolution == Resolution.ACCEPT_BROKER else False
        issue.resolved, issue.resolution, issue.note = True, resolution, note.strip()
        issue.resolved_by, issue.resolved_at = by, timezone.now()
        issue.save(update_fields=["resolved", "resolution", "note", "resolved_by", "resolved_at"])
        if issue.order_id and not applied:
            OrderEvent.objects.create(
                order_id=issue.order_id, at=issue.resolved_at, kind=OrderEvent.Kind.WARNING,
                source=OrderEvent.Source.RECONCILE, actor=actor[:150],
                message=f"reconciliation issue {issue.pk} ({issue.kind}): {LABELS[resolution]}"
                + (f": {issue.note}" if issue.note else ""),
            )  # fmt: skip
    logger.info("reconciliation issue %s (%s) resolved by %s: %s", issue.pk, issue.kind, actor, resolution)
    return issue
