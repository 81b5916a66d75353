"""Reconciliation with Kite (oms/reconciliation/) against the fake Kite REST server
(tests/fakes/kite_rest.py): what Kite's books prove is fixed once, through the update
service; every other kind of difference is found, confirmed by a second run, recorded once
and alerted; Kite unreachable, the lock, the command and its exit codes, the schedule."""

import itertools
import json
import subprocess
import sys
import threading
from datetime import timedelta
from decimal import Decimal as D
from io import StringIO

import pytest
from django.conf import settings as django_settings
from django.core.management import CommandError, call_command
from django.utils import timezone

from alerts.models import Alert
from oms import state
from oms.brokers.kite import KiteBroker, order_tag
from oms.models import Order, OrderEvent, Position, ReconciliationIssue, ReconciliationRun, Strategy, Trade
from oms.reconciliation import LOCK, reconciliation_run, reconciliation_scheduled
from oms.updates import Fill, OrderUpdate, order_update
from tests.oms import book_fixtures
from tradingportal.locks import LockHeld, named_lock

kite, live, infy = book_fixtures.kite, book_fixtures.live, book_fixtures.infy  # shared fixtures
pytestmark = pytest.mark.django_db(transaction=False)
_keys = itertools.count(1)


def live_order(strategy, instrument, *, quantity=10, order_type="LIMIT", price="1500.05", side="BUY",
               product="MIS", send=True):  # fmt: skip
    """A LIVE order as the services store it, sent to Kite with its answer applied (send)."""
    now = timezone.now()
    order = Order.objects.create(
        strategy=strategy, instrument=instrument, exchange=instrument.exchange, tradingsymbol=instrument.tradingsymbol,
        instrument_token=instrument.instrument_token, transaction_type=side, quantity=quantity, product=product,
        order_type=order_type, price=D(price), broker="kite", idempotency_key=f"recon-{next(_keys)}",
        pending_quantity=quantity, placed_at=now, updated_at=now,
    )  # fmt: skip
    if send:
        update = KiteBroker().place(order)
        order_update(order_id=order.pk, update=update, source="kite", broker="kite", actor="test")
        order.refresh_from_db()
    return order


def reconcile():
    return reconciliation_run(triggered_by="test")


def found(report):
    return sorted(d["kind"] for d in report.differences)


def twice():
    """Two runs in a row: the second records what both found."""
    reconcile()
    return reconcile()


# --- nothing live, nothing asked ------------------------------------------------------------------


def test_without_a_live_strategy_or_an_open_kite_order_kite_is_not_asked(kite, infy):
    Strategy.objects.create(name="paper-desk", mode="PAPER")
    report = reconcile()
    assert report.status == "skipped" and "nothing to reconcile" in report.message
    assert kite.calls == [] and not ReconciliationRun.objects.exists()
    out = StringIO()
    call_command("reconcile", stdout=out)  # exit 0
    assert "nothing to reconcile" in out.getvalue()


# --- safe fixes -------------------------------------------------------------------------------------


def test_a_status_and_fills_we_missed_are_applied_once_and_logged_as_reconciliation_events(kite, live, infy):
    order = live_order(live, infy)
    kite.fill(order.broker_order_id, quantity=4, price="1500.00")
    kite.fill(order.broker_order_id)

    report = reconcile()
    order.refresh_from_db()
    assert (order.status, order.filled_quantity) == (state.COMPLETE, 10)
    assert report.status == "ok" and report.differences == []
    assert [(f["kind"], f["new_status"]) for f in report.fixes] == [("fill", "OPEN"), ("fill", "COMPLETE")]
    assert report.run.counts["fixed_fills"] == 2
    logged = OrderEvent.objects.filter(order=order, source="reconcile")
    assert [(e.kind, e.actor) for e in logged] == [("fill", "reconciliation"), ("fill", "reconciliation")]

    again = reconcile()
    assert again.fixes == [] and again.differences == []
    assert OrderEvent.objects.filter(order=order, source="reconcile").count() == 2
    assert Trade.objects.filter(order=order).count() == 2
    assert not ReconciliationIssue.objects.exists()
    assert Position.objects.get(strategy=live).quantity == 10  # matches Kite's: no position difference


