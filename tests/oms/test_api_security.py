"""The OMS API as an attacker holding a login would try it, and as a risk manager would
check it: permissions, strategy isolation (another strategy's orders are a 404), the
postback endpoint, every query parameter, decimals as strings, no secrets, the schema."""

import hashlib
import json
from decimal import Decimal as D

import pytest
import yaml
from django.contrib.auth.models import Permission
from django.core.management import call_command
from django.test import override_settings
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from oms.api.serializers import PositionSerializer
from oms.models import KillSwitchEvent, Order, OrderEvent, Position, Strategy, StrategyAccess, Trade
from oms.selectors import position_kite_shape
from oms.services import order_update_from_postback
from tests.oms.helpers import place, price

pytestmark = pytest.mark.django_db

MARKET_BUY = {"exchange": "NSE", "tradingsymbol": "RELIANCE", "transaction_type": "BUY", "quantity": 10,
              "product": "MIS", "order_type": "MARKET"}  # fmt: skip
SECRET = "postback-secret-0123"


def client_for(user):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.get_or_create(user=user)[0].key}")
    return client


@pytest.fixture
def algo():
    return Strategy.objects.create(name="algo1", capital=D("1000000"))


@pytest.fixture
def bot(django_user_model, algo):
    """An API user tied to strategy algo1, who may place orders and operate the kill switch."""
    user = django_user_model.objects.create_user(username="bot", password="bot-pass-123")
    user.user_permissions.add(*Permission.objects.filter(codename__in=["place_order", "operate_kill_switch"]))
    StrategyAccess.objects.create(user=user, strategy=algo)
    return user


@pytest.fixture
def manual_order(trader, reliance):
    """A resting LIMIT order of strategy manual, placed by someone else than the bot."""
    price(reliance.instrument_token, "100")
    return place(reliance, user=trader, order_type="LIMIT", price="95").order


# --- who may do what -----------------------------------------------------------------------------

OMS_ENDPOINTS = [
    ("get", "/api/orders/"), ("post", "/api/orders/"), ("get", "/api/orders/1/"), ("patch", "/api/orders/1/"),
    ("delete", "/api/orders/1/"), ("get", "/api/trades/"), ("get", "/api/positions/"), ("get", "/api/pnl/"),
    ("get", "/api/kill-switch/"), ("post", "/api/kill-switch/"),
]  # fmt: skip


@pytest.mark.parametrize(("method", "path"), OMS_ENDPOINTS)
def test_every_oms_endpoint_needs_a_login(method, path):
    response = getattr(APIClient(), method)(path, {}, format="json")
    assert response.status_code == 401, (method, path, response.status_code)
    assert response["WWW-Authenticate"].startswith("Token")


def test_modify_and_cancel_need_the_permission(manual_order, plain_user):
    client = client_for(plain_user)
    assert client.get(f"/api/orders/{manual_order.pk}/").status_code == 200  # reading is for every login
    modify = client.patch(f"/api/orders/{manual_order.pk}/", {"price": "96"}, format="json")
    cancel = client.delete(f"/api/orders/{manual_order.pk}/")
    assert modify.status_code == 403 and cancel.status_code == 403 and "permission" in cancel.json()["detail"]
    manual_order.refresh_from_db()
    assert manual_order.status == "OPEN" and manual_order.price == D("95")
    assert (
        client.post("/api/kill-switch/", {"engaged": True, "reason": "x"}, format="json").status_code == 403
    )
    assert not KillSwitchEvent.objects.exists()


