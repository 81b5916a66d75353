"""The orders API: placement with idempotency, refusals, lists, modify, cancel, postbacks."""

import hashlib
import json
import threading
from decimal import Decimal as D

import pytest
from django.db import connection
from django.utils import timezone
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from oms import state
from oms.models import Order, OrderEvent, Strategy, StrategyAccess
from tests.oms.helpers import price

pytestmark = pytest.mark.django_db

MARKET_BUY = {"exchange": "NSE", "tradingsymbol": "RELIANCE", "transaction_type": "BUY", "quantity": 10,
              "product": "MIS", "order_type": "MARKET"}  # fmt: skip


@pytest.fixture
def api(trader):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=trader).key}")
    return client


def post(api, body, key=None):
    headers = {"HTTP_IDEMPOTENCY_KEY": key} if key else {}
    return api.post("/api/orders/", data=json.dumps(body), content_type="application/json", **headers)


def test_authentication_comes_first(reliance):
    response = APIClient().post("/api/orders/", MARKET_BUY, format="json")
    assert response.status_code == 401 and "WWW-Authenticate" in response
    bad = APIClient()
    bad.credentials(HTTP_AUTHORIZATION="Token not-a-real-token")
    assert bad.post("/api/orders/", MARKET_BUY, format="json").status_code == 401


def test_placing_needs_the_permission(reliance, plain_user):
    client = APIClient()
    client.force_authenticate(plain_user)
    response = client.post("/api/orders/", MARKET_BUY, format="json")
    assert response.status_code == 403 and "permission" in response.json()["detail"]


def test_a_market_buy_answers_201_with_the_filled_order_as_decimal_strings(api, reliance):
    price(reliance.instrument_token, "2500.05")
    response = post(api, MARKET_BUY, key="buy-1")
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["status"] == "COMPLETE" and body["filled_quantity"] == 10 and body["pending_quantity"] == 0
    assert body["average_price"] == "2500.0500" and body["strategy"] == "manual" and body["broker_order_id"]
    assert body["tradingsymbol"] == "RELIANCE" and body["instrument_token"] == 738561


def test_json_prices_never_pass_through_float(api, reliance):
    price(reliance.instrument_token, "100")
    response = api.post("/api/orders/", data='{"instrument_token": 738561, "transaction_type": "BUY", "quantity": 1,'
                        '"product": "MIS", "order_type": "LIMIT", "price": 99.95000000000000001}',
                        content_type="application/json")  # fmt: skip
    assert (
        response.status_code == 400 and "price" in response.json()
    )  # more than 4 places: refused, not rounded
    response = api.post("/api/orders/", data='{"instrument_token": 738561, "transaction_type": "BUY", "quantity": 1,'
                        '"product": "MIS", "order_type": "LIMIT", "price": 99.95}', content_type="application/json")  # fmt: skip
    assert response.status_code == 201 and Order.objects.get().price == D("99.95")


def test_a_replay_is_the_same_order_and_a_different_body_is_422(api, reliance):
    price(reliance.instrument_token, "100")
    first = post(api, MARKET_BUY, key="same")
    again = post(api, MARKET_BUY, key="same")
    assert first.status_code == 201 and again.status_code == 200 and again.json()["id"] == first.json()["id"]
    other = post(api, {**MARKET_BUY, "quantity": 11}, key="same")
    assert other.status_code == 422 and "different order" in other.json()["detail"]
    assert Order.objects.count() == 1
    unkeyed = [post(api, MARKET_BUY).json()["id"] for _ in range(2)]
    assert len(set(unkeyed)) == 2  # no header: a fresh key each time


def test_a_risk_refusal_is_a_4xx_with_the_rule(api, reliance):
    price(reliance.instrument_token, "100")
    response = post(api, {**MARKET_BUY, "order_type": "LIMIT", "price": "150"}, key="far")
    assert response.status_code == 409
    body = response.json()
    assert body["rule"] == "price_band" and "price band" in body["detail"]
    assert body["order"]["status"] == "RISK REJECTED"
    assert post(api, {**MARKET_BUY, "order_type": "LIMIT", "price": "150"}, key="far").status_code == 409


