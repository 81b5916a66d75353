"""One reconciliation run, and the schedule's runs every ``RECONCILE_SECONDS``."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, close_old_connections, connection, transaction
from django.utils import timezone

from oms import state
from oms.brokers.base import BrokerError
from oms.brokers.kite import NAME as KITE
from oms.brokers.kite import BrokerLoginNeeded, KiteBroker
from oms.models import Mode, Order, OrderEvent, ReconciliationIssue, ReconciliationRun, Strategy
from oms.poll import book_apply, book_match
from oms.reconciliation.differences import Difference, jsonable, order_differences, position_differences
from tradingportal.locks import LockHeld, named_lock
from tradingportal.logging import RepeatedFailure
from tradingportal.security import redact

logger = logging.getLogger(__name__)
LOCK = "oms-reconciliation"
ACTOR = "reconciliation"
Status = ReconciliationRun.Status
# What became of a difference this run found.
NEW, OPEN, RESOLVED, UNCONFIRMED = "new", "open", "resolved before", "unconfirmed"
_unreachable = RepeatedFailure(logger, "reading Kite's books for reconciliation")


@dataclass
class Report:
    """What a run did: its row (None when there was nothing to reconcile, or for a dry
    run), its counts, the differences it found (each with ``recorded``: new, open,
    resolved before or unconfirmed, and its ``issue``) and the fixes it applied (the
    audit events)."""

    status: str
    message: str = ""
    run: ReconciliationRun | None = None
    counts: dict[str, Any] = field(default_factory=dict)
    differences: list[dict[str, Any]] = field(default_factory=list)
    fixes: list[dict[str, Any]] = field(default_factory=list)
    dry_run: bool = False

    def as_dict(self) -> dict[str, Any]:
        run = self.run
        return jsonable({
            "run": run.pk if run else None, "status": self.status, "message": self.message, "dry_run": self.dry_run,
            "triggered_by": run.triggered_by if run else "", "started_at": run.started_at if run else None,
            "finished_at": run.finished_at if run else None, "error": run.error if run else "",
            "counts": {k: v for k, v in self.counts.items() if k != "found"},
            "differences": self.differences, "fixes": self.fixes,
        })  # fmt: skip


def _anything_live() -> bool:
    return (
        Strategy.objects.filter(mode=Mode.LIVE).exists()
        or Order.objects.filter(broker=KITE, status__in=sorted(state.PENDING | state.WORKING)).exists()
    )


def _finish(
    run: ReconciliationRun, status: str, *, counts: dict[str, Any] | None = None, error: str = ""
) -> None:
    run.status, run.finished_at, run.error = status, timezone.now(), error[:2000]
    if counts is not None:
        run.counts = counts
    run.save(update_fields=["status", "finished_at", "error", "counts"])


Books = tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]


def reconciliation_run(*, triggered_by: str, dry_run: bool = False) -> Report:
    """Compare Kite's orders, trades and positions with ours, now.

    Takes the reconciliation lock without waiting (``LockHeld``: another run is going on).
    Without a LIVE strategy or an open Kite order there is nothing to reconcile: Kite is not
    asked and no run is recorded. Otherwise the run is recorded (``ReconciliationRun``);
    when Kite's books cannot be read it ends ``unreachable`` with the reason, and nothing
    is applied. Else the poll applies what Kite's books prove (statuses, fills: audit
    events with source ``reconcile``), and every difference that remains, once two runs in
    a row have found it (the books are read one after another: a fill between two reads
    looks like a difference once), becomes a ``ReconciliationIssue``, unless the same one
    is open already (then it is marked seen) or was resolved before. A new issue alerts
    on commit. An unexpected error ends the run ``failed`` and is raised.

    ``dry_run``: the same, in a transaction that is rolled back: the report says what a
    run would fix and record; nothing is written, nothing alerted."""
    with named_lock(LOCK):
        if not _anything_live():
            return Report(status="skipped", message="nothing to reconcile: no LIVE strategy and no open Kite order",
                          dry_run=dry_run)  # fmt: skip
        if dry_run:
            return _dry_run(triggered_by)
        now = timezone.now()
        abandoned = ReconciliationRun.objects.filter(status=Status.RUNNING).update(
            status=Status.FAILED,
            finished_at=now,
            error="abandoned: its process ended before the run finished",
        )
        if abandoned:
            logger.warning("%s reconciliation runs were abandoned by their process", abandoned)
        run = ReconciliationRun.objects.create(started_at=now, triggered_by=triggered_by[:32])
        try:
            books = _read_books(run)
            return books if isinstance(books, Report) else _reconcile(run, books)
        except Exception as exc:
            logger.exception("reconciliation run %s failed", run.pk)
            _finish(run, Status.FAILED, error=redact(f"{type(exc).__name__}: {exc}"))
            raise


def _dry_run(triggered_by: str) -> Report:
    books = _read_books(None)
    if isinstance(books, Report):
        return books
    with transaction.atomic():
        run = ReconciliationRun.objects.create(started_at=timezone.now(), triggered_by=triggered_by[:32])
        report = _reconcile(run, books)
        transaction.set_rollback(True)
    report.run, report.dry_run = None, True
    report.message = f"dry run (nothing written): {report.message}"
    for difference in report.differences:
        if difference["recorded"] == NEW:
            difference["issue"] = None
    return report


def _read_books(run: ReconciliationRun | None) -> Books | Report:
    """Kite's order book, trades and net positions; a ``Report`` (the run ended
    ``unreachable``) when they cannot be read."""
    broker = KiteBroker()
    try:
        return broker.orders(), broker.trades(), broker.positions()
    except BrokerError as exc:
        _unreachable.failed(exc)
        message = str(exc)
        if run is not None:
            _finish(run, Status.UNREACHABLE, error=message)
        if isinstance(exc, BrokerLoginNeeded) and run is not None:
            from alerts.conditions import alert_kite_login_needed

            alert_kite_login_needed(detail=message)  # never raises
        return Report(status=Status.UNREACHABLE, message=f"Kite's books could not be read: {message}", run=run,
                      dry_run=run is None)  # fmt: skip


def _reconcile(run: ReconciliationRun, books: Books) -> Report:
    rows, trades, positions = books
    _unreachable.succeeded()
    poll = book_apply(
        book=book_match(rows=rows, trades=trades), source=OrderEvent.Source.RECONCILE, actor=ACTOR
    )
    differences = order_differences(book=poll.book)
    differences += position_differences(
        rows=positions, day=timezone.localdate(), tolerance=settings.RECONCILE_AVERAGE_TOLERANCE
    )
    previous = (
        ReconciliationRun.objects.filter(status=Status.OK)
        .exclude(pk=run.pk)
        .order_by("-started_at", "-id")
        .first()
    )
    confirmed = set(previous.counts.get("found", [])) if previous else set()
    with transaction.atomic():
        outcomes = _record(run, differences, confirmed)
        recorded = [outcome for outcome, _ in outcomes]
        counts = {
            **{f"broker_{name}": poll.counts[name] for name in ("orders", "trades")}, "broker_positions": len(positions),
            "matched": poll.counts["matched"], "fixed_statuses": poll.counts["statuses"],
            "fixed_fills": poll.counts["fills"], "differences": len(differences), "new_issues": recorded.count(NEW),
            "open_issues": recorded.count(OPEN), "resolved_before": recorded.count(RESOLVED),
            "unconfirmed": recorded.count(UNCONFIRMED), "found": sorted({d.fingerprint for d in differences}),
        }  # fmt: skip
        _finish(run, Status.OK, counts=counts)
    _prune()
    logger.info("reconciliation run %s: %s matched orders, %s fixes, %s differences (%s new issues)", run.pk,
                counts["matched"], len(poll.fixes), len(differences), counts["new_issues"])  # fmt: skip
    report = Report(status=Status.OK, run=run, message=_summary(counts), counts=counts)
    report.differences = [{**d.as_dict(), "recorded": outcome, "issue": issue} for d, (outcome, issue) in
                          zip(differences, outcomes, strict=True)]  # fmt: skip
    report.fixes = [{"order": e.order_id, "kind": e.kind, "old_status": e.old_status, "new_status": e.new_status,
                     "message": e.message} for e in poll.fixes]  # fmt: skip
    return report


def _summary(counts: dict[str, Any]) -> str:
    return (
        f"{counts['matched']} LIVE orders matched in Kite's book; fixed {counts['fixed_statuses']} statuses and "
        f"{counts['fixed_fills']} fills; {counts['differences']} differences: {counts['new_issues']} new issues, "
        f"{counts['open_issues']} open already, {counts['resolved_before']} resolved before, "
        f"{counts['unconfirmed']} to be confirmed by the next run"
    )


def _record(
    run: ReconciliationRun, differences: list[Difference], confirmed: set[str]
) -> list[tuple[str, int | None]]:
    """Each difference as an issue (see ``reconciliation_run``); returns (outcome, issue id) each."""
    prints = {d.fingerprint for d in differences}
    recorded = ReconciliationIssue.objects.filter(fingerprint__in=prints).order_by("resolved", "-created_at")
    known: dict[str, ReconciliationIssue] = {}
    for issue in recorded:
        known.setdefault(issue.fingerprint, issue)  # the open one first
    now = timezone.now()
    outcomes: list[tuple[str, int | None]] = []
    for difference in differences:
        existing = known.get(difference.fingerprint)
        if existing is not None and not existing.resolved:
            existing.seen_at = now
            existing.save(update_fields=["seen_at"])
            outcomes.append((OPEN, existing.pk))
        elif existing is not None:
            outcomes.append((RESOLVED, existing.pk))
        elif difference.fingerprint not in confirmed:
            outcomes.append((UNCONFIRMED, None))
        else:
            issue = _create(run, difference, now)
            known[difference.fingerprint] = issue
            outcomes.append((NEW, issue.pk))
    return outcomes


def _create(run: ReconciliationRun, difference: Difference, now: Any) -> ReconciliationIssue:
    try:
        with transaction.atomic():
            issue = ReconciliationIssue.objects.create(
                run=run, kind=difference.kind, fingerprint=difference.fingerprint, strategy_id=difference.strategy_id,
                order=difference.order, instrument_id=difference.instrument_id, exchange=difference.exchange[:16],
                tradingsymbol=difference.tradingsymbol[:64], ours=difference.ours, broker=difference.broker,
                created_at=now, seen_at=now,
            )  # fmt: skip
    except IntegrityError:  # recorded meanwhile (the unique open fingerprint decides)
        return ReconciliationIssue.objects.get(fingerprint=difference.fingerprint, resolved=False)
    logger.warning("reconciliation issue %s: %s on %s:%s (order %s)", issue.pk, issue.kind, issue.exchange,
                   issue.tradingsymbol, issue.order_id)  # fmt: skip
    transaction.on_commit(lambda: _alert(issue))
    return issue


def _alert(issue: ReconciliationIssue) -> None:
    from alerts.conditions import alert_reconciliation_issue

    alert_reconciliation_issue(issue=issue)  # never raises


def _prune() -> None:
    cutoff = timezone.now() - timedelta(days=settings.RECONCILE_KEEP_DAYS)
    ReconciliationRun.objects.filter(started_at__lt=cutoff, issues__isnull=True).delete()


# --- the schedule ------------------------------------------------------------------------------


def reconciliation_scheduled(*, sleep: Callable[[float], None] = time.sleep,
                             clock: Callable[[], float] = time.monotonic) -> list[dict[str, Any]]:  # fmt: skip
    """The schedule's task: django-q2 fires it once a minute (or every ``RECONCILE_SECONDS``
    / 60 minutes), and it runs the minute's runs ``RECONCILE_SECONDS`` apart (two, 30 s
    apart, by default). A run is skipped when another is going on (the lock) or began less
    than half a period ago (``manage.py reconcile``, or the previous task running late)."""
    period = settings.RECONCILE_SECONDS
    runs = 60 // period if period < 60 else 1
    started = clock()
    results: list[dict[str, Any]] = []
    own: list[int] = []  # this task's runs (another's within half a period skips one)
    for number in range(runs):
        wait = started + number * period - clock()
        if wait > 0:
            sleep(wait)
            if not connection.in_atomic_block:
                close_old_connections()  # the database may have gone away while it slept
        recent = timezone.now() - timedelta(seconds=period / 2)
        if ReconciliationRun.objects.filter(started_at__gt=recent).exclude(pk__in=own).exists():
            results.append({"status": "skipped", "message": "another run began less than half a period ago"})
            continue
        try:
            report = reconciliation_run(triggered_by="schedule")
        except LockHeld:
            results.append({"status": "skipped", "message": "another reconciliation is running"})
            continue
        if report.run is not None:
            own.append(report.run.pk)
        results.append({"run": report.run.pk if report.run else None, "status": report.status,
                        "message": report.message})  # fmt: skip
    return results
