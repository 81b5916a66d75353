"""People and reconciliation issues: resolving them in the admin (accept Kite's side through the
update service, keep ours with a note, dismiss; read-only otherwise) against issues real runs
found at the fake Kite REST server, and reading runs and issues through the API."""

import itertools
from datetime import timedelta
from decimal import Decimal as D

import pytest
from django.contrib.admin.models import LogEntry
from django.contrib.auth.models import Permission
from django.utils import timezone

from oms import state
from oms.brokers.kite import KiteBroker
from oms.models import Order, OrderEvent, Position, ReconciliationIssue, ReconciliationRun, Trade
from oms.reconciliation import reconciliation_run
from oms.updates import OrderUpdate, order_update
from tests.oms import book_fixtures

kite, live, infy = book_fixtures.kite, book_fixtures.live, book_fixtures.infy  # shared fixtures
pytestmark = pytest.mark.django_db
_keys = itertools.count(1)
ISSUES = "/admin/oms/reconciliationissue/"


def live_order(strategy, instrument, *, quantity=10, order_type="LIMIT", price="1500.05", send=True):
    now = timezone.now()
    order = Order.objects.create(
        strategy=strategy, instrument=instrument, exchange=instrument.exchange, tradingsymbol=instrument.tradingsymbol,
        instrument_token=instrument.instrument_token, transaction_type="BUY", quantity=quantity, product="MIS",
        order_type=order_type, price=D(price), broker="kite", idempotency_key=f"resolve-{next(_keys)}",
        pending_quantity=quantity, placed_at=now, updated_at=now,
    )  # fmt: skip
    if send:
        order_update(
            order_id=order.pk, update=KiteBroker().place(order), source="kite", broker="kite", actor="test"
        )
        order.refresh_from_db()
    return order


def found_twice():
    reconciliation_run(triggered_by="test")
    reconciliation_run(triggered_by="test")


def resolve(client, issue, resolution, note=""):
    return client.post(f"{ISSUES}{issue.pk}/change/", {"resolution": resolution, "note": note})


# --- accepting Kite's side -----------------------------------------------------------------------------


def test_accepting_kites_side_of_a_closed_order_applies_the_inferred_fill_and_the_status(
    kite, live, infy, staff_client, staff_user
):
    kite.prices["NSE:INFY"] = D("1498.35")
    order = live_order(live, infy, order_type="MARKET", price="0")
    kite.hide_trades(order.broker_order_id)  # Kite's trade book never shows them
    found_twice()
    issue = ReconciliationIssue.objects.get(kind="order_closed")
    page = staff_client.get(f"{ISSUES}{issue.pk}/change/").content.decode()
    assert 'name="resolution"' in page and "Kite&#x27;s" in page

    response = resolve(staff_client, issue, "accept_broker", "Kite's contract note shows the fill")
    assert response.status_code == 302
    order.refresh_from_db()
    assert (order.status, order.filled_quantity, order.average_price) == (state.COMPLETE, 10, D("1498.35"))
    [trade] = Trade.objects.filter(order=order)
    assert trade.trade_id == f"reconcile:{issue.pk}"
    applied = OrderEvent.objects.filter(order=order, source="reconcile", actor="operator")
    assert [e.kind for e in applied] == ["fill"]
    assert Position.objects.get(strategy=live).quantity == 10
    issue.refresh_from_db()
    assert (issue.resolved, issue.resolution, issue.resolved_by) == (True, "accept_broker", staff_user)
    assert issue.note == "Kite's contract note shows the fill" and issue.resolved_at


def test_accepting_kites_side_of_a_missing_order_closes_it_here(kite, live, infy, staff_client):
    order = live_order(live, infy, send=False)
    found_twice()
    issue = ReconciliationIssue.objects.get(kind="order_missing")
    assert resolve(staff_client, issue, "accept_broker").status_code == 302
    order.refresh_from_db()
    assert order.status == state.CANCELLED and "not in Kite's order book" in order.status_message


def test_accepting_kites_side_is_refused_when_the_order_changed_since_the_run(kite, live, infy, staff_client):
    order = live_order(live, infy, order_type="MARKET", price="0")
    kite.hide_trades(order.broker_order_id)
    found_twice()
    issue = ReconciliationIssue.objects.get(kind="order_closed")
    kite.hide_trades(order.broker_order_id, hidden=False)
    reconciliation_run(triggered_by="test")  # the fills came: the order is COMPLETE now
    response = resolve(staff_client, issue, "accept_broker")
    assert (
        response.status_code == 200 and "the order changed since this was found" in response.content.decode()
    )
    issue.refresh_from_db()
    assert not issue.resolved
    assert Trade.objects.filter(order=order).count() == 1  # no inferred fill on top of the real one