@pytest.mark.parametrize(
    ("change", "field"),
    [({"quantity": 0}, "quantity"), ({"order_type": "LIMIT"}, "price"), ({"price": "10"}, "price"),
     ({"order_type": "SL", "price": "10"}, "trigger_price"), ({"transaction_type": "HOLD"}, "transaction_type"),
     ({"price": "abc", "order_type": "LIMIT"}, "price"), ({"tag": "x" * 21}, "tag")],
)  # fmt: skip
def test_bad_requests_are_400_with_the_field(api, reliance, change, field):
    response = post(api, {**MARKET_BUY, **change})
    assert response.status_code == 400 and field in response.json()


def test_an_unknown_instrument_or_strategy_is_400(api, reliance):
    assert post(api, {**MARKET_BUY, "tradingsymbol": "NOPE"}).status_code == 400
    assert post(api, {**MARKET_BUY, "strategy": "nope"}).status_code == 400


def test_list_detail_modify_cancel(api, reliance):
    price(reliance.instrument_token, "100")
    order_id = post(api, {**MARKET_BUY, "order_type": "LIMIT", "price": "95"}).json()["id"]
    listed = api.get("/api/orders/?status=OPEN").json()
    assert [o["id"] for o in listed["results"]] == [order_id]
    assert api.get("/api/orders/?day=not-a-day").status_code == 400
    detail = api.get(f"/api/orders/{order_id}/").json()
    assert detail["events"][0]["kind"] == "placed"
    modified = api.patch(f"/api/orders/{order_id}/", {"price": "96.00"}, format="json")
    assert modified.status_code == 200 and modified.json()["price"] == "96.0000"
    cancelled = api.delete(f"/api/orders/{order_id}/")
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "CANCELLED"
    assert api.delete(f"/api/orders/{order_id}/").status_code == 400  # already cancelled
    assert api.delete("/api/orders/999999/").status_code == 404


def test_positions_trades_and_pnl_in_kites_shape(api, reliance):
    price(reliance.instrument_token, "100")
    post(api, MARKET_BUY)
    price(reliance.instrument_token, "103")
    post(api, {**MARKET_BUY, "transaction_type": "SELL"})
    [position] = api.get("/api/positions/").json()
    assert (
        position["quantity"] == 0
        and position["realised"] == "30.0000"
        and position["tradingsymbol"] == "RELIANCE"
    )
    assert {
        "average_price",
        "last_price",
        "pnl",
        "unrealised",
        "m2m",
        "buy_quantity",
        "sell_quantity",
    } <= set(position)
    trades = api.get("/api/trades/").json()["results"]
    assert len(trades) == 2 and {t["price"] for t in trades} == {"100.0000", "103.0000"}
    pnl = api.get("/api/pnl/").json()
    assert pnl["realised"] == "30.0000" and pnl["strategies"][0]["strategy"] == "manual"


def test_a_user_tied_to_a_strategy_sees_and_trades_only_it(api, trader, reliance, django_user_model):
    price(reliance.instrument_token, "100")
    post(api, MARKET_BUY)  # on manual
    algo = Strategy.objects.create(name="algo1")
    bot = django_user_model.objects.create_user(username="bot")
    bot.user_permissions.add(*trader.user_permissions.all())
    StrategyAccess.objects.create(user=bot, strategy=algo)
    client = APIClient()
    client.force_authenticate(bot)
    assert client.get("/api/orders/").json()["results"] == []
    response = client.post("/api/orders/", MARKET_BUY, format="json")
    assert response.status_code == 201 and response.json()["strategy"] == "algo1"
    assert client.post("/api/orders/", {**MARKET_BUY, "strategy": "manual"}, format="json").status_code == 403


