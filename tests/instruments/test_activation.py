"""Switching streaming on while a sync delists the same rows, and the daily deactivation
of expired contracts (a service and a task taking the sync's lock)."""

import threading
from datetime import timedelta

import psycopg2
import pytest
from django.db import connection
from django.utils import timezone

from instruments.models import Instrument
from instruments.services import instruments_activate, instruments_deactivate_expired
from instruments.sync.errors import SyncLocked
from instruments.tasks import deactivate_expired_task
from tests.conftest import requires_postgres
from tests.factories import InstrumentFactory, NiftyOptionFactory
from tests.helpers import wait_for
from tests.instruments.test_lock import lock_held_elsewhere

pytestmark = pytest.mark.django_db


def other_connection():
    """A second, independent connection to the test database (another process's view)."""
    other = psycopg2.connect(**connection.get_connection_params())
    other.autocommit = False
    return other


def waiting_on_a_row_lock(monitor, pid: int) -> bool:
    with monitor.cursor() as cursor:
        cursor.execute("SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s", [pid])
        row = cursor.fetchone()
    return bool(row and row[0] == "Lock")


@requires_postgres
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("by", ["tokens", "ids"])
def test_activating_rows_a_sync_delists_meanwhile_refuses_them(by):
    """Two connections: a sync (here its UPDATE, uncommitted) delists a row; an activation
    of that row has already read it as listed and blocks on the row lock. When the sync
    commits, PostgreSQL re-checks the row: the activation must skip it and say so, not
    break the "delisted never active" constraint (an IntegrityError, a 500)."""
    doomed = InstrumentFactory(instrument_token=101)
    kept = InstrumentFactory(instrument_token=201)
    sync, monitor = other_connection(), other_connection()
    monitor.autocommit = True
    outcome: dict = {}

    def activate():
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_backend_pid()")
                outcome["pid"] = cursor.fetchone()[0]
            if by == "tokens":
                outcome["result"] = instruments_activate(tokens=[101, 201], by="operator")
            else:
                outcome["result"] = instruments_activate(ids=[doomed.pk, kept.pk], by="operator")
        except Exception as exc:  # noqa: BLE001 - reported below
            outcome["error"] = exc
        finally:
            connection.close()

    try:
        with sync.cursor() as cursor:
            cursor.execute(
                "UPDATE instruments SET is_listed = FALSE, is_active = FALSE, delisted_at = now() WHERE id = %s",
                [doomed.pk],
            )
        worker = threading.Thread(target=activate)
        worker.start()
        wait_for(lambda: "pid" in outcome and waiting_on_a_row_lock(monitor, outcome["pid"]) or "error" in outcome,
                 timeout=30, what="the activation to wait for the sync's row lock")  # fmt: skip
        sync.commit()
        worker.join(timeout=30)
    finally:
        sync.close()
        monitor.close()
    assert "error" not in outcome, repr(outcome.get("error"))
    result = outcome["result"]
    assert result.changed == 1 and result.active_count == 1
    assert result.refused == [f"{doomed}: delisted or changed by a sync meanwhile"]
    doomed.refresh_from_db(), kept.refresh_from_db()
    assert not doomed.is_active and not doomed.is_listed and kept.is_active


# --- deactivating expired contracts ---------------------------------------------------------------


@pytest.fixture
def contracts():
    today = timezone.localdate()
    return {
        "expired": NiftyOptionFactory(is_active=True, expiry=today - timedelta(days=1)),
        "today": NiftyOptionFactory(is_active=True, expiry=today),
        "later": NiftyOptionFactory(is_active=True, expiry=today + timedelta(days=30)),
        "equity": InstrumentFactory(is_active=True),
        "inactive": NiftyOptionFactory(expiry=today - timedelta(days=5)),
    }


def active(contracts) -> set[str]:
    ids = {i.pk: name for name, i in contracts.items()}
    return {ids[pk] for pk in Instrument.objects.filter(is_active=True).values_list("pk", flat=True)}


def test_expired_contracts_stop_streaming_and_the_rest_stay(contracts, django_capture_on_commit_callbacks):
    from instruments import selectors

    token = contracts["expired"].instrument_token
    assert selectors.instrument_meta(token)["is_active"] is True
    with django_capture_on_commit_callbacks(execute=True):
        assert instruments_deactivate_expired() == 1
    assert active(contracts) == {"today", "later", "equity"}
    selectors._local.clear()
    assert selectors.instrument_meta(token)["is_active"] is False  # the lookup cache was told
    assert instruments_deactivate_expired() == 0
    assert instruments_deactivate_expired(today=timezone.localdate() + timedelta(days=31)) == 2


def test_while_a_sync_holds_the_lock_nothing_changes(contracts):
    with lock_held_elsewhere(), pytest.raises(SyncLocked, match="expired instruments were not deactivated"):
        instruments_deactivate_expired(wait_seconds=0)
    assert active(contracts) == {"expired", "today", "later", "equity"}


def test_it_waits_for_a_running_sync_then_deactivates(contracts, caplog):
    """A sync holds the lock when the task starts: it waits (logging once why), and runs
    as soon as the sync releases it."""
    outcome: dict = {}
    release = threading.Event()

    def hold_lock():
        with lock_held_elsewhere():
            outcome["held"] = True
            release.wait(60)

    holder = threading.Thread(target=hold_lock)
    holder.start()
    wait_for(lambda: outcome.get("held"), what="the other sync to hold the lock")
    caplog.set_level("INFO", logger="instruments.services")

    def release_when_waiting():
        wait_for(lambda: "waiting up to 60s" in caplog.text, timeout=30, what="the task to wait for the lock")
        release.set()

    releaser = threading.Thread(target=release_when_waiting)
    releaser.start()
    try:
        assert instruments_deactivate_expired(wait_seconds=60) == 1
    finally:
        release.set()
        releaser.join(30), holder.join(30)
    assert active(contracts) == {"today", "later", "equity"}


def test_the_task_deactivates_and_reports_the_count(contracts):
    assert deactivate_expired_task() == {"deactivated": 1}
    assert active(contracts) == {"today", "later", "equity"}


def test_the_task_fails_visibly_when_a_sync_outlasts_the_wait(contracts, monkeypatch):
    from instruments import services

    monkeypatch.setattr(services, "EXPIRED_LOCK_WAIT_SECONDS", 0)
    with lock_held_elsewhere(), pytest.raises(SyncLocked, match="waited 0s"):
        deactivate_expired_task()
    assert active(contracts) == {"expired", "today", "later", "equity"}
