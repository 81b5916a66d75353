"""Writes to the instrument master: sync a dump, switch streaming on and off."""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import date
from typing import Any

from django.conf import settings
from django.db import DatabaseError, connection, transaction
from django.db.models import Q
from django.utils import timezone
from django_q.tasks import async_task

from instruments.models import Instrument, Source, SyncRun
from instruments.presets import PRESET_CHOICES, PRESETS
from instruments.selectors import active_count, feed_capacity, instrument_cache_invalidate, last_good_sync
from instruments.sync import writing
from instruments.sync.errors import (
    ActivationLimitExceeded,
    BadInput,
    QueueUnavailable,
    ShrinkRefused,
    SyncError,
    SyncLocked,
)
from instruments.sync.parsing import PARSERS, Rejects, Row
from instruments.sync.policy import FetchGuard, kite_credentials_allowed, web_sync_url_check
from instruments.sync.sources import Progress, describe_input, open_dump
from tradingportal.locks import LockHeld, named_lock
from tradingportal.security import redact

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
    from_web: bool = False,
    on_progress: ProgressCallback | None = None,
) -> SyncReport:
    """Bring the master in line with one dump of ``source``, all or nothing.

    Reads the dump as a stream, stages it, refuses a dump far smaller than the last good
    one in the same scope (unless ``force``), then matches, delists, updates and inserts
    in one transaction; ``preset`` then makes the active set exactly that preset.
    ``dry_run`` does all of it and rolls back. Every outcome is recorded as a SyncRun; a
    successful run's record commits in the same transaction as its changes.

    ``from_web``: a sync requested through the API or the admin. It fetches only what
    ``policy.FetchGuard`` allows, and its record never quotes what the URL returned.
    """
    if source not in PARSERS:
        raise BadInput(f"unknown source {source!r}; expected one of {', '.join(PARSERS)}")
    if preset not in (None, "all") and preset not in PRESETS:
        raise BadInput(f"unknown preset {preset!r}; expected one of {', '.join(PRESET_CHOICES)}")
    if from_web and path:
        raise BadInput("a sync started from the web reads a URL, never a file of the server")
    if not path and not url:
        url = _configured_url(source)
    shown_input = describe_input(path=path, url=url)
    started = time.monotonic()
    run = SyncRun(
        source=source,
        input=shown_input[:500],
        preset=preset or "",
        dry_run=dry_run,
        forced=force,
        triggered_by=triggered_by[:64],
        host=socket.gethostname()[:255],
        pid=os.getpid(),
        started_at=timezone.now(),
    )
    report = SyncReport(run_id=None, source=source, input=shown_input, status="running", exit_code=0,
                        dry_run=dry_run)  # fmt: skip
    try:
        with named_lock(SYNC_LOCK):
            # Under the lock no other sync is live: a run still marked running was killed.
            sync_runs_abandon()
            run.save()
            report.run_id = run.pk
            logger.info("instrument sync %s started: source=%s input=%s", run.pk, source, shown_input)
            try:
                _sync_run(run, report, started, source=source, path=path, url=url, preset=preset,
                          dry_run=dry_run, force=force, from_web=from_web, on_progress=on_progress)  # fmt: skip
            except BaseException as exc:
                if not isinstance(exc, SyncError):
                    logger.exception("instrument sync %s failed", run.pk)
                _finish(run, report, started, error=exc, from_web=from_web)
                raise
    except LockHeld:
        error = SyncLocked(
            "another instrument sync is running; wait for it to finish (see admin > Sync runs) and try again"
        )
        _finish(run, report, started, error=error, from_web=from_web)
        raise error from None
    return report


def _configured_url(source: str) -> str:
    return settings.KITE_INSTRUMENTS_URL if source == Source.KITE else settings.UPSTOX_INSTRUMENTS_URL


