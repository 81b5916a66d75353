"""Writes to the instrument master: sync a dump, switch streaming on and off."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import date
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Q
from django.utils import timezone

from instruments.models import Instrument, Source, SyncRun
from instruments.presets import PRESETS
from instruments.selectors import active_count, feed_capacity, instrument_cache_invalidate, last_good_sync
from instruments.sync import writing
from instruments.sync.errors import (
    ActivationLimitExceeded,
    BadInput,
    ShrinkRefused,
    SyncError,
    SyncLocked,
)
from instruments.sync.parsing import PARSERS, Rejects, Row
from instruments.sync.sources import Progress, describe_input, open_dump
from tradingportal.locks import LockHeld, named_lock

logger = logging.getLogger(__name__)

SYNC_LOCK = "instruments-sync"
PROGRESS_EVERY_ROWS = 5000

ProgressCallback = Callable[[Progress, int], None]


@dataclass
class SyncReport:
    run_id: int | None
    source: str
    input: str
    status: str
    exit_code: int
    message: str = ""
    dry_run: bool = False
    scope: list[str] = field(default_factory=list)
    rows_read: int = 0
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    delisted: int = 0
    relisted: int = 0
    rejected: int = 0
    activated: int = 0
    deactivated: int = 0
    rejects: list[dict[str, Any]] = field(default_factory=list)
    before: dict[str, dict[str, int]] = field(default_factory=dict)
    after: dict[str, dict[str, int]] = field(default_factory=dict)
    elapsed_seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class _DryRunRollback(Exception):
    pass


def _counted(rows: Iterator[Row], progress: Progress, on_progress: ProgressCallback | None) -> Iterator[Row]:
    count = 0
    for row in rows:
        count += 1
        if on_progress and count % PROGRESS_EVERY_ROWS == 0:
            on_progress(progress, count)
        yield row
    if on_progress:
        on_progress(progress, count)


def instrument_sync(
    *,
    source: str,
    path: str | None = None,
    url: str | None = None,
    preset: str | None = None,
    dry_run: bool = False,
    force: bool = False,
    triggered_by: str = "",
    on_progress: ProgressCallback | None = None,
) -> SyncReport:
    """Bring the master in line with one dump of ``source``, all or nothing.

    Reads the dump as a stream, stages it, refuses a dump far smaller than the last good
    one in the same scope (unless ``force``), then matches, delists, updates and inserts
    in one transaction; ``preset`` then makes the active set exactly that preset.
    ``dry_run`` does all of it and rolls back. Every outcome is recorded as a SyncRun.
    """
    if source not in PARSERS:
        raise BadInput(f"unknown source {source!r}; expected one of {', '.join(PARSERS)}")
    if preset not in (None, "all") and preset not in PRESETS:
        raise BadInput(f"unknown filter {preset!r}; expected one of {', '.join([*PRESETS, 'all'])}")
    if not path and not url:
        url = settings.KITE_INSTRUMENTS_URL if source == Source.KITE else settings.UPSTOX_INSTRUMENTS_URL
    shown_input = describe_input(path=path, url=url)
    started = time.monotonic()
    run = SyncRun.objects.create(
        source=source,
        input=shown_input[:500],
        filter=preset or "",
        dry_run=dry_run,
        forced=force,
        triggered_by=triggered_by[:64],
        started_at=timezone.now(),
    )
    report = SyncReport(
        run_id=run.pk, source=source, input=shown_input, status="running", exit_code=0, dry_run=dry_run
    )
    logger.info("instrument sync %s started: source=%s input=%s", run.pk, source, shown_input)
    try:
        with named_lock(SYNC_LOCK):
            try:
                with transaction.atomic():
                    _sync_in_transaction(
                        report,
                        source=source,
                        path=path,
                        url=url,
                        preset=preset,
                        force=force,
                        on_progress=on_progress,
                    )
                    if dry_run:
                        raise _DryRunRollback
                transaction.on_commit(lambda: instrument_cache_invalidate())
            except _DryRunRollback:
                pass
    except LockHeld:
        error: SyncError = SyncLocked(
            "another instrument sync is running; wait for it to finish (see admin > Sync runs) and try again"
        )
        _finish(run, report, started, error=error)
        raise error from None
    except SyncError as exc:
        _finish(run, report, started, error=exc)
        raise
    except Exception as exc:
        logger.exception("instrument sync %s failed", run.pk)
        _finish(run, report, started, error=exc)
        raise
    report.status = SyncRun.Status.DRY_RUN if dry_run else SyncRun.Status.OK
    _finish(run, report, started)
    return report


def _sync_in_transaction(
    report: SyncReport,
    *,
    source: str,
    path: str | None,
    url: str | None,
    preset: str | None,
    force: bool,
    on_progress: ProgressCallback | None,
) -> None:
    rejects = Rejects()
    progress = Progress()
    headers = _source_headers(source, url)
    with open_dump(path=path, url=url, headers=headers, progress=progress) as stream:
        rows = _counted(PARSERS[source](stream, rejects), progress, on_progress)
        staged = writing.stage(rows)
    report.rows_read = staged + rejects.count
    report.rejected = rejects.count
    report.rejects = rejects.first
    if staged == 0:
        detail = (
            f" ({rejects.count} rows rejected, first: {rejects.first[0]['reason']})" if rejects.first else ""
        )
        raise BadInput(f"the dump has no valid rows{detail}")
    scope = writing.staged_scope()
    report.scope = scope
    _guard_shrink(source=source, scope=scope, staged=staged, force=force)
    report.before = writing.breakdown(source=source, scope=scope)
    now = timezone.now()
    counts = writing.apply(source=source, scope=scope, now=now)
    report.inserted, report.updated, report.unchanged = counts.inserted, counts.updated, counts.unchanged
    report.delisted, report.relisted = counts.delisted, counts.relisted
    report.deactivated = counts.deactivated
    if preset and preset != "all":
        activated, deactivated = _apply_preset(preset)
        report.activated += activated
        report.deactivated += deactivated
    report.after = writing.breakdown(source=source, scope=scope)


def _source_headers(source: str, url: str | None) -> dict[str, str]:
    """Kite's own hosts get the API key and token (never logged); any other URL gets nothing."""
    if not (source == Source.KITE and url and settings.KITE_API_KEY and settings.KITE_ACCESS_TOKEN):
        return {}
    kite_hosts = {urlsplit(settings.KITE_INSTRUMENTS_URL).netloc, urlsplit(settings.KITE_API_URL).netloc}
    if urlsplit(url).netloc not in kite_hosts:
        return {}
    return {
        "X-Kite-Version": "3",
        "Authorization": f"token {settings.KITE_API_KEY}:{settings.KITE_ACCESS_TOKEN}",
    }