def test_the_kill_switch_over_the_api(api, trader, reliance):
    from django.contrib.auth.models import Permission

    price(reliance.instrument_token, "100")
    assert api.post("/api/kill-switch/", {"engaged": True, "reason": "x"}, format="json").status_code == 403
    trader.user_permissions.add(Permission.objects.get(codename="operate_kill_switch"))
    assert api.post("/api/kill-switch/", {"engaged": True}, format="json").status_code == 400  # no reason
    engaged = api.post("/api/kill-switch/", {"engaged": True, "reason": "desk test"}, format="json")
    assert engaged.status_code == 200 and engaged.json()["state"] == "HALTED"
    refused = post(api, MARKET_BUY)
    assert refused.status_code == 409 and refused.json()["rule"] == "kill_switch"
    api.post("/api/kill-switch/", {"engaged": False}, format="json")
    assert api.get("/api/kill-switch/").json()["engaged"] is False
    assert post(api, MARKET_BUY).json()["status"] == "COMPLETE"


def test_engaging_with_cancel_and_square_off_flattens_the_desk(api, trader, reliance):
    from django.contrib.auth.models import Permission

    trader.user_permissions.add(Permission.objects.get(codename="operate_kill_switch"))
    price(reliance.instrument_token, "100")
    post(api, MARKET_BUY)
    resting = post(api, {**MARKET_BUY, "order_type": "LIMIT", "price": "95"}).json()["id"]
    body = api.post("/api/kill-switch/", {"engaged": True, "reason": "flatten", "cancel_open": True,
                                          "square_off": True}, format="json").json()  # fmt: skip
    assert body["event"]["result"] == {"cancelled": 1, "cancel_failed": 0, "square_off_orders": 1,
                                       "square_off_refused": 0}  # fmt: skip
    assert Order.objects.get(pk=resting).status == "CANCELLED"
    [position] = api.get("/api/positions/").json()
    assert position["quantity"] == 0


def _signed(order_id, timestamp, secret):
    return hashlib.sha256(f"{order_id}{timestamp}{secret}".encode()).hexdigest()


def test_postbacks_are_verified_by_their_checksum(settings, manual, reliance):
    settings.KITE_API_SECRET = "postback-secret-123"
    client = APIClient(enforce_csrf_checks=True)
    body = {"order_id": "220303000308932", "order_timestamp": "2022-03-03 09:24:25", "status": "COMPLETE"}
    assert client.post("/api/kite/postback/", body, format="json").status_code == 403  # missing
    bad = {**body, "checksum": "0" * 64}
    assert client.post("/api/kite/postback/", bad, format="json").status_code == 403
    assert not OrderEvent.objects.exists()
    good = {**body, "checksum": _signed(body["order_id"], body["order_timestamp"], "postback-secret-123")}
    response = client.post("/api/kite/postback/", good, format="json")
    assert response.status_code == 200 and response.json() == {"status": "ok", "known": False}
    event = OrderEvent.objects.get()
    assert event.kind == "unknown_order" and event.payload["checksum"] == "********"


@pytest.mark.django_db(transaction=True)
def test_concurrent_requests_with_one_key_make_one_order(trader, reliance):
    price(reliance.instrument_token, "100")
    token = Token.objects.create(user=trader).key
    codes: list[int] = []
    barrier = threading.Barrier(6)

    def one():
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
        barrier.wait()
        try:
            codes.append(
                post(client, {**MARKET_BUY, "order_type": "LIMIT", "price": "95"}, key="race").status_code
            )
        finally:
            connection.close()

    threads = [threading.Thread(target=one) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(codes) == [200] * 5 + [201]
    assert Order.objects.filter(idempotency_key="race").count() == 1
    assert Order.objects.get().status == state.OPEN


def test_pnl_is_shown_gross_and_net_of_charges(api, reliance):
    from oms.charges import charges_for_day
    from oms.models import Strategy

    price(reliance.instrument_token, "2500.00")
    post(api, MARKET_BUY)
    price(reliance.instrument_token, "2510.00")
    post(api, {**MARKET_BUY, "transaction_type": "SELL"})
    body = api.get("/api/pnl/").json()
    expected = charges_for_day(strategy=Strategy.objects.get(name="manual"), day=timezone.localdate()).total
    assert expected > 0
    assert D(body["charges"]) == expected and D(body["net_pnl"]) == D(body["pnl"]) - expected
    [row] = body["strategies"]
    assert D(row["pnl"]) == D("100.0000") and D(row["net_pnl"]) == D("100") - expected
