"""Cross-process locks for work that must not overlap (instrument sync, reconciliation).

PostgreSQL: a session-level advisory lock on the current connection. SQLite (one
machine by nature): an ``flock`` on a file under ``var/locks/`` (ignored by git), in a
folder named after the database, so two databases never share a lock. Either way the
lock is tried, never waited for: a second taker gets ``LockHeld`` at once.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from django.conf import settings
from django.db import connection


class LockHeld(Exception):
    pass


def _lock_id(name: str) -> int:
    return int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "big", signed=True)


def _lock_dir() -> Path:
    """``var/locks/<database file>-<hash of its path>/``, created on first use."""
    name = str(connection.settings_dict["NAME"] or "")
    database = Path(name).resolve() if name and ":memory:" not in name else None
    digest = hashlib.blake2b(str(database or "").encode(), digest_size=4).hexdigest()
    path = Path(settings.BASE_DIR) / "var" / "locks" / f"{database.name if database else 'memory'}-{digest}"
    path.mkdir(parents=True, exist_ok=True)
    return path


def lock_file(name: str) -> Path:
    """The file ``named_lock(name)`` flocks on SQLite."""
    return _lock_dir() / f"{name}.lock"


@contextmanager
def named_lock(name: str) -> Iterator[None]:
    if connection.vendor == "postgresql":
        key = _lock_id(name)
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_try_advisory_lock(%s)", [key])
            if not cursor.fetchone()[0]:
                raise LockHeld(name)
        try:
            yield
        finally:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_unlock(%s)", [key])
        return
    fd = os.open(lock_file(name), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise LockHeld(name) from None
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