# --- recording ------------------------------------------------------------------------------------------


def test_a_difference_is_recorded_once_two_runs_in_a_row_find_it_and_not_again(
    kite, live, infy, django_capture_on_commit_callbacks
):
    live_order(live, infy)
    manual = kite.place_direct(exchange="NSE", tradingsymbol="INFY", transaction_type="BUY", quantity=5)

    first = reconcile()
    assert found(first) == ["order_unknown", "position_unknown"]
    assert {d["recorded"] for d in first.differences} == {"unconfirmed"}
    assert not ReconciliationIssue.objects.exists()

    with django_capture_on_commit_callbacks(execute=True):
        second = reconcile()
    assert {d["recorded"] for d in second.differences} == {"new"}
    unknown = ReconciliationIssue.objects.get(kind="order_unknown")
    assert (unknown.exchange, unknown.tradingsymbol, unknown.instrument_id) == ("NSE", "INFY", infy.pk)
    assert unknown.broker["order_id"] == manual and unknown.broker["quantity"] == 5 and unknown.ours == {}
    position = ReconciliationIssue.objects.get(kind="position_unknown")
    assert (position.ours["quantity"], position.broker["quantity"]) == (0, 5)
    assert Alert.objects.filter(kind="reconciliation").count() == 2
    assert second.run.counts["new_issues"] == 2

    with django_capture_on_commit_callbacks(execute=True):
        third = reconcile()
    assert {d["recorded"] for d in third.differences} == {"open"}
    assert (
        ReconciliationIssue.objects.count() == 2 and Alert.objects.filter(kind="reconciliation").count() == 2
    )
    unknown.refresh_from_db()
    assert unknown.seen_at >= third.run.started_at


def test_a_resolved_difference_found_again_is_not_recorded_again(kite, live, infy, staff_user):
    from oms.reconciliation import reconciliation_issue_resolve

    live_order(live, infy)
    kite.place_direct(exchange="NSE", tradingsymbol="INFY", transaction_type="BUY", quantity=5)
    twice()
    for issue in ReconciliationIssue.objects.all():
        reconciliation_issue_resolve(issue_id=issue.pk, resolution="dismissed", note="desk's manual hedge",
                                     by=staff_user)  # fmt: skip
    report = reconcile()
    assert {d["recorded"] for d in report.differences} == {"resolved before"}
    assert ReconciliationIssue.objects.count() == 2


# --- each kind ------------------------------------------------------------------------------------------


def test_an_order_of_ours_at_kite_twice_is_a_duplicate(kite, live, infy):
    order = live_order(live, infy)
    again = kite.place_direct(exchange="NSE", tradingsymbol="INFY", transaction_type="BUY", quantity=10,
                              order_type="LIMIT", price="1500.05", tag=order_tag(order.pk))  # fmt: skip
    report = twice()
    assert found(report) == ["order_duplicate"]
    issue = ReconciliationIssue.objects.get(kind="order_duplicate")
    assert (issue.order, issue.broker["order_id"], issue.ours["broker_order_id"]) == (order, again,
                                                                                      order.broker_order_id)  # fmt: skip


def test_an_order_open_here_that_kite_does_not_have_is_missing(kite, live, infy):
    order = live_order(live, infy, send=False)  # the placement never reached Kite
    report = twice()
    assert found(report) == ["order_missing"]
    issue = ReconciliationIssue.objects.get()
    assert (issue.order, issue.ours["status"], issue.ours["tag"]) == (order, state.PUT_ORDER_REQ_RECEIVED,
                                                                      f"TP{order.pk}")  # fmt: skip


