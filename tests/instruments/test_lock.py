"""Only one sync at a time: a second one exits with its own code and a clear message."""

import contextlib
import fcntl
import os
from io import StringIO

import psycopg2
import pytest
from django.core.management import CommandError, call_command
from django.db import connection

from instruments.models import Instrument, SyncRun
from instruments.services import SYNC_LOCK
from tests.instruments.dumps import kite_csv, nifty_universe, write
from tradingportal.locks import _lock_dir, _lock_id

pytestmark = pytest.mark.django_db


@contextlib.contextmanager
def lock_held_elsewhere():
    """Hold the sync lock the way another process would."""
    if connection.vendor == "postgresql":
        params = connection.get_connection_params()
        other = psycopg2.connect(**params)
        other.autocommit = True
        with other.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_lock(%s)", [_lock_id(SYNC_LOCK)])
        try:
            yield
        finally:
            other.close()
    else:
        fd = os.open(_lock_dir() / f"{SYNC_LOCK}.lock", os.O_RDWR | os.O_CREAT)
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            os.close(fd)


def test_second_sync_exits_with_the_lock_code(tmp_path):
    path = write(tmp_path / "dump.csv", kite_csv(nifty_universe()))
    with lock_held_elsewhere(), pytest.raises(CommandError) as failure:
        call_command("sync_instruments", "--file", path, stdout=StringIO())
    assert failure.value.returncode == 5
    assert "another instrument sync is running" in str(failure.value)
    assert not Instrument.objects.exists()
    assert SyncRun.objects.get().status == "refused"
    # Released: the next one runs.
    call_command("sync_instruments", "--file", path, stdout=StringIO())
    assert Instrument.objects.count() == len(nifty_universe())