def _sync_run(
    run: SyncRun,
    report: SyncReport,
    started: float,
    *,
    source: str,
    path: str | None,
    url: str | None,
    preset: str | None,
    dry_run: bool,
    force: bool,
    from_web: bool,
    on_progress: ProgressCallback | None,
) -> None:
    moved: set[int] = set()
    try:
        with transaction.atomic():
            moved = _sync_in_transaction(report, source=source, path=path, url=url, preset=preset, force=force,
                                         guard=FetchGuard() if from_web else None,
                                         on_progress=on_progress)  # fmt: skip
            if dry_run:
                raise _DryRunRollback
            report.status = SyncRun.Status.OK
            _finish(run, report, started)  # commits with the changes, or not at all
    except _DryRunRollback:
        report.status = SyncRun.Status.DRY_RUN
        _finish(run, report, started)
        return
    transaction.on_commit(lambda: _after_commit(run.pk, sorted(moved)))


def _after_commit(run_id: int, moved: list[int]) -> None:
    """Readers must not see the old metadata, nor a token's latest tick that belongs to the
    contract that held the token before (Kite reuses tokens). The sync has committed: a
    failure here is logged as an error, it does not turn the sync into a failure."""
    from ingestion.latest import latest_discard

    try:
        instrument_cache_invalidate()
    except Exception:
        logger.exception("instrument sync %s committed, but the lookup cache could not be invalidated: "
                         "readers may see old metadata until it expires", run_id)  # fmt: skip
    if not moved:
        return
    try:
        latest_discard(moved)
    except Exception:
        logger.exception("instrument sync %s committed, but the latest ticks of %s tokens that changed "
                         "contract could not be dropped", run_id, len(moved))  # fmt: skip
    else:
        logger.info("instrument sync %s dropped the latest ticks of %s tokens that changed contract or were "
                    "delisted", run_id, len(moved))  # fmt: skip


def sync_runs_abandon() -> int:
    """Close runs left ``running`` by a sync process that died (SIGKILL, OOM, a lost
    machine). Call only while holding the sync lock: then no sync is live. The tables are
    as they were: a successful run's record commits with its changes."""
    count = 0
    for run in SyncRun.objects.filter(status=SyncRun.Status.RUNNING).order_by("id"):
        where = f"pid {run.pid} on {run.host}" if run.pid else "started before runs recorded their process"
        run.status = SyncRun.Status.FAILED
        run.exit_code = 1
        run.finished_at = timezone.now()
        run.message = (
            f"abandoned: the sync process ({where}) ended without finishing (killed?); "
            "nothing was changed. Found when the next sync started."
        )
        run.save(update_fields=["status", "exit_code", "finished_at", "message"])
        logger.warning("instrument sync %s was abandoned by its process (%s); marked failed", run.pk, where)
        count += 1
    return count


def _sync_in_transaction(
    report: SyncReport,
    *,
    source: str,
    path: str | None,
    url: str | None,
    preset: str | None,
    force: bool,
    guard: FetchGuard | None,
    on_progress: ProgressCallback | None,
) -> set[int]:
    """The sync's writes; returns the Kite tokens whose listed owner changed."""
    if preset and preset != "all":
        # Before any row lock, as activations take it: the same order everywhere, no deadlock.
        _activation_lock()
    rejects = Rejects()
    progress = Progress()
    with open_dump(path=path, url=url, headers_for=lambda target: _source_headers(source, target), guard=guard,
                   progress=progress) as stream:  # fmt: skip
        rows = _counted(PARSERS[source](stream, rejects), progress, on_progress)
        staged = writing.stage(rows)
    report.rows_read = staged + rejects.count
    report.rejected = rejects.count
    report.rejects = rejects.first
    if staged == 0:
        detail = (
            f" ({rejects.count} rows rejected, first: {rejects.first[0]['reason']})" if rejects.first else ""
        )
        raise BadInput("the dump has no valid rows", detail=detail)
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
    return counts.moved_tokens


def _source_headers(source: str, url: str) -> dict[str, str]:
    """Kite's own origins, over https, get the API key and token (never logged); any other
    URL gets nothing (``policy.kite_credentials_allowed``)."""
    if not (source == Source.KITE and settings.KITE_API_KEY and settings.KITE_ACCESS_TOKEN):
        return {}
    if not kite_credentials_allowed(url):
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