def test_another_strategys_order_is_a_404_for_a_tied_user(manual_order, bot):
    client = client_for(bot)
    events_before = OrderEvent.objects.filter(order=manual_order).count()
    for method, body in (("get", None), ("patch", {"price": "96"}), ("delete", None)):
        response = getattr(client, method)(f"/api/orders/{manual_order.pk}/", body, format="json")
        assert response.status_code == 404, (method, response.content)
        # The same answer as an order that does not exist: ids do not leak.
        missing = getattr(client, method)("/api/orders/999999/", body, format="json")
        assert missing.status_code == 404 and missing.json().keys() == response.json().keys()
    manual_order.refresh_from_db()
    assert manual_order.status == "OPEN" and manual_order.price == D("95")
    assert OrderEvent.objects.filter(order=manual_order).count() == events_before


def test_a_tied_user_lists_only_its_strategys_rows(manual_order, trader, reliance, bot):
    place(reliance, user=trader)  # a fill and a position of manual
    mine = place(reliance, user=bot).order  # a fill and a position of algo1
    client = client_for(bot)
    assert [o["id"] for o in client.get("/api/orders/").json()["results"]] == [mine.pk]
    assert client.get("/api/orders/?strategy=manual").json()["results"] == []
    assert {t["strategy"] for t in client.get("/api/trades/").json()["results"]} == {"algo1"}
    assert {p["strategy"] for p in client.get("/api/positions/").json()} == {"algo1"}
    assert {s["strategy"] for s in client.get("/api/pnl/").json()["strategies"]} == {"algo1"}
    assert client.post("/api/orders/", {**MARKET_BUY, "strategy": "manual"}, format="json").status_code == 403
    assert Order.objects.filter(strategy__name="manual").count() == 2


def test_a_tied_user_operates_only_its_own_strategys_kill_switch(bot, algo, manual):
    client = client_for(bot)
    for scope in ({}, {"strategy": "manual"}, {"strategy": "no-such-strategy"}):
        response = client.post("/api/kill-switch/", {"engaged": False, **scope}, format="json")
        assert response.status_code == 403 and "algo1" in response.json()["detail"], (scope, response.content)
    assert not KillSwitchEvent.objects.exists()
    own = client.post("/api/kill-switch/", {"engaged": True, "reason": "bot halts", "strategy": "algo1"},
                      format="json")  # fmt: skip
    assert own.status_code == 200 and own.json()["event"]["strategy"] == "algo1"
    assert KillSwitchEvent.objects.get().strategy == algo


def test_a_tied_user_sees_the_desk_state_but_not_other_strategies(bot, algo, manual, staff_user):
    from oms.killswitch import kill_switch_set

    kill_switch_set(state="HALTED", by=staff_user, reason="manual is losing", strategy=manual)
    kill_switch_set(state="REDUCING", by=staff_user, reason="algo1 flattens", strategy=algo)
    seen = client_for(bot).get("/api/kill-switch/").json()
    assert seen["state"] == "ACTIVE" and [s["strategy"] for s in seen["strategies"]] == ["algo1"]
    everything = client_for(staff_user).get("/api/kill-switch/").json()
    assert sorted(s["strategy"] for s in everything["strategies"]) == ["algo1", "manual"]


def test_order_ids_are_ascii_digits(manual_order, trader):
    client = client_for(trader)
    arabic = str(manual_order.pk).translate(str.maketrans("0123456789", "٠١٢٣٤٥٦٧٨٩"))  # int() takes these
    for path in (f"/api/orders/{arabic}/", f"/api/orders/%20{manual_order.pk}/", "/api/orders/1e1/"):
        assert client.get(path).status_code == 404, path
        assert client.delete(path).status_code == 404, path
    manual_order.refresh_from_db()
    assert manual_order.status == "OPEN"


# --- the postback endpoint -----------------------------------------------------------------------


def signed(body, secret=SECRET):
    return {**body, "checksum": hashlib.sha256(f"{body['order_id']}{body['order_timestamp']}{secret}".encode())
            .hexdigest()}  # fmt: skip


def postback(body, *, content_type="application/json", client=None):
    data = body if isinstance(body, str | bytes) else json.dumps(body)
    return (client or APIClient()).post("/api/kite/postback/", data=data, content_type=content_type)