def _guard_shrink(*, source: str, scope: list[str], staged: int, force: bool) -> None:
    ratio = settings.SYNC_SHRINK_RATIO
    previous = last_good_sync(source=source, scope=",".join(scope))
    if previous is not None:
        baseline, what = previous.rows_read - previous.rejected, f"the last good sync (#{previous.pk})"
    else:
        baseline, what = writing.listed_count(source=source, scope=scope), "the listed instruments"
    if baseline and staged < ratio * baseline:
        message = (
            f"refusing: the dump has {staged} valid rows in {','.join(scope)}, under {ratio:.0%} of "
            f"{what} in the same scope ({baseline}). A truncated download? Re-run with --force if it is right."
        )
        if not force:
            raise ShrinkRefused(message)
        logger.warning("%s (forced)", message)


def _finish(run: SyncRun, report: SyncReport, started: float, error: BaseException | None = None) -> None:
    report.elapsed_seconds = round(time.monotonic() - started, 3)
    if error is not None:
        # The transaction rolled back: nothing was inserted, updated or delisted.
        for name in ("inserted", "updated", "unchanged", "delisted", "relisted", "activated", "deactivated"):
            setattr(report, name, 0)
        report.after = {}
        error.report = report  # type: ignore[attr-defined]
        report.status = getattr(error, "status", SyncRun.Status.FAILED)
        report.exit_code = getattr(error, "exit_code", 1)
        report.message = str(error) if isinstance(error, SyncError) else f"{type(error).__name__}: {error}"
    run.status = report.status
    run.exit_code = report.exit_code
    run.message = report.message[:2000]
    run.scope = ",".join(report.scope)[:200]
    run.finished_at = timezone.now()
    run.duration_ms = int(report.elapsed_seconds * 1000)
    for name in ("rows_read", "inserted", "updated", "unchanged", "delisted", "relisted", "rejected", "activated",
                 "deactivated", "rejects"):  # fmt: skip
        setattr(run, name, getattr(report, name))
    if connection.in_atomic_block and connection.needs_rollback:
        return  # cannot write here; the caller's transaction is broken
    run.save()
    logger.info(
        "instrument sync %s %s: read=%s inserted=%s updated=%s delisted=%s relisted=%s rejected=%s in %.1fs",
        run.pk, run.status, run.rows_read, run.inserted, run.updated, run.delisted, run.relisted, run.rejected,
        report.elapsed_seconds,
    )  # fmt: skip


# --- streaming on/off ---------------------------------------------------------------------


@dataclass
class ActivationResult:
    changed: int = 0
    unchanged: int = 0
    not_found: list[int] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    expired: list[str] = field(default_factory=list)
    active_count: int = 0
    capacity: int = 0


def _activation_lock() -> None:
    """Serialise activations so two operators cannot both squeeze past the limit.

    PostgreSQL: a transaction-level advisory lock. SQLite: the write lock taken at BEGIN
    IMMEDIATE already serialises writers.
    """
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [0x1A5E_ACE])


