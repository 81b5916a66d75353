"""Raising an alert: one row per condition and repeat window, queued for the worker after
the caller's commit with the alert's id only, and never an exception into the caller."""

import logging
import threading
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from django.db import connection, transaction
from django_q.signals import pre_enqueue

from alerts.models import Alert, Kind, Outcome, Severity
from alerts.services import SEND_TASK, alert_raise
from oms.models import Strategy
from tests.alerts.conftest import TOKEN
from tests.conftest import requires_postgres
from tests.helpers import wait_for

pytestmark = pytest.mark.django_db
IST = ZoneInfo("Asia/Kolkata")
T0 = datetime(2026, 3, 2, 10, 0, tzinfo=IST)  # a Monday, in market hours


def kill(**overrides):
    fields = {
        "kind": Kind.KILL_SWITCH,
        "key": "alpha:HALTED:daily_loss",
        "subject": "Kill switch HALTED for strategy alpha (rule daily_loss)",
        "body": "Daily loss 51,000 over the limit 50,000.",
        "link": "/admin/oms/killswitchevent/7/change/",
        "severity": Severity.CRITICAL,
        "now": T0,
    }
    fields.update(overrides)
    return alert_raise(**fields)


def test_an_alert_is_recorded_and_queued_with_its_id_only_after_the_commit(
    enqueued, django_capture_on_commit_callbacks, settings
):
    settings.TELEGRAM_BOT_TOKEN = TOKEN
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        alert = kill()
        assert enqueued == []  # nothing leaves before the caller's transaction commits
    assert len(callbacks) == 1
    row = Alert.objects.get()
    assert row.pk == alert.pk
    assert (row.kind, row.key, row.severity) == ("kill_switch", "alpha:HALTED:daily_loss", "critical")
    assert row.subject == "Kill switch HALTED for strategy alpha (rule daily_loss)"
    assert row.created_at == row.last_raised_at == T0 and row.repeats == 0
    assert (row.telegram_outcome, row.email_outcome, row.sent_at) == (Outcome.PENDING, Outcome.PENDING, None)
    [task] = enqueued
    assert task["func"] == SEND_TASK
    assert task["args"] == () and task["kwargs"] == {"alert_id": alert.pk}
    assert TOKEN not in repr(task)


def test_the_same_condition_alerts_once_per_repeat_window(
    enqueued, django_capture_on_commit_callbacks, settings
):
    settings.ALERT_REPEAT_MINUTES = 30
    with django_capture_on_commit_callbacks(execute=True):
        first = kill()
        again = kill(now=T0 + timedelta(minutes=10), body="Daily loss 53,000.")
        later = kill(now=T0 + timedelta(minutes=29, seconds=59))
    assert again.pk == later.pk == first.pk
    row = Alert.objects.get()
    assert row.repeats == 2
    assert row.last_raised_at == T0 + timedelta(minutes=29, seconds=59)
    assert row.body == "Daily loss 51,000 over the limit 50,000."  # what was sent stays as sent
    assert len(enqueued) == 1

    with django_capture_on_commit_callbacks(execute=True):
        next_window = kill(now=T0 + timedelta(minutes=30, seconds=1))
        kill(now=T0 + timedelta(minutes=40))
    assert next_window.pk != first.pk
    assert Alert.objects.get(pk=next_window.pk).repeats == 1
    assert len(enqueued) == 2


def test_each_kind_and_key_is_its_own_condition(settings):
    kill()
    kill(key="beta:HALTED:daily_loss")
    kill(kind=Kind.ORDER_REJECTED)
    kill()
    assert Alert.objects.count() == 3
    assert Alert.objects.get(key="alpha:HALTED:daily_loss", kind=Kind.KILL_SWITCH).repeats == 1


def test_the_window_follows_the_setting(settings):
    settings.ALERT_REPEAT_MINUTES = 5
    kill()
    kill(now=T0 + timedelta(minutes=4))
    kill(now=T0 + timedelta(minutes=6))
    assert [a.repeats for a in Alert.objects.order_by("created_at")] == [1, 0]


def test_nothing_is_recorded_or_sent_when_the_callers_transaction_rolls_back(
    enqueued, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True), pytest.raises(RuntimeError), transaction.atomic():
        assert kill() is not None
        raise RuntimeError("the caller's change failed")
    assert not Alert.objects.exists()
    assert enqueued == []


def test_links_are_absolute_with_portal_base_url_and_paths_without(settings):
    settings.PORTAL_BASE_URL = ""
    assert kill().link == "/admin/oms/killswitchevent/7/change/"
    settings.PORTAL_BASE_URL = "https://desk.example.com"
    assert kill(key="b").link == "https://desk.example.com/admin/oms/killswitchevent/7/change/"
    assert kill(key="c", link="https://kite.zerodha.com/orders").link == "https://kite.zerodha.com/orders"
    for bad in ("javascript:alert(1)", "//evil.example.com/x", "/x" * 300):
        assert kill(key=f"bad-{len(bad)}-{bad[:2]}", link=bad).link == ""