def _error_message(error: BaseException, *, from_web: bool) -> str:
    """What the run records about ``error``: never a secret, and for a web-started sync
    nothing the URL returned."""
    if isinstance(error, SyncError):
        text = error.summary if from_web else str(error)
    elif not isinstance(error, Exception):
        text = f"interrupted ({type(error).__name__})"
    elif from_web:
        text = f"{type(error).__name__} (the worker's log has the details)"
    else:
        text = f"{type(error).__name__}: {error}"
    return redact(text)


def _finish(
    run: SyncRun,
    report: SyncReport,
    started: float,
    *,
    error: BaseException | None = None,
    from_web: bool = False,
) -> None:
    """Record the outcome on ``report`` and save ``run`` (created if it is not yet)."""
    report.elapsed_seconds = round(time.monotonic() - started, 3)
    if error is not None:
        # The transaction rolled back: nothing was inserted, updated or delisted.
        for name in ("inserted", "updated", "unchanged", "delisted", "relisted", "activated", "deactivated"):
            setattr(report, name, 0)
        report.after = {}
        if isinstance(error, Exception):
            error.report = report  # type: ignore[attr-defined]
        report.status = getattr(error, "status", SyncRun.Status.FAILED)
        report.exit_code = getattr(error, "exit_code", 1)
        report.message = _error_message(error, from_web=from_web)
    run.status = report.status
    run.exit_code = report.exit_code
    run.message = report.message[:2000]
    run.scope = ",".join(report.scope)[:200]
    run.finished_at = timezone.now()
    run.duration_ms = int(report.elapsed_seconds * 1000)
    for name in ("rows_read", "inserted", "updated", "unchanged", "delisted", "relisted", "rejected", "activated",
                 "deactivated", "rejects"):  # fmt: skip
        setattr(run, name, getattr(report, name))
    if error is None:
        run.save()  # inside the sync's transaction: a failure here rolls the sync back
    else:
        _save_failed_run(run)
    report.run_id = run.pk
    logger.info(
        "instrument sync %s %s: read=%s inserted=%s updated=%s delisted=%s relisted=%s rejected=%s in %.1fs",
        run.pk, run.status, run.rows_read, run.inserted, run.updated, run.delisted, run.relisted, run.rejected,
        report.elapsed_seconds,
    )  # fmt: skip


def _save_failed_run(run: SyncRun) -> None:
    """Save a failed run even when the failure was the database connection itself (a
    killed backend, a restarted server): reconnect once. If it still cannot be saved, the
    run stays ``running`` until the next sync closes it as abandoned."""
    for attempt in (1, 2):
        try:
            run.save()
            return
        except DatabaseError:
            if connection.in_atomic_block or attempt == 2:
                # Inside a caller's transaction the record goes (or stays) with it.
                logger.exception("instrument sync %s: could not record its failure", run.pk)
                return
            connection.close()


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
                to_activate.append(row)
                if row.expiry and row.expiry < today:
                    result.expired.append(str(row))
        current = active_count()
        feed_limit_check(would_be=current + len(to_activate))
        # The conditions again, in the UPDATE: a sync may delist a row between the read
        # above and this write. PostgreSQL then re-checks the row after the sync commits
        # and skips it (without ``is_listed`` here it would violate the "delisted never
        # active" constraint); such rows are reported as refused.
        ids_to_activate = [row.pk for row in to_activate]
        result.changed = Instrument.objects.filter(
            pk__in=ids_to_activate, is_active=False, is_listed=True, source=Source.KITE,
            instrument_token__isnull=False,
        ).update(is_active=True)  # fmt: skip
        activated = set(ids_to_activate)
        if result.changed < len(to_activate):
            activated = set(
                Instrument.objects.filter(pk__in=ids_to_activate, is_active=True, is_listed=True)
                .values_list("pk", flat=True)
            )  # fmt: skip
            for row in to_activate:
                if row.pk not in activated:
                    result.refused.append(f"{row}: delisted or changed by a sync meanwhile")
                    if str(row) in result.expired:
                        result.expired.remove(str(row))
        result.active_count = current + result.changed
        touched = [r.instrument_token for r in to_activate if r.pk in activated and r.instrument_token]
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


