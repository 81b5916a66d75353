"""django-q2 tasks: thin callers of the services. Schedules are registered in schedules.py."""

import logging

from instruments.services import instrument_sync, instruments_deactivate_expired
from instruments.sync.errors import SyncError

logger = logging.getLogger(__name__)


def sync_instruments_task(
    *, source: str = "kite", url: str | None = None, preset: str | None = None, force: bool = False,
    dry_run: bool = False, triggered_by: str = "schedule",
) -> dict:  # fmt: skip
    """Run a sync; the outcome is in its SyncRun either way. A refusal is not a task failure."""
    try:
        report = instrument_sync(
            source=source,
            url=url or None,
            preset=preset,
            force=force,
            dry_run=dry_run,
            triggered_by=triggered_by,
        )
    except SyncError as exc:
        logger.warning("queued instrument sync did not complete: %s", exc)
        failed = getattr(exc, "report", None)
        return {
            "status": getattr(failed, "status", "failed"),
            "exit_code": exc.exit_code,
            "message": str(exc),
        }
    return {
        "status": report.status,
        "run_id": report.run_id,
        "inserted": report.inserted,
        "delisted": report.delisted,
    }


def deactivate_expired_task() -> int:
    return instruments_deactivate_expired()
