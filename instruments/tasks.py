"""django-q2 tasks: thin callers of the services. Schedules are registered in schedules.py.

Task arguments are shown on django-q2's pages: they never carry credentials (the sync
reads Kite's from the settings).
"""

import logging
from typing import Any

from instruments.services import instrument_sync, instruments_deactivate_expired
from instruments.sync.errors import SyncError

logger = logging.getLogger(__name__)


def sync_instruments_task(
    *, source: str = "kite", url: str | None = None, preset: str | None = None, force: bool = False,
    dry_run: bool = False, triggered_by: str = "schedule", from_web: bool = False,
) -> dict[str, Any]:  # fmt: skip
    """Run a sync; the outcome is in its SyncRun either way. A refusal is not a task failure.

    ``from_web``: requested through the API or the admin; the URL (and every redirect) is
    checked again here, at fetch time, against the allowed dump hosts.
    """
    try:
        report = instrument_sync(
            source=source,
            url=url or None,
            preset=preset,
            force=force,
            dry_run=dry_run,
            triggered_by=triggered_by,
            from_web=from_web,
        )
    except SyncError as exc:
        failed = getattr(exc, "report", None)
        message = failed.message if failed is not None else str(exc)
        logger.warning("queued instrument sync did not complete: %s", message)
        return {
            "status": getattr(failed, "status", "failed"),
            "run_id": getattr(failed, "run_id", None),
            "exit_code": exc.exit_code,
            "message": message,
        }
    return {
        "status": report.status,
        "run_id": report.run_id,
        "inserted": report.inserted,
        "updated": report.updated,
        "delisted": report.delisted,
    }


def deactivate_expired_task() -> dict[str, int]:
    """Stop streaming expired derivatives. Waits for a running sync (it takes the sync's
    lock); if the sync outlasts the wait, the task fails visibly and nothing changes."""
    return {"deactivated": instruments_deactivate_expired()}