def test_kites_side_the_state_machine_refuses_is_a_form_error(kite, live, infy, staff_client):
    order = live_order(live, infy)
    order_update(update=OrderUpdate(status=state.CANCELLED, broker_order_id=order.broker_order_id),
                 source="postback", broker="kite")  # fmt: skip
    found_twice()
    issue = ReconciliationIssue.objects.get(kind="status_mismatch")
    response = resolve(staff_client, issue, "accept_broker")
    assert "cannot go from CANCELLED to Kite&#x27;s OPEN" in response.content.decode()
    order.refresh_from_db()
    assert order.status == state.CANCELLED


def test_kites_side_the_update_service_refuses_changes_nothing_and_says_why(kite, live, infy, staff_client):
    order = live_order(live, infy)
    order_update(update=OrderUpdate(status=state.REJECTED, broker_order_id=order.broker_order_id),
                 source="postback", broker="kite")  # fmt: skip
    kite.fill(order.broker_order_id, quantity=3)
    found_twice()
    issue = ReconciliationIssue.objects.get(kind="fill_missing")
    logged = LogEntry.objects.count()
    response = resolve(staff_client, issue, "accept_broker")
    assert response.status_code == 302 and response.url == f"{ISSUES}{issue.pk}/change/"
    shown = staff_client.get(response.url).content.decode()
    assert "Not resolved: the update service did not apply the broker&#x27;s side" in shown
    issue.refresh_from_db()
    order.refresh_from_db()
    assert not issue.resolved and order.filled_quantity == 0
    assert LogEntry.objects.count() == logged  # the admin's history does not claim a change


def test_a_fill_conflict_cannot_be_accepted_and_a_position_is_recorded_only(kite, live, infy, staff_client):
    order = live_order(live, infy)
    kite.fill(order.broker_order_id)
    reconciliation_run(triggered_by="test")
    kite.adjust_position("NSE:INFY", "MIS", quantity=7)
    found_twice()
    issue = ReconciliationIssue.objects.get(kind="position_quantity")
    assert resolve(staff_client, issue, "accept_broker", "3 squared off by Kite's RMS").status_code == 302
    issue.refresh_from_db()
    assert (issue.resolution, issue.ours["quantity"], issue.broker["quantity"]) == ("accept_broker", 10, 7)
    assert Position.objects.get(strategy=live).quantity == 10  # positions move only with fills

    conflict = ReconciliationIssue(kind="fill_conflict", order=order, run=issue.run, fingerprint="fill_conflict:x",
                                   created_at=timezone.now(), seen_at=timezone.now())  # fmt: skip
    conflict.save()
    response = resolve(staff_client, conflict, "accept_broker")
    assert "a recorded fill is never rewritten" in response.content.decode()


# --- keeping ours, dismissing, read-only -----------------------------------------------------------------


def test_keeping_ours_needs_a_note_that_goes_on_the_orders_audit_trail(kite, live, infy, staff_client):
    order = live_order(live, infy, send=False)
    found_twice()
    issue = ReconciliationIssue.objects.get()
    response = resolve(staff_client, issue, "accept_ours")
    assert response.status_code == 200 and "say in the note why ours is right" in response.content.decode()
    assert resolve(staff_client, issue, "accept_ours", "placed by phone with the dealer").status_code == 302
    issue.refresh_from_db()
    assert (issue.resolved, issue.resolution) == (True, "accept_ours")
    event = OrderEvent.objects.get(order=order, source="reconcile")
    assert event.actor == "operator" and "kept ours: placed by phone with the dealer" in event.message
    order.refresh_from_db()
    assert order.status == state.PUT_ORDER_REQ_RECEIVED


def test_a_resolved_issue_is_read_only_and_nothing_is_added_or_deleted(kite, live, infy, staff_client):
    live_order(live, infy, send=False)
    found_twice()
    issue = ReconciliationIssue.objects.get()
    assert resolve(staff_client, issue, "dismissed").status_code == 302
    page = staff_client.get(f"{ISSUES}{issue.pk}/change/").content.decode()
    assert 'name="resolution"' not in page and "Dismissed" in page
    assert resolve(staff_client, issue, "accept_broker").status_code == 403
    assert staff_client.get(f"{ISSUES}add/").status_code == 403
    assert staff_client.post(f"{ISSUES}{issue.pk}/delete/", {"post": "yes"}).status_code == 403


def test_open_issues_are_dismissed_from_the_list(kite, live, infy, staff_client):
    live_order(live, infy, send=False)
    live_order(live, infy, send=False)
    found_twice()
    ids = list(ReconciliationIssue.objects.values_list("pk", flat=True))
    response = staff_client.post(ISSUES, {"action": "dismiss_selected", "_selected_action": ids})
    assert response.status_code == 302
    assert set(ReconciliationIssue.objects.values_list("resolution", flat=True)) == {"dismissed"}


def test_a_viewer_sees_issues_but_cannot_resolve_them(kite, live, infy, client, django_user_model):
    live_order(live, infy, send=False)
    found_twice()
    issue = ReconciliationIssue.objects.get()
    viewer = django_user_model.objects.create_user(
        username="risk-viewer", password="x-pass-12345", is_staff=True
    )
    viewer.user_permissions.add(Permission.objects.get(codename="view_reconciliationissue"))
    client.force_login(viewer)
    assert client.get(ISSUES).status_code == 200
    assert 'name="resolution"' not in client.get(f"{ISSUES}{issue.pk}/change/").content.decode()
    assert resolve(client, issue, "dismissed").status_code == 403
    issue.refresh_from_db()
    assert not issue.resolved