@pytest.fixture
def kite_secret(settings):
    settings.KITE_API_SECRET = SECRET
    return SECRET


def test_a_bad_checksum_changes_nothing_on_a_known_order(kite_secret, manual_order):
    Order.objects.filter(pk=manual_order.pk).update(broker_order_id="KITE-1", broker="kite")
    body = {"order_id": "KITE-1", "order_timestamp": "2024-03-01 09:15:00", "status": "CANCELLED"}
    events = OrderEvent.objects.count()
    for checksum in (None, "", "0" * 64, signed(body, "wrong-secret")["checksum"], 12345, ["a"], {"a": 1},
                     "é" * 64, "\ud800", signed(body)["checksum"].upper()):  # fmt: skip
        attempt = body if checksum is None else {**body, "checksum": checksum}
        response = postback(attempt)
        assert response.status_code == 403, (checksum, response.content)
        assert response.json() == {"detail": "missing or bad checksum"}
    manual_order.refresh_from_db()
    assert manual_order.status == "OPEN" and OrderEvent.objects.count() == events


@pytest.mark.parametrize("body", ["[1, 2]", '"text"', "42", "null", "true", "[]"])
def test_a_postback_that_is_not_an_object_is_a_400(kite_secret, body):
    response = postback(body)
    assert response.status_code == 400 and response.json() == {"detail": "a postback is a JSON object"}
    assert not OrderEvent.objects.exists()


@pytest.mark.parametrize(
    "body",
    ["{", '{"order_id": "1",}', '{"checksum": NaN}', '{"a": Infinity}', '{"order_id": "1", "order_id": "2"}',
     b"\xff\xfe{}", "{" * 100_000, '{"n": 1' + "0" * 5000 + "}"],
)  # fmt: skip
def test_a_postback_that_is_not_json_is_a_400(kite_secret, body):
    response = postback(body)
    assert response.status_code == 400 and "JSON parse error" in response.json()["detail"]
    assert not OrderEvent.objects.exists()


def test_a_huge_postback_is_a_413_in_json(kite_secret, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 10_000
    body = signed({"order_id": "1", "order_timestamp": "t", "pad": "x" * 20_000})
    response = postback(body)
    assert response.status_code == 413 and "10000 bytes" in response.json()["detail"]
    assert not OrderEvent.objects.exists()


def test_a_form_encoded_postback_is_a_415(kite_secret):
    body = signed({"order_id": "1", "order_timestamp": "t"})
    response = postback("&".join(f"{k}={v}" for k, v in body.items()),
                        content_type="application/x-www-form-urlencoded")  # fmt: skip
    assert response.status_code == 415
    assert not OrderEvent.objects.exists()


def test_a_postback_needs_no_csrf_token_and_ignores_the_session(kite_secret, staff_user):
    browser = APIClient(enforce_csrf_checks=True)
    browser.force_login(staff_user)  # a logged-in browser's cookies ride along
    response = postback(signed({"order_id": "X1", "order_timestamp": "2024-03-01 09:15:00"}), client=browser)
    assert response.status_code == 200 and response.json() == {"status": "ok", "known": False}
    assert not response.cookies  # no session or CSRF cookie set
    assert OrderEvent.objects.get().actor == "postback"  # not the logged-in user
    assert APIClient().get("/api/kite/postback/").status_code == 405


def test_without_the_secret_every_postback_is_refused(settings):
    settings.KITE_API_SECRET = ""
    response = postback(signed({"order_id": "1", "order_timestamp": "t"}, secret=""))
    assert response.status_code == 403 and "KITE_API_SECRET" in response.json()["detail"]
    assert not OrderEvent.objects.exists()


def test_refused_postbacks_are_throttled_per_address_and_signed_ones_never(kite_secret, settings, caplog):
    settings.API_THROTTLE_ANON = "3/min"
    bad = {"order_id": "1", "order_timestamp": "t", "checksum": "0" * 64}
    assert [postback(bad).status_code for _ in range(3)] == [403, 403, 403]
    caplog.clear()
    throttled = postback(bad)
    assert throttled.status_code == 429 and int(throttled["Retry-After"]) > 0
    assert postback("[1]").status_code == 429 and postback("{").status_code == 429
    assert not [r for r in caplog.records if "checksum" in r.getMessage()]  # no log line per flood request
    other = APIClient(REMOTE_ADDR="10.1.2.3")  # another address has its own count
    assert postback(bad, client=other).status_code == 403
    for i in range(10):  # correctly signed ones pass whatever came before
        assert postback(signed({"order_id": f"X{i}", "order_timestamp": "t"})).status_code == 200
    assert not OrderEvent.objects.exclude(kind="unknown_order").exists()


# --- every query parameter a user can type -------------------------------------------------------

TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=30)
TRICKY = st.one_of(
    TEXT,
    st.sampled_from(["\x00", "OPEN\x00", "open", "OPEN,COMPLETE", ",,", "COMPLETE,NOPE", "manual", "algo1",
                     "2024-02-30", "2024-01-01", "20240101", "2024-W01-1", "0001-01-01", "9999-12-31", "٢٠٢٤-٠١-٠١",
                     "0", "-1", "1e9", "NaN", "%", "_", "'", "ß", "PUT ORDER REQ RECEIVED", "a" * 65]),
    st.integers(min_value=-(2**70), max_value=2**70).map(str),
    st.dates().map(str),
)  # fmt: skip
LIST_PARAMETERS = {
    "/api/orders/": ("strategy", "status", "day", "page", "page_size"),
    "/api/trades/": ("strategy", "day", "page", "page_size"),
    "/api/positions/": ("strategy",),
}