def test_an_order_kite_completed_without_the_trades_to_prove_it_is_closed_at_kite(kite, live, infy):
    order = live_order(live, infy, order_type="MARKET", price="0")
    kite.hide_trades(order.broker_order_id)
    report = twice()
    assert found(report) == ["order_closed", "position_unknown"]
    issue = ReconciliationIssue.objects.get(kind="order_closed")
    assert (issue.ours["status"], issue.ours["filled_quantity"]) == (state.PUT_ORDER_REQ_RECEIVED, 0)
    assert (issue.broker["status"], issue.broker["filled_quantity"], issue.broker["average_price"]) == (
        "COMPLETE",
        10,
        "100.0000",
    )
    order.refresh_from_db()
    assert order.filled_quantity == 0  # never inferred by a run: a person decides


def test_an_order_finished_here_and_working_at_kite_is_a_status_mismatch(kite, live, infy):
    order = live_order(live, infy)
    order_update(update=OrderUpdate(status=state.CANCELLED, broker_order_id=order.broker_order_id),
                 source="postback", broker="kite")  # a cancel Kite never carried out  # fmt: skip
    report = twice()
    assert found(report) == ["status_mismatch"]
    issue = ReconciliationIssue.objects.get()
    assert (issue.ours["status"], issue.broker["status"]) == (state.CANCELLED, state.OPEN)


def test_another_filled_quantity_at_kite_is_a_filled_quantity_difference(kite, live, infy):
    order = live_order(live, infy)
    reconcile()  # OPEN here
    kite.amend(order.broker_order_id, filled_quantity=5, pending_quantity=5, average_price=D("1500"))
    report = twice()
    assert found(report) == ["filled_quantity"]
    issue = ReconciliationIssue.objects.get()
    assert (issue.ours["filled_quantity"], issue.broker["filled_quantity"]) == (0, 5)


def test_a_kite_trade_the_update_service_refuses_is_a_missing_fill(kite, live, infy):
    order = live_order(live, infy)
    order_update(update=OrderUpdate(status=state.REJECTED, broker_order_id=order.broker_order_id,
                                    status_message="RMS"), source="postback", broker="kite")  # fmt: skip
    kite.fill(order.broker_order_id, quantity=3)
    report = twice()
    assert found(report) == ["fill_missing", "position_unknown", "status_mismatch"]
    issue = ReconciliationIssue.objects.get(kind="fill_missing")
    assert (issue.order, issue.broker["quantity"], issue.broker["price"]) == (order, 3, "1500.0500")


def test_a_trade_id_recorded_with_other_data_is_a_fill_conflict(kite, live, infy):
    order = live_order(live, infy)
    trade_id = kite.fill(order.broker_order_id, quantity=4, price="1500.00")
    fill_id = f"{order.broker_order_id}:{trade_id}"
    order_update(update=OrderUpdate(fills=[Fill(trade_id=fill_id, quantity=4, price=D("1499.00"))]),
                 order_id=order.pk, source="postback", broker="kite")  # fmt: skip
    report = twice()
    assert "fill_conflict" in found(report)
    issue = ReconciliationIssue.objects.get(kind="fill_conflict")
    assert (issue.ours["trade"]["price"], issue.broker["price"]) == ("1499.0000", "1500.0000")
    assert Trade.objects.get(trade_id=fill_id).price == D("1499.00")  # never rewritten


def test_another_quantity_or_average_price_at_kite_is_a_position_difference(kite, live, infy):
    order = live_order(live, infy)
    kite.fill(order.broker_order_id)
    reconcile()  # filled here too: the positions agree
    kite.adjust_position("NSE:INFY", "MIS", quantity=7)
    assert found(twice()) == ["position_quantity"]
    kite.adjust_position("NSE:INFY", "MIS", average_price=D("1490.10"))
    report = twice()
    assert found(report) == ["position_average"]
    issue = ReconciliationIssue.objects.get(kind="position_average")
    assert (issue.ours["averages"], issue.broker["average_price"]) == (
        ["1500.0500", "1500.0500"],
        "1490.1000",
    )
    assert issue.ours["strategies"] == {"live-desk": 10}


