"""Every sync leaves a truthful SyncRun: a crash records the (redacted) error, a lost
database connection still gets recorded, and a sync process killed midway (SIGKILL) is
closed as abandoned when the next sync starts."""

import os
import signal
import sys
import threading

import psycopg2
import pytest
from django.db import connection
from django.test import override_settings

from instruments.models import Instrument, SyncRun
from instruments.services import SYNC_LOCK, instrument_sync
from tests import helpers
from tests.conftest import requires_postgres
from tests.helpers import child_env, running, wait_for
from tests.instruments.dumps import kite_csv, nifty_universe, write
from tests.instruments.fake_http import Route, fake_server
from tradingportal.locks import LockHeld, named_lock

pytestmark = pytest.mark.django_db
SECRET = "tok-very-secret-4711"


def lock_free() -> bool:
    try:
        with named_lock(SYNC_LOCK):
            return True
    except LockHeld:
        return False


def dump(tmp_path):
    return write(tmp_path / "dump.csv", kite_csv(nifty_universe()))


def test_a_crashed_sync_is_recorded_as_failed_with_the_error_redacted(tmp_path):
    def crash(progress, rows):
        raise RuntimeError(f"the feed handler broke while holding access_token={SECRET} and {SECRET}")

    with override_settings(KITE_ACCESS_TOKEN=SECRET), pytest.raises(RuntimeError):
        instrument_sync(source="kite", path=dump(tmp_path), on_progress=crash)
    run = SyncRun.objects.get()
    assert run.status == "failed" and run.exit_code == 1 and run.finished_at is not None
    assert run.message.startswith("RuntimeError: the feed handler broke")
    assert SECRET not in run.message and "********" in run.message
    assert not Instrument.objects.exists()


def test_an_interrupted_sync_is_recorded_and_the_interrupt_goes_on(tmp_path):
    def interrupt(progress, rows):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        instrument_sync(source="kite", path=dump(tmp_path), on_progress=interrupt)
    run = SyncRun.objects.get()
    assert run.status == "failed" and run.message == "interrupted (KeyboardInterrupt)"
    assert not Instrument.objects.exists()


@requires_postgres
@pytest.mark.django_db(transaction=True)
def test_a_sync_whose_database_connection_is_killed_is_still_recorded(tmp_path):
    """PostgreSQL terminates the sync's backend mid-COPY (a failover, an operator's
    pg_terminate_backend): the run is recorded as failed over a new connection."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        (backend,) = cursor.fetchone()
    killer = psycopg2.connect(**connection.get_connection_params())
    killer.autocommit = True

    def kill_my_backend(progress, rows):
        with killer.cursor() as cursor:
            cursor.execute("SELECT pg_terminate_backend(%s)", [backend])

    try:
        with pytest.raises(Exception):  # noqa: B017 - whichever error the dead connection gives
            instrument_sync(source="kite", path=dump(tmp_path), on_progress=kill_my_backend)
    finally:
        killer.close()
    run = SyncRun.objects.get()
    assert run.status == "failed" and run.finished_at is not None and run.message
    assert not Instrument.objects.exists()


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_a_sync_killed_midway_is_closed_as_abandoned_by_the_next_one(tmp_path):
    """A real ``manage.py sync_instruments --url`` reading a slow download is SIGKILLed
    midway: its run stays ``running`` (nothing can record it), the tables are untouched,
    and the next sync closes the run as failed (abandoned) before doing its own work."""
    rows = nifty_universe()
    body = kite_csv(rows)
    half = body.index(b"\n", len(body) // 2) + 1
    slow = Route(body[:half], hold=threading.Event(), rest=body[half:])
    with fake_server({"/instruments": slow}) as server:
        env = child_env(DATABASE_URL=helpers.test_database_url(), LOG_FORMAT="text")
        argv = [sys.executable, "manage.py", "sync_instruments", "--url", server.url("/instruments")]
        with running(argv, env, tmp_path / "sync.log") as process:
            wait_for(server.started.is_set, timeout=60, what="the sync to start downloading")
            killed = wait_for(lambda: SyncRun.objects.filter(status="running").first(), timeout=30,
                              what="the running sync's record")  # fmt: skip
            assert killed.pid == process.pid and killed.host
            os.kill(process.pid, signal.SIGKILL)
            process.wait(timeout=30)
        assert process.returncode == -signal.SIGKILL
    killed.refresh_from_db()
    assert killed.status == "running"  # nothing could record it
    assert not Instrument.objects.exists()  # the transaction died with the process

    wait_for(lock_free, timeout=30, what="the killed sync's lock to be released")
    report = instrument_sync(source="kite", path=write(tmp_path / "d.csv", body))
    assert report.status == "ok" and report.inserted == len(rows)
    killed.refresh_from_db()
    assert killed.status == "failed" and killed.finished_at is not None
    assert killed.message.startswith(f"abandoned: the sync process (pid {process.pid} on {killed.host})")
    assert "nothing was changed" in killed.message
    assert list(SyncRun.objects.order_by("id").values_list("status", flat=True)) == ["failed", "ok"]


def test_a_run_is_only_abandoned_under_the_lock(tmp_path):
    """A sync refused because another holds the lock must not touch that one's record."""
    from tests.instruments.test_lock import lock_held_elsewhere

    live = SyncRun.objects.create(
        source="kite", input="x", started_at="2026-01-01T00:00:00Z", pid=1, host="h"
    )
    with lock_held_elsewhere(), pytest.raises(Exception, match="another instrument sync is running"):
        instrument_sync(source="kite", path=dump(tmp_path))
    live.refresh_from_db()
    assert live.status == "running"
    assert SyncRun.objects.exclude(pk=live.pk).get().status == "refused"