@pytest.fixture
def seeded(trader, reliance, algo):
    price(reliance.instrument_token, "100")
    for strategy in ("manual", "algo1"):
        place(reliance, user=trader, strategy=strategy)
        place(reliance, user=trader, strategy=strategy, order_type="LIMIT", price="95")
    place(reliance, user=trader, order_type="LIMIT", price="150")  # refused: price band


@override_settings(API_THROTTLE_USER="1000000/min")
@hypothesis_settings(
    max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_any_query_on_the_lists_is_200_or_400(trader, seeded, data):
    path = data.draw(st.sampled_from(sorted(LIST_PARAMETERS)))
    query = data.draw(st.dictionaries(st.sampled_from(LIST_PARAMETERS[path]), TRICKY, max_size=4))
    response = client_for(trader).get(path, query)
    assert response.status_code in (200, 400), (path, query, response.status_code, response.content[:300])
    body = response.json()
    if response.status_code == 400:
        assert set(body) <= set(LIST_PARAMETERS[path]), body  # names the parameter at fault
    else:
        assert isinstance(body if path == "/api/positions/" else body["results"], list)


@pytest.mark.parametrize(
    ("path", "query", "field"),
    [("/api/orders/", {"status": "OPEN\x00"}, "status"), ("/api/orders/", {"strategy": "manual\x00"}, "strategy"),
     ("/api/trades/", {"strategy": "\x00"}, "strategy"), ("/api/positions/", {"strategy": "a b"}, "strategy"),
     ("/api/trades/", {"day": "2024-02-30"}, "day"), ("/api/orders/", {"page": "0"}, "page"),
     ("/api/trades/", {"page": "abc"}, "page")],
)  # fmt: skip
def test_a_bad_filter_is_a_400_naming_it(trader, seeded, path, query, field):
    response = client_for(trader).get(path, query)
    assert response.status_code == 400 and field in response.json(), response.content


def test_the_status_filter_names_what_it_does_not_know(trader, seeded):
    client = client_for(trader)
    refused = client.get("/api/orders/", {"status": "OPEN,FILLED"})
    assert refused.status_code == 400 and "'FILLED'" in refused.json()["status"]
    assert "TRIGGER PENDING" in refused.json()["status"]  # and lists what there is
    both = client.get("/api/orders/?status=open&status=RISK%20REJECTED").json()["results"]
    assert sorted(o["status"] for o in both) == ["OPEN", "OPEN", "RISK REJECTED"]
    assert client.get("/api/orders/", {"page": "99"}).status_code == 400
    assert len(client.get("/api/orders/", {"page_size": "2"}).json()["results"]) == 2


# --- what the answers contain --------------------------------------------------------------------


def _walk(value, path=""):
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _walk(item, f"{path}.{key}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _walk(item, f"{path}[{i}]")
    else:
        yield path, value


MONEY = {"price", "trigger_price", "stop_loss", "target", "average_price", "close_price", "last_price", "pnl",
         "realised", "unrealised", "m2m", "buy_value", "sell_value", "day_buy_value", "day_sell_value", "peak_pnl",
         "max_drawdown", "turnover"}  # fmt: skip


def test_money_is_always_a_decimal_string(trader, seeded, reliance, staff_user):
    from oms.monitor import risk_monitor_run

    price(reliance.instrument_token, "101.35")
    risk_monitor_run()  # marks the positions: unrealised P&L and last_price are set
    client = client_for(staff_user)
    first = Order.objects.order_by("pk").first()
    answers = {path: client.get(path).json() for path in ("/api/orders/", f"/api/orders/{first.pk}/",
               "/api/trades/", "/api/positions/", "/api/pnl/", "/api/kill-switch/")}  # fmt: skip
    seen = set()
    for path, body in answers.items():
        for where, value in _walk(body):
            assert not isinstance(value, float), (path, where, value)
            name = where.rsplit(".", 1)[-1]
            if name in MONEY and value is not None:
                assert isinstance(value, str) and D(value) == D(value).quantize(D("0.0001")), (path, where)
                assert "E" not in value, (path, where, value)  # never exponent notation
                seen.add(name)
    assert {"price", "average_price", "last_price", "unrealised", "realised", "pnl", "turnover"} <= seen
    [position] = [p for p in answers["/api/positions/"] if p["strategy"] == "manual"]
    assert position["last_price"] == "101.3500" and position["unrealised"] == "13.5000"


def _more_rows(trader, count):
    from tests.factories import InstrumentFactory

    for i in range(count):
        strategy = Strategy.objects.get_or_create(name=f"q{i % 3}")[0]
        instrument = InstrumentFactory(is_active=True)
        price(instrument.instrument_token, "100")
        place(instrument, user=trader, strategy=strategy.name)
        place(instrument, user=trader, strategy=strategy.name, order_type="LIMIT", price="95")


@pytest.mark.parametrize("path", ["/api/orders/", "/api/trades/", "/api/positions/", "/api/pnl/",
                                  "/api/kill-switch/", "/api/orders/?status=OPEN"])  # fmt: skip
def test_the_lists_make_no_query_per_row(trader, settings, django_assert_num_queries, path):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    settings.OMS_ORDERS_PER_SECOND = 10_000  # the test places orders faster than a desk may
    client = client_for(trader)
    _more_rows(trader, 3)
    client.get(path)
    with CaptureQueriesContext(connection) as few:
        assert client.get(path).status_code == 200
    _more_rows(trader, 9)
    with django_assert_num_queries(len(few.captured_queries)):
        assert client.get(path).status_code == 200


def test_the_positions_answer_has_every_field_the_selector_gives(trader, reliance):
    price(reliance.instrument_token, "100")
    place(reliance, user=trader)
    shape = position_kite_shape(Position.objects.select_related("strategy").get())
    assert set(PositionSerializer().fields) == set(shape)  # a new field there must be added here


def test_no_secret_reaches_the_order_detail_or_the_admin(kite_secret, settings, manual_order, staff_user):
    settings.KITE_ACCESS_TOKEN = "live-access-token-0123456789"
    Order.objects.filter(pk=manual_order.pk).update(broker_order_id="KITE-7", broker="kite")
    body = signed({"order_id": "KITE-7", "order_timestamp": "2024-03-01 09:15:00", "status": "CANCELLED",
                   "status_message": f"echo {SECRET} and {settings.KITE_ACCESS_TOKEN}",
                   "meta": {"access_token": "nested-token-abcdef", "note": f"key {SECRET}"},
                   "guid": "x" * 10})  # fmt: skip
    assert postback(body).status_code == 200
    detail = client_for(staff_user).get(f"/api/orders/{manual_order.pk}/")
    page = APIClient()
    page.force_login(staff_user)
    admin = page.get(f"/admin/oms/order/{manual_order.pk}/change/")
    assert detail.status_code == 200 and admin.status_code == 200
    for text in (detail.content.decode(), admin.content.decode()):
        for secret in (SECRET, settings.KITE_ACCESS_TOKEN, "nested-token-abcdef", body["checksum"]):
            at = text.find(secret)
            assert at < 0, (secret, text[max(0, at - 300) : at + 50])
    events = detail.json()["events"]
    assert any(e["payload"].get("checksum") == "********" for e in events), events


def test_the_audit_trail_stores_nested_credentials_masked(settings, manual):
    settings.KITE_API_SECRET = SECRET
    order_update_from_postback(data={"order_id": "NOPE-1", "meta": {"access_token": "nested-token-abcdef"}})
    assert "nested-token-abcdef" not in json.dumps(OrderEvent.objects.get().payload)


def test_a_refusal_writes_its_numbers_as_people_do(trader, reliance):
    price(reliance.instrument_token, "100")
    response = client_for(trader).post("/api/orders/", {**MARKET_BUY, "order_type": "LIMIT", "price": "150"},
                                       format="json")  # fmt: skip
    assert response.status_code == 409 and response.json()["rule"] == "price_band"
    assert "±10%" in response.json()["detail"] and "E+" not in response.json()["detail"]


# --- the schema ----------------------------------------------------------------------------------

OMS_OPERATIONS = {
    "/api/orders/": {"get", "post"}, "/api/orders/{id}/": {"get", "patch", "delete"}, "/api/trades/": {"get"},
    "/api/positions/": {"get"}, "/api/pnl/": {"get"}, "/api/kill-switch/": {"get", "post"},
    "/api/kite/postback/": {"post"},
}  # fmt: skip


def test_the_schema_has_every_oms_endpoint_and_no_warnings(tmp_path):
    out = tmp_path / "schema.yaml"
    # --fail-on-warn raises on any warning of the generator; --validate checks the OpenAPI document.
    call_command("spectacular", "--fail-on-warn", "--validate", "--file", str(out))
    schema = yaml.safe_load(out.read_text())
    for path, methods in OMS_OPERATIONS.items():
        assert methods <= set(schema["paths"][path]), path
    orders_list = {p["name"] for p in schema["paths"]["/api/orders/"]["get"]["parameters"]}
    assert {"strategy", "status", "day", "page", "page_size"} <= orders_list
    position = schema["components"]["schemas"]["Position"]["properties"]
    assert position["pnl"]["type"] == "string" and position["pnl"]["format"] == "decimal"
    assert {"404"} <= set(schema["paths"]["/api/orders/{id}/"]["delete"]["responses"])
    assert "409" in schema["paths"]["/api/orders/"]["post"]["responses"]


def test_the_trades_answer_names_the_order_of_each_fill(trader, reliance):
    price(reliance.instrument_token, "100")
    order = place(reliance, user=trader).order
    [trade] = client_for(trader).get("/api/trades/").json()["results"]
    assert trade["order_id"] == order.pk and trade["trade_id"] == Trade.objects.get().trade_id
