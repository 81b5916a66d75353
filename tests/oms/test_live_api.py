"""LIVE orders end to end through the API: the orders endpoint, the services, the Kite adapter
and kiteconnect to a fake Kite REST server reached by KITE_API_URL (a real local HTTP server,
never a patched client), with a LIVE strategy."""

import json

import pytest
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from alerts.models import Alert, Kind
from oms import state
from oms.brokers.kite import KiteBroker
from oms.models import Order
from oms.updates import order_update
from tests.oms.helpers import price

# The order goes to Kite after its placement commits: committed for real.
pytestmark = pytest.mark.django_db(transaction=True)
pytest_plugins = ["tests.oms.live_fixtures"]  # kite, live, infy

MARKET_BUY = {"exchange": "NSE", "tradingsymbol": "INFY", "transaction_type": "BUY", "quantity": 10,
              "product": "MIS", "order_type": "MARKET", "strategy": "live-desk"}  # fmt: skip


@pytest.fixture
def api(trader):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=trader).key}")
    return client


def post(api, body, key):
    price(408065, "1500.05")  # the feed's last price (MARKET orders need one)
    return api.post(
        "/api/orders/", data=json.dumps(body), content_type="application/json", HTTP_IDEMPOTENCY_KEY=key
    )


def test_a_market_order_reaches_kite_once_with_its_tag_algo_id_and_market_protection(api, kite, live, infy):
    answer = post(api, MARKET_BUY, "buy-1")
    assert answer.status_code == 201, answer.content
    body = answer.json()
    [call] = kite.placements()
    assert call.path == "/orders/regular"
    assert {k: call.form[k] for k in ("tradingsymbol", "transaction_type", "quantity", "order_type", "product")} == {
        "tradingsymbol": "INFY", "transaction_type": "BUY", "quantity": "10", "order_type": "MARKET", "product": "MIS"}  # fmt: skip
    assert call.form["tag"] == f"TP{body['id']}" and call.form["algo_id"] == "NSE-ALGO-4711"
    assert call.form["market_protection"] == "-1"
    assert body["broker"] == "kite" and body["broker_order_id"] == kite.orders()[0]["order_id"]

    order = Order.objects.get(pk=body["id"])  # Kite's rows (here: a poll) say it traded
    order_update(order_id=order.pk, update=KiteBroker().find(order), source="poll", broker="kite")
    shown = api.get(f"/api/orders/{order.pk}/").json()
    assert (shown["status"], shown["filled_quantity"], shown["average_price"]) == (
        "COMPLETE",
        10,
        "1500.0500",
    )
    assert post(api, MARKET_BUY, "buy-1").status_code == 200 and len(kite.placements()) == 1  # a replay


def test_a_placement_that_times_out_is_found_by_its_tag_and_never_placed_twice(api, kite, live, infy):
    kite.fail_next("timeout", accept=True, method="POST")  # Kite places it; its answer never comes
    answer = post(api, MARKET_BUY, "buy-2")
    assert answer.status_code == 201
    [placed] = kite.orders()
    assert answer.json()["broker_order_id"] == placed["order_id"] and answer.json()["status"] == "COMPLETE"
    again = post(api, MARKET_BUY, "buy-2")
    assert again.status_code == 200 and again.json()["id"] == answer.json()["id"]
    assert len(kite.placements()) == 1 and len(kite.orders()) == 1


def test_a_placement_kite_never_got_is_unknown_until_the_retry_sends_it_once(api, kite, live, infy):
    kite.fail_next("timeout", method="POST")
    first = post(api, MARKET_BUY, "buy-3").json()
    assert first["status"] == state.PUT_ORDER_REQ_RECEIVED and first["broker_order_id"] is None
    events = api.get(f"/api/orders/{first['id']}/").json()["events"]
    assert events[-1]["kind"] == "broker_error" and events[-1]["message"].startswith("unknown at broker")

    retried = post(api, MARKET_BUY, "buy-3")  # the strategy retries with the same key
    assert retried.status_code == 200 and retried.json()["broker_order_id"] == kite.orders()[0]["order_id"]
    post(api, MARKET_BUY, "buy-3")
    assert len(kite.orders()) == 1 and Order.objects.count() == 1


def test_an_expired_token_rejects_with_kite_login_needed_and_raises_the_alert(api, kite, live, infy):
    kite.fail_next("token", method="POST")  # 403 TokenException: the morning rollover
    answer = post(api, MARKET_BUY, "buy-4")
    body = answer.json()
    assert answer.status_code == 201 and body["status"] == "REJECTED"
    assert body["status_message"].startswith("Kite login needed")
    [alert] = Alert.objects.filter(kind=Kind.KITE_LOGIN)
    assert alert.subject.startswith("Kite login needed") and f"LIVE order {body['id']}" in alert.body
    assert len(kite.calls) == 1 and kite.access_token not in alert.body


def test_kites_429_answers_429_with_the_rate_rule(api, kite, live, infy):
    kite.fail_next("429", method="POST")
    answer = post(api, MARKET_BUY, "buy-5")
    assert answer.status_code == 429 and answer.json()["rule"] == "rate_limit"
    assert answer.json()["order"]["status"] == "REJECTED" and kite.orders() == []


def test_a_cancel_or_modify_kite_does_not_answer_is_a_503_outcome_unknown(api, kite, live, infy):
    limit = {**MARKET_BUY, "order_type": "LIMIT", "price": "1490.00"}
    order_id = post(api, limit, "limit-1").json()["id"]
    kite.fail_next("timeout", method="DELETE")
    cancel = api.delete(f"/api/orders/{order_id}/")
    assert cancel.status_code == 503 and "cancel outcome unknown" in cancel.json()["detail"]
    kite.fail_next("503", method="PUT")
    modify = api.patch(f"/api/orders/{order_id}/", data=json.dumps({"price": "1491.00"}),
                       content_type="application/json")  # fmt: skip
    assert modify.status_code == 503 and "modify outcome unknown" in modify.json()["detail"]
    assert api.delete(f"/api/orders/{order_id}/").json()["status"] == "CANCEL PENDING"
