"""The order state machine: one table of which status may follow which.

Statuses are Kite's, plus ``RISK REJECTED`` for orders refused before any broker saw
them. Every status change of an order goes through ``transition_allowed``; a pair not in
the table is refused (and recorded by the caller as an ``OrderEvent``), never applied.
Terminal statuses never change again. Fills are not transitions: they are applied by the
update service whatever the status (a fill may arrive after ``COMPLETE`` or
``CANCELLED``), bounded by the order's quantity.

Plain data and functions, free of Django (property-tested in tests/oms/test_state.py).
"""

from __future__ import annotations

PUT_ORDER_REQ_RECEIVED = "PUT ORDER REQ RECEIVED"
VALIDATION_PENDING = "VALIDATION PENDING"
OPEN_PENDING = "OPEN PENDING"
AMO_REQ_RECEIVED = "AMO REQ RECEIVED"
OPEN = "OPEN"
TRIGGER_PENDING = "TRIGGER PENDING"
MODIFY_VALIDATION_PENDING = "MODIFY VALIDATION PENDING"
MODIFY_PENDING = "MODIFY PENDING"
CANCEL_PENDING = "CANCEL PENDING"
COMPLETE = "COMPLETE"
CANCELLED = "CANCELLED"
REJECTED = "REJECTED"
RISK_REJECTED = "RISK REJECTED"

# Received by the broker, not yet working at the exchange.
PENDING = frozenset({PUT_ORDER_REQ_RECEIVED, VALIDATION_PENDING, OPEN_PENDING, AMO_REQ_RECEIVED})
# Working at the exchange: can fill, be modified or cancelled.
WORKING = frozenset({OPEN, TRIGGER_PENDING, MODIFY_VALIDATION_PENDING, MODIFY_PENDING, CANCEL_PENDING})
TERMINAL = frozenset({COMPLETE, CANCELLED, REJECTED, RISK_REJECTED})
ALL = PENDING | WORKING | TERMINAL
# Kite's postbacks also send UPDATE (a partial fill or a modification): not a status.
UPDATE = "UPDATE"

_ENDS = frozenset({COMPLETE, CANCELLED, REJECTED})
_MODIFYING = frozenset({MODIFY_VALIDATION_PENDING, MODIFY_PENDING})

TRANSITIONS: dict[str, frozenset[str]] = {
    PUT_ORDER_REQ_RECEIVED: frozenset(
        {VALIDATION_PENDING, OPEN_PENDING, AMO_REQ_RECEIVED, OPEN, TRIGGER_PENDING, CANCEL_PENDING}
    )
    | _ENDS,  # fmt: skip
    VALIDATION_PENDING: frozenset({OPEN_PENDING, AMO_REQ_RECEIVED, OPEN, TRIGGER_PENDING, CANCEL_PENDING})
    | _ENDS,
    OPEN_PENDING: frozenset({OPEN, TRIGGER_PENDING, CANCEL_PENDING}) | _ENDS,
    AMO_REQ_RECEIVED: frozenset({VALIDATION_PENDING, OPEN_PENDING, OPEN, TRIGGER_PENDING, CANCEL_PENDING})
    | _MODIFYING
    | _ENDS,
    OPEN: frozenset({TRIGGER_PENDING, CANCEL_PENDING}) | _MODIFYING | _ENDS,
    TRIGGER_PENDING: frozenset({OPEN, CANCEL_PENDING}) | _MODIFYING | _ENDS,
    MODIFY_VALIDATION_PENDING: frozenset({MODIFY_PENDING, OPEN, TRIGGER_PENDING, CANCEL_PENDING}) | _ENDS,
    MODIFY_PENDING: frozenset({OPEN, TRIGGER_PENDING, CANCEL_PENDING}) | _ENDS,
    # A cancel can be refused by the exchange (back to working) or overtaken by a fill.
    CANCEL_PENDING: frozenset({OPEN, TRIGGER_PENDING}) | _ENDS,
    COMPLETE: frozenset(),
    CANCELLED: frozenset(),
    REJECTED: frozenset(),
    RISK_REJECTED: frozenset(),
}
assert set(TRANSITIONS) == ALL


def is_terminal(status: str) -> bool:
    return status in TERMINAL


def transition_allowed(old: str, new: str) -> bool:
    """May an order in ``old`` move to ``new``? (Staying put is always allowed.)"""
    if old == new:
        return True
    return new in TRANSITIONS.get(old, frozenset())


def can_fill(status: str) -> bool:
    """Whether a fill may be applied to an order in ``status``.

    A fill is real money whatever the order's status says, so it is taken in every
    status a broker has seen, including after ``COMPLETE``/``CANCELLED`` (updates
    arrive out of order); never for an order no broker saw or one the broker rejected.
    """
    return status not in (RISK_REJECTED, REJECTED)


def status_after_fill(status: str, *, filled: int, quantity: int) -> str:
    """The status a fill implies: a fill proves acceptance (a pending order is working),
    and a fully filled order is complete."""
    if filled >= quantity and status != COMPLETE and transition_allowed(status, COMPLETE):
        return COMPLETE
    if status in PENDING and filled > 0:
        return OPEN
    return status
