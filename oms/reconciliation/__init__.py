"""Reconciliation: Kite's orders, trades and positions compared with ours for LIVE trading.

- ``run``: ``reconciliation_run(*, triggered_by)`` (one run, under a lock; a
  ``ReconciliationRun`` and its issues) and ``reconciliation_scheduled()`` (the
  django-q2 task: the minute's runs ``RECONCILE_SECONDS`` apart);
- ``differences``: what can differ (the kinds) and how each is named (its fingerprint);
- ``resolve``: a person's resolution (accept the broker's side, keep ours, dismiss).

The poll of Kite's books (``oms.poll``) runs inside every run: what Kite's books prove (a
status, a fill we missed) is applied through the update service first; what remains waits
for a person in the admin (``oms.reconciliation_admin``) and in the API
(``/api/reconciliation/runs/``, ``/api/reconciliation/issues/``).
"""

from oms.reconciliation.differences import KINDS, Difference
from oms.reconciliation.resolve import (
    ResolutionError,
    reconciliation_issue_check,
    reconciliation_issue_resolve,
)
from oms.reconciliation.run import LOCK, Report, reconciliation_run, reconciliation_scheduled

__all__ = [
    "KINDS", "LOCK", "Difference", "Report", "ResolutionError", "reconciliation_issue_check",
    "reconciliation_issue_resolve", "reconciliation_run", "reconciliation_scheduled",
]  # fmt: skip