def test_kites_day_average_of_a_position_built_and_reduced_is_not_a_difference(kite, live, infy):
    """Kite averages all the day's buys; ours is the weighted cost of what is open: either agrees."""
    for side, quantity, price in (("BUY", 10, "100"), ("SELL", 5, "110"), ("BUY", 5, "120")):
        kite.prices["NSE:INFY"] = D(price)
        order = live_order(live, infy, order_type="MARKET", price="0", side=side, quantity=quantity)
        reconcile()
        order.refresh_from_db()
        assert order.status == state.COMPLETE
    position = Position.objects.get(strategy=live)
    assert (position.quantity, position.average_price) == (10, D("110"))
    assert KiteBroker().positions()[0]["average_price"].quantize(D("0.0001")) == D("106.6667")
    assert found(twice()) == []


# --- Kite unreachable, the lock, failures ----------------------------------------------------------------


def test_kite_unreachable_ends_the_run_unreachable_and_the_command_exits_6(kite, live, infy):
    order = live_order(live, infy)
    kite.fill(order.broker_order_id)
    kite.fail_next("503", method="GET", path="/portfolio/positions", times=2)  # the last of the three books
    report = reconcile()
    assert report.status == "unreachable" and "Kite's books could not be read" in report.message
    run = ReconciliationRun.objects.get()
    assert run.status == "unreachable" and "NetworkException" in run.error and run.finished_at
    order.refresh_from_db()
    assert order.filled_quantity == 0  # nothing applied from half the books

    kite.fail_next("503", method="GET", path="/orders", times=2)
    out = StringIO()
    with pytest.raises(CommandError, match="Kite's books could not be read") as failed:
        call_command("reconcile", "--json", stdout=out)
    assert failed.value.returncode == 6
    assert json.loads(out.getvalue())["status"] == "unreachable"


def test_a_refused_token_ends_the_run_unreachable_and_alerts_kite_login_needed(kite, live, infy):
    live_order(live, infy)
    kite.revoke(kite.access_token)
    report = reconcile()
    assert report.status == "unreachable" and "Kite login needed" in report.message
    assert Alert.objects.filter(kind="kite_login").exists()


def test_runs_never_overlap(kite, live, infy):
    live_order(live, infy)
    held, release = threading.Event(), threading.Event()

    def hold():
        from django.db import connection

        try:
            with named_lock(LOCK):
                held.set()
                release.wait(timeout=60)
        finally:
            connection.close()

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert held.wait(timeout=30)
        with pytest.raises(LockHeld):
            reconcile()
        with pytest.raises(CommandError, match="another reconciliation is running") as busy:
            call_command("reconcile", stdout=StringIO())
        assert busy.value.returncode == 5
    finally:
        release.set()
        holder.join(timeout=30)
    assert reconcile().status == "ok"