EXPIRED_LOCK_WAIT_SECONDS = 600
EXPIRED_LOCK_POLL_SECONDS = 2.0


def instruments_deactivate_expired(*, today: date | None = None, wait_seconds: float | None = None) -> int:
    """Stop streaming derivatives whose expiry has passed (a daily task); returns how many.

    Takes the sync's lock, as every schedule touching the master does. A sync holding it
    is waited for (it usually takes seconds, at most a minute or two), up to
    ``wait_seconds`` (default ``EXPIRED_LOCK_WAIT_SECONDS``); then ``SyncLocked`` is
    raised and nothing changes (the task fails visibly in admin > Task queue; the next
    run, or a manual one, catches up).
    """
    today = today or timezone.localdate()
    wait_seconds = EXPIRED_LOCK_WAIT_SECONDS if wait_seconds is None else wait_seconds
    deadline = time.monotonic() + wait_seconds
    waiting = False
    while True:
        try:
            with named_lock(SYNC_LOCK):
                return _deactivate_expired(today)
        except LockHeld:
            if time.monotonic() >= deadline:
                raise SyncLocked(
                    f"an instrument sync is running (waited {wait_seconds:.0f}s for its lock); expired "
                    "instruments were not deactivated. Run the task again when the sync has finished."
                ) from None
            if not waiting:
                logger.info("an instrument sync is running; waiting up to %.0fs to deactivate expired ones",
                            wait_seconds)  # fmt: skip
                waiting = True
            time.sleep(EXPIRED_LOCK_POLL_SECONDS)


def _deactivate_expired(today: date) -> int:
    with transaction.atomic():
        expired = Instrument.objects.filter(is_active=True, expiry__lt=today)
        tokens = [t for t in expired.values_list("instrument_token", flat=True) if t]
        count = expired.update(is_active=False)
        transaction.on_commit(lambda: instrument_cache_invalidate(tokens=tokens))
    if count:
        logger.info("deactivated %s expired instruments", count)
    return count


# --- queueing a sync on the worker ----------------------------------------------------------


@dataclass
class SyncQueued:
    task_name: str
    task_id: str | None = None  # set once the transaction commits (at once outside one)


def instrument_sync_enqueue(
    *,
    source: str,
    url: str | None = None,
    preset: str | None = None,
    dry_run: bool = False,
    force: bool = False,
    by: str,
) -> SyncQueued:
    """Queue a sync requested from the web (API, admin) on the worker; its result lands in
    a SyncRun. The URL is checked now (``UrlRefused``: not an allowed dump host, a private
    address, credentials in it) and again by the worker before each request. Task
    arguments are shown on django-q2's pages, so they never carry credentials: the task
    reads them from the settings."""
    if source not in PARSERS:
        raise BadInput(f"unknown source {source!r}; expected one of {', '.join(PARSERS)}")
    if preset and preset not in PRESET_CHOICES:
        raise BadInput(f"unknown preset {preset!r}; expected one of {', '.join(PRESET_CHOICES)}")
    url = (url or "").strip() or None
    web_sync_url_check(url or _configured_url(source))
    queued = SyncQueued(task_name=f"sync {source} by {by}"[:100])

    def enqueue() -> None:
        try:
            queued.task_id = async_task(
                "instruments.tasks.sync_instruments_task",
                source=source, url=url, preset=preset or None, force=force, dry_run=dry_run,
                triggered_by=f"user:{by}", from_web=True, task_name=queued.task_name, group="instrument-sync",
            )  # fmt: skip
        except Exception as exc:
            logger.exception("could not queue the instrument sync requested by %s", by)
            raise QueueUnavailable(
                f"the task queue is unreachable ({type(exc).__name__}); the sync was not queued. Try again, "
                "or run `manage.py sync_instruments` on the server"
            ) from exc
        logger.info("instrument sync queued by %s: task %s", by, queued.task_id)

    transaction.on_commit(enqueue)
    return queued