def test_subject_is_one_line_and_secrets_never_reach_the_row(settings):
    settings.KITE_ACCESS_TOKEN = "kite-access-token-of-today-0123456789"
    alert = kill(
        subject=f"Kite refused\ntoken {settings.KITE_ACCESS_TOKEN}" + " and more" * 40,
        body=f"GET /orders?access_token={settings.KITE_ACCESS_TOKEN}&x=1 failed",
        key=f"kite:{settings.KITE_ACCESS_TOKEN}",
    )
    row = Alert.objects.get(pk=alert.pk)
    assert (
        "\n" not in row.subject
        and len(row.subject) <= 200
        and row.subject.startswith("Kite refused token ****")
    )
    for text in (row.subject, row.body, row.key):
        assert settings.KITE_ACCESS_TOKEN not in text


def test_odd_arguments_are_recorded_not_refused(caplog):
    with caplog.at_level(logging.WARNING, logger="alerts.services"):
        loud = kill(severity="LOUD", kind="something_new", subject="")
    assert (loud.severity, loud.kind, loud.subject) == ("warning", "something_new", "something_new")
    assert "severity 'LOUD'" in caplog.text and "kind 'something_new'" in caplog.text
    long_key = "order:" + "9" * 400
    assert kill(key=long_key).pk == kill(key=long_key).pk
    assert len(Alert.objects.get(kind=Kind.KILL_SWITCH).key) == 200
    assert kill(key=long_key[:-1] + "8").pk != kill(key=long_key).pk  # still told apart


def _refuse_alert_writes():
    """Make the database refuse every write to the alerts table (a trigger), as a full disk
    or a broken constraint would; rolled back with the test's transaction."""
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(
                "CREATE FUNCTION alerts_refuse() RETURNS trigger AS $$ BEGIN RAISE EXCEPTION 'refused by the test';"
                " END $$ LANGUAGE plpgsql"
            )
            cursor.execute(
                "CREATE TRIGGER alerts_refuse BEFORE INSERT OR UPDATE ON alerts_alert "
                "FOR EACH ROW EXECUTE FUNCTION alerts_refuse()"
            )
        else:
            cursor.execute(
                "CREATE TRIGGER alerts_refuse BEFORE INSERT ON alerts_alert "
                "BEGIN SELECT RAISE(ABORT, 'refused by the test'); END"
            )


def test_the_caller_never_sees_an_exception_when_the_database_refuses_the_write(caplog):
    _refuse_alert_writes()
    with caplog.at_level(logging.ERROR, logger="alerts.services"), transaction.atomic():
        Strategy.objects.create(name="alpha")  # the caller's own write, in its transaction
        assert kill() is None
        # The caller's transaction is intact (PostgreSQL would refuse every statement of a
        # transaction whose statement failed outside a savepoint) and goes on.
        Strategy.objects.create(name="beta")
    assert set(Strategy.objects.values_list("name", flat=True)) >= {"alpha", "beta"}
    assert "recording a kill_switch alert failed" in caplog.text
    assert "refused by the test" in caplog.text


def test_the_caller_never_sees_an_exception_when_the_queue_is_down(
    django_capture_on_commit_callbacks, caplog
):
    def queue_down(sender, task, **kwargs):
        raise ConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")

    pre_enqueue.connect(queue_down, dispatch_uid="tests.alerts.queue_down")
    try:
        with (
            caplog.at_level(logging.ERROR, logger="alerts.services"),
            django_capture_on_commit_callbacks(execute=True),
        ):
            alert = kill()
    finally:
        pre_enqueue.disconnect(dispatch_uid="tests.alerts.queue_down")
    row = Alert.objects.get(pk=alert.pk)
    assert row.telegram_outcome == row.email_outcome == Outcome.PENDING  # the retry schedule sends it
    assert row.telegram_error.startswith("not queued (ConnectionError)")
    assert "queueing an alert for sending failed" in caplog.text


@requires_postgres
@pytest.mark.django_db(transaction=True)
def test_two_processes_raising_one_condition_together_record_one_alert(monkeypatch):
    """A raise holds the condition until its transaction ends; a second raise meanwhile
    waits for it and then counts as a repeat instead of recording a second alert."""
    import alerts.services

    monkeypatch.setattr(
        alerts.services, "LOCK_WAIT_SECONDS", 60.0
    )  # this test decides when the first commits
    first_raised, commit_first, results = threading.Event(), threading.Event(), {}

    def first():
        try:
            with transaction.atomic():
                results["first"] = kill()
                first_raised.set()
                commit_first.wait(timeout=60)
        finally:
            connection.close()

    def second():
        try:
            results["second"] = kill(now=T0 + timedelta(seconds=1))
        finally:
            connection.close()

    threads = [threading.Thread(target=first)]
    threads[0].start()
    assert first_raised.wait(timeout=30)
    threads.append(threading.Thread(target=second))
    threads[1].start()

    def second_waits_on_the_lock():
        with connection.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted")
            return cursor.fetchone()[0] == 1

    try:
        wait_for(second_waits_on_the_lock, what="the second raise to wait for the first")
    finally:
        commit_first.set()
    for thread in threads:
        thread.join(timeout=30)
    assert results["first"].pk == results["second"].pk
    assert Alert.objects.count() == 1 and Alert.objects.get().repeats == 1