def test_an_unexpected_error_fails_the_run_and_the_command_exits_1(kite, live, infy, monkeypatch):
    live_order(live, infy)

    def broken(**kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr("oms.reconciliation.run.position_differences", broken)
    with pytest.raises(CommandError, match="reconciliation failed: RuntimeError: a bug") as failed:
        call_command("reconcile", stdout=StringIO())
    assert failed.value.returncode == 1
    run = ReconciliationRun.objects.get()
    assert (run.status, run.error) == ("failed", "RuntimeError: a bug")


def test_a_run_its_process_abandoned_is_closed_by_the_next(kite, live, infy):
    live_order(live, infy)
    stale = ReconciliationRun.objects.create(started_at=timezone.now() - timedelta(minutes=5))
    reconcile()
    stale.refresh_from_db()
    assert stale.status == "failed" and "abandoned" in stale.error


# --- the command -------------------------------------------------------------------------------------


def test_the_command_prints_its_report_as_json(kite, live, infy):
    live_order(live, infy)
    kite.place_direct(exchange="NSE", tradingsymbol="INFY", transaction_type="SELL", quantity=2)
    call_command("reconcile", stdout=StringIO())
    out = StringIO()
    call_command("reconcile", "--json", stdout=out)  # exit 0: it ran, whatever it found
    report = json.loads(out.getvalue())
    run = ReconciliationRun.objects.order_by("-id").first()
    assert (report["run"], report["status"], report["triggered_by"]) == (run.pk, "ok", "command")
    assert report["counts"]["matched"] == 1 and report["counts"]["new_issues"] == 2
    assert "found" not in report["counts"]
    issue = ReconciliationIssue.objects.get(kind="order_unknown")
    unknown = next(d for d in report["differences"] if d["kind"] == "order_unknown")
    assert (unknown["recorded"], unknown["issue"], unknown["broker"]["transaction_type"]) == ("new", issue.pk,
                                                                                             "SELL")  # fmt: skip
    text = StringIO()
    call_command("reconcile", stdout=text)
    assert "order_unknown NSE:INFY: open (issue" in text.getvalue()


def test_a_dry_run_reports_what_a_run_would_do_and_writes_nothing(kite, live, infy):
    order = live_order(live, infy)
    kite.fill(order.broker_order_id)
    out = StringIO()
    call_command("reconcile", "--dry-run", "--json", stdout=out)
    report = json.loads(out.getvalue())
    assert report["dry_run"] is True and report["run"] is None
    assert [f["new_status"] for f in report["fixes"]] == [state.COMPLETE]
    order.refresh_from_db()
    assert order.filled_quantity == 0 and not ReconciliationRun.objects.exists()
    assert not OrderEvent.objects.filter(source="reconcile").exists()


# --- the schedule ------------------------------------------------------------------------------------


class Clock:
    def __init__(self):
        self.now, self.sleeps = 1000.0, []

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.sleeps.append(seconds)
        self.now += seconds


def test_the_schedules_task_runs_the_minutes_runs_reconcile_seconds_apart(kite, live, infy, settings):
    live_order(live, infy)
    clock = Clock()
    settings.RECONCILE_SECONDS = 30
    results = reconciliation_scheduled(sleep=clock.sleep, clock=clock)
    assert [r["status"] for r in results] == ["ok", "ok"] and clock.sleeps == [30.0]
    assert ReconciliationRun.objects.filter(triggered_by="schedule").count() == 2

    settings.RECONCILE_SECONDS = 20
    ReconciliationRun.objects.update(started_at=timezone.now() - timedelta(minutes=1))
    clock.sleeps = []
    assert len(reconciliation_scheduled(sleep=clock.sleep, clock=clock)) == 3
    assert clock.sleeps == [20.0, 20.0]


def test_the_schedules_run_is_skipped_when_another_began_less_than_half_a_period_ago(
    kite, live, infy, settings
):
    live_order(live, infy)
    settings.RECONCILE_SECONDS = 30
    call_command("reconcile", stdout=StringIO())
    clock = Clock()
    results = reconciliation_scheduled(sleep=clock.sleep, clock=clock)
    assert results[0]["status"] == "skipped" and "less than half a period" in results[0]["message"]


def test_the_reconciliation_schedule_is_registered_once_a_minute():
    from django_q.models import Schedule

    from tradingportal.schedules import planned_schedules

    [plan] = [p for p in planned_schedules() if p.name == "oms: reconciliation"]
    assert (plan.func, plan.schedule_type, plan.minutes) == (
        "oms.tasks.reconciliation_task",
        Schedule.MINUTES,
        1,
    )
    assert django_settings.Q_CLUSTER["catch_up"] is False


def test_a_period_the_schedule_cannot_keep_is_refused_at_start_up(tmp_path):
    env = {
        "RECONCILE_SECONDS": "45",
        "SECRET_KEY": "x" * 50,
        "PATH": "/usr/bin:/bin",
        "ENV_FILE": str(tmp_path / "none"),
    }
    started = subprocess.run(
        [sys.executable, "-c", "import django, os; os.environ['DJANGO_SETTINGS_MODULE']='tradingportal.settings'; "
         "django.setup()"], env=env, capture_output=True, text=True, cwd=django_settings.BASE_DIR, timeout=120,
    )  # fmt: skip
    assert started.returncode != 0
    assert "RECONCILE_SECONDS=45 must be 10, 12, 15, 20 or 30" in started.stderr