def test_the_issue_and_run_lists_take_a_bounded_number_of_queries(
    kite, live, infy, staff_client, django_assert_max_num_queries
):
    for _ in range(3):
        live_order(live, infy, send=False)
    kite.place_direct(exchange="NSE", tradingsymbol="INFY", transaction_type="BUY", quantity=5)
    found_twice()
    assert ReconciliationIssue.objects.count() == 5
    with django_assert_max_num_queries(12):
        page = staff_client.get(ISSUES)
    assert page.status_code == 200 and "order_unknown" in page.content.decode()
    with django_assert_max_num_queries(12):
        assert staff_client.get("/admin/oms/reconciliationrun/").status_code == 200
    run = ReconciliationRun.objects.order_by("-id").first()
    page = staff_client.get(f"/admin/oms/reconciliationrun/{run.pk}/change/").content.decode()
    assert "new_issues" in page and 'name="status"' not in page  # read-only


# --- the API -------------------------------------------------------------------------------------------


@pytest.fixture
def recorded(db):
    now = timezone.now()
    run = ReconciliationRun.objects.create(started_at=now - timedelta(seconds=30), finished_at=now, status="ok",
                                           triggered_by="schedule", counts={"differences": 2, "found": ["a", "b"]})  # fmt: skip
    ReconciliationRun.objects.create(started_at=now, status="unreachable", error="Kite did not answer")
    common = {"run": run, "created_at": now, "seen_at": now, "exchange": "NSE", "tradingsymbol": "INFY"}
    waiting = ReconciliationIssue.objects.create(kind="position_quantity", fingerprint="a", ours={"quantity": 10},
                                                 broker={"quantity": 7}, **common)  # fmt: skip
    done = ReconciliationIssue.objects.create(kind="order_unknown", fingerprint="b", broker={"order_id": "251"},
                                              resolved=True, resolution="dismissed", **common)  # fmt: skip
    return run, waiting, done


def test_staff_read_runs_and_issues_filtered_by_resolved(staff_client, recorded):
    run, waiting, done = recorded
    runs = staff_client.get("/api/reconciliation/runs/").json()
    assert [r["status"] for r in runs["results"]] == ["unreachable", "ok"]
    assert runs["results"][1]["counts"] == {"differences": 2} and runs["results"][1]["issues"] == 2
    issues = staff_client.get("/api/reconciliation/issues/").json()["results"]
    assert {"id", "kind", "tradingsymbol", "exchange", "ours", "broker", "resolved", "created_at"} <= set(
        issues[0]
    )
    waiting_only = staff_client.get("/api/reconciliation/issues/?resolved=false").json()["results"]
    assert [(i["id"], i["kind"], i["ours"], i["broker"]) for i in waiting_only] == [
        (waiting.pk, "position_quantity", {"quantity": 10}, {"quantity": 7})]  # fmt: skip
    resolved = staff_client.get("/api/reconciliation/issues/?resolved=true").json()["results"]
    assert [(i["id"], i["resolved"], i["resolution"]) for i in resolved] == [(done.pk, True, "dismissed")]
    assert [i["id"] for i in staff_client.get("/api/reconciliation/issues/?kind=order_unknown").json()["results"]] == [
        done.pk]  # fmt: skip


@pytest.mark.parametrize(("query", "field"), [("resolved=maybe", "resolved"), ("kind=nonsense", "kind"),
                                              ("page=99", "page"), ("resolved=%00", "resolved")])  # fmt: skip
def test_bad_filters_are_a_400_that_says_why(staff_client, recorded, query, field):
    response = staff_client.get(f"/api/reconciliation/issues/?{query}")
    assert response.status_code == 400 and field in response.json()


def test_only_staff_or_a_user_with_the_view_permission_reads_them(
    client, trader_client, plain_user, recorded
):
    assert client.get("/api/reconciliation/issues/").status_code in (401, 403)
    assert trader_client.get("/api/reconciliation/issues/").status_code == 403
    assert trader_client.get("/api/reconciliation/runs/").status_code == 403
    plain_user.user_permissions.add(Permission.objects.get(codename="view_reconciliationissue"))
    assert trader_client.get("/api/reconciliation/issues/").status_code == 200
    assert trader_client.get("/api/reconciliation/runs/").status_code == 403


def test_the_api_lists_take_a_bounded_number_of_queries(
    staff_client, recorded, django_assert_max_num_queries
):
    with django_assert_max_num_queries(8):
        assert staff_client.get("/api/reconciliation/issues/").status_code == 200
    with django_assert_max_num_queries(8):
        assert staff_client.get("/api/reconciliation/runs/").status_code == 200
