"""What the feed streams: the active, listed Kite instruments, and the database's
notification when that set changes (PostgreSQL: a trigger NOTIFYs ``instruments_active``,
see ``ingestion/migrations/0001_notify_active_changes.py``).

These run in the ingestion's one database thread (``sync_to_async``).
"""

from __future__ import annotations

import contextlib
from typing import Any

from django.db import DatabaseError, InterfaceError, connection

NOTIFY_CHANNEL = "instruments_active"
META_FIELDS = ("instrument_token", "stream_mode", "tradingsymbol", "exchange", "segment", "lot_size", "name")


def active_set_load() -> list[dict[str, Any]]:
    """The active instruments' metadata in the feed's stable order (id)."""
    from instruments.selectors import active_instruments

    try:
        return list(active_instruments().values(*META_FIELDS))
    except (DatabaseError, InterfaceError):
        # The database restarted or dropped us: close the dead connection so the next
        # read (the engine retries at once, then with backoff) opens a fresh one.
        with contextlib.suppress(Exception):
            connection.close()
        raise


def active_set_listener() -> Any:
    """A dedicated autocommit psycopg2 connection LISTENing for active-set changes."""
    import psycopg2

    listener = psycopg2.connect(**connection.get_connection_params())
    listener.autocommit = True
    with listener.cursor() as cursor:
        cursor.execute(f"LISTEN {NOTIFY_CHANNEL}")
    return listener