def _resolve(*, ids: list[int] | None, tokens: list[int] | None) -> tuple[list[Instrument], list[int]]:
    if tokens is not None:
        rows = list(
            Instrument.objects.filter(source=Source.KITE, is_listed=True, instrument_token__in=tokens)
        )
        found = {r.instrument_token for r in rows}
        return rows, [t for t in tokens if t not in found]
    rows = list(Instrument.objects.filter(pk__in=ids or []))
    found_ids = {r.pk for r in rows}
    return rows, [i for i in ids or [] if i not in found_ids]


def feed_limit_check(*, would_be: int) -> None:
    """The one place the feed's limit is enforced (admin, API, presets): raises
    ``ActivationLimitExceeded`` if ``would_be`` active instruments would not fit."""
    capacity = feed_capacity()
    if would_be > capacity:
        raise ActivationLimitExceeded(
            f"Refused: {would_be} active instruments would exceed the feed's limit of {capacity} "
            f"({settings.KITE_TICKER_MAX_CONNECTIONS} connections x {settings.KITE_TICKER_MAX_PER_CONNECTION}). "
            "Deactivate some first."
        )


def instruments_activate(
    *, ids: list[int] | None = None, tokens: list[int] | None = None, by: str
) -> ActivationResult:
    """Stream the given instruments. Delisted and Upstox-only rows are refused; the whole
    request is refused if it would take the active set past the feed's capacity."""
    today = timezone.localdate()
    with transaction.atomic():
        _activation_lock()
        rows, not_found = _resolve(ids=ids, tokens=tokens)
        result = ActivationResult(not_found=not_found, capacity=feed_capacity())
        to_activate = []
        for row in rows:
            if not row.is_listed:
                result.refused.append(f"{row}: delisted")
            elif row.source != Source.KITE or row.instrument_token is None:
                result.refused.append(f"{row}: not a Kite instrument (no token to stream)")
            elif row.is_active:
                result.unchanged += 1
            else:
                to_activate.append(row.pk)
                if row.expiry and row.expiry < today:
                    result.expired.append(str(row))
        current = active_count()
        feed_limit_check(would_be=current + len(to_activate))
        result.changed = Instrument.objects.filter(pk__in=to_activate, is_active=False).update(is_active=True)
        result.active_count = current + result.changed
        activated = set(to_activate)
        touched = [r.instrument_token for r in rows if r.pk in activated and r.instrument_token]
        transaction.on_commit(lambda: instrument_cache_invalidate(tokens=touched))
    logger.info("activated %s instruments by %s (unchanged %s, refused %s)", result.changed, by, result.unchanged,
                len(result.refused))  # fmt: skip
    return result


def instruments_deactivate(
    *, ids: list[int] | None = None, tokens: list[int] | None = None, by: str
) -> ActivationResult:
    with transaction.atomic():
        rows, not_found = _resolve(ids=ids, tokens=tokens)
        result = ActivationResult(not_found=not_found, capacity=feed_capacity())
        active_ids = [r.pk for r in rows if r.is_active]
        result.unchanged = len(rows) - len(active_ids)
        result.changed = Instrument.objects.filter(pk__in=active_ids, is_active=True).update(is_active=False)
        result.active_count = active_count()
        touched = [r.instrument_token for r in rows if r.is_active and r.instrument_token]
        transaction.on_commit(lambda: instrument_cache_invalidate(tokens=touched))
    logger.info("deactivated %s instruments by %s", result.changed, by)
    return result


def _apply_preset(preset: str) -> tuple[int, int]:
    """Make the active set exactly the preset's instruments; returns (activated, deactivated)."""
    _activation_lock()
    today = timezone.localdate()
    chosen = Instrument.objects.filter(PRESETS[preset](), source=Source.KITE, is_listed=True).filter(
        Q(expiry__isnull=True) | Q(expiry__gte=today)
    )
    feed_limit_check(would_be=chosen.count())
    deactivated = (
        Instrument.objects.filter(is_active=True).exclude(pk__in=chosen.values("pk")).update(is_active=False)
    )
    activated = Instrument.objects.filter(pk__in=chosen.values("pk"), is_active=False).update(is_active=True)
    return activated, deactivated


def instruments_deactivate_expired(*, today: date | None = None) -> int:
    """Stop streaming derivatives whose expiry has passed (a daily task)."""
    today = today or timezone.localdate()
    with transaction.atomic():
        expired = Instrument.objects.filter(is_active=True, expiry__lt=today)
        tokens = [t for t in expired.values_list("instrument_token", flat=True) if t]
        count = expired.update(is_active=False)
        transaction.on_commit(lambda: instrument_cache_invalidate(tokens=tokens))
    if count:
        logger.info("deactivated %s expired instruments", count)
    return count
