import pytest
from django.test import override_settings
from rest_framework.authtoken.models import Token

from instruments.models import Instrument
from tests.factories import InstrumentFactory, NiftyOptionFactory

pytestmark = pytest.mark.django_db
LIST = "/api/instruments/"


def test_anonymous_is_refused_everywhere(client):
    InstrumentFactory(instrument_token=738561)
    for url in (LIST, f"{LIST}738561/", f"{LIST}stats/"):
        assert client.get(url).status_code in (401, 403)
    for url in (f"{LIST}activate/", f"{LIST}deactivate/", f"{LIST}sync/"):
        assert client.post(url, {"tokens": [738561]}, content_type="application/json").status_code in (
            401,
            403,
        )


def test_non_staff_can_read_but_not_switch_or_sync(trader_client):
    InstrumentFactory(instrument_token=738561)
    assert trader_client.get(LIST).status_code == 200
    response = trader_client.post(f"{LIST}activate/", {"tokens": [738561]}, content_type="application/json")
    assert response.status_code == 403
    assert trader_client.post(f"{LIST}sync/", {}, content_type="application/json").status_code == 403
    assert not Instrument.objects.filter(is_active=True).exists()


def test_token_authentication(client, plain_user):
    token = Token.objects.create(user=plain_user)
    InstrumentFactory()
    response = client.get(LIST, HTTP_AUTHORIZATION=f"Token {token.key}")
    assert response.status_code == 200 and response.json()["count"] == 1


def test_list_filters_search_and_decimals_as_strings(trader_client, django_assert_max_num_queries):
    InstrumentFactory(tradingsymbol="RELIANCE", name="RELIANCE INDUSTRIES", last_price="2400.55")
    InstrumentFactory(tradingsymbol="TCS", name="TATA CONSULTANCY SERVICES")
    NiftyOptionFactory.create_batch(3, is_active=True)
    InstrumentFactory(tradingsymbol="GONE", is_listed=False)
    with django_assert_max_num_queries(4):
        body = trader_client.get(LIST).json()
    assert body["count"] == 5  # listed only by default
    reliance = next(r for r in body["results"] if r["tradingsymbol"] == "RELIANCE")
    assert reliance["last_price"] == "2400.5500"
    assert trader_client.get(LIST, {"search": "REL"}).json()["count"] == 1
    assert trader_client.get(LIST, {"search": "consult"}).json()["count"] == 1
    assert (
        trader_client.get(LIST, {"exchange": "nfo", "instrument_type": "CE", "name": "NIFTY"}).json()["count"]
        == 3
    )
    assert trader_client.get(LIST, {"is_active": "true"}).json()["count"] == 3
    assert (
        trader_client.get(LIST, {"expiry_from": "2099-01-01", "expiry_to": "2099-12-31"}).json()["count"] == 3
    )
    assert trader_client.get(LIST, {"listed": "false"}).json()["results"][0]["tradingsymbol"] == "GONE"


def test_retrieve_by_token(trader_client):
    InstrumentFactory(instrument_token=738561, tradingsymbol="OLD", is_listed=False)
    InstrumentFactory(instrument_token=738561, tradingsymbol="RELIANCE")
    assert trader_client.get(f"{LIST}738561/").json()["tradingsymbol"] == "RELIANCE"
    assert trader_client.get(f"{LIST}1/").status_code == 404


def test_activate_and_deactivate(staff_client):
    a, b = InstrumentFactory(instrument_token=101), InstrumentFactory(instrument_token=201)
    InstrumentFactory(instrument_token=301, is_listed=False)
    response = staff_client.post(
        f"{LIST}activate/", {"tokens": [101, 201, 301, 999]}, content_type="application/json"
    )
    assert response.status_code == 200
    body = response.json()
    assert body["changed"] == 2 and body["not_found"] == [301, 999] and body["active_count"] == 2
    response = staff_client.post(f"{LIST}deactivate/", {"tokens": [101]}, content_type="application/json")
    assert response.json()["changed"] == 1
    a.refresh_from_db(), b.refresh_from_db()
    assert not a.is_active and b.is_active


def test_activate_validates_input(staff_client):
    for payload in ({}, {"tokens": []}, {"tokens": ["abc"]}, {"tokens": 5}):
        assert (
            staff_client.post(f"{LIST}activate/", payload, content_type="application/json").status_code == 400
        )


@override_settings(KITE_TICKER_MAX_CONNECTIONS=1, KITE_TICKER_MAX_PER_CONNECTION=1)
def test_activate_past_the_limit_is_409(staff_client):
    InstrumentFactory(instrument_token=101), InstrumentFactory(instrument_token=201)
    response = staff_client.post(f"{LIST}activate/", {"tokens": [101, 201]}, content_type="application/json")
    assert response.status_code == 409
    assert "limit of 1" in response.json()["detail"]
    assert not Instrument.objects.filter(is_active=True).exists()


def test_stats(trader_client):
    InstrumentFactory(segment="INDICES", tradingsymbol="NIFTY 50", is_active=True)
    InstrumentFactory()
    NiftyOptionFactory.create_batch(2)
    NiftyOptionFactory(name="RELIANCE", instrument_type="FUT", segment="NFO-FUT")
    InstrumentFactory(exchange="MCX", segment="MCX-FUT", instrument_type="FUT", name="CRUDEOIL")
    InstrumentFactory(exchange="CDS", segment="CDS-FUT", instrument_type="FUT", name="USDINR")
    body = trader_client.get(f"{LIST}stats/").json()
    assert body["listed"] == 7 and body["active"] == 1 and body["feed_capacity"] == 9000
    classes = body["by_asset_class"]
    assert classes["index_options"]["listed"] == 2
    assert classes["equity_futures"]["listed"] == 1
    assert classes["index"] == {"listed": 1, "active": 1}
    assert classes["equity_cash"]["listed"] == 1
    assert classes["commodity"]["listed"] == 1 and classes["currency"]["listed"] == 1
    assert body["by_exchange"]["NFO"]["listed"] == 3
    assert "last_sync" in body


def test_staff_can_queue_a_sync(staff_client):
    from django_q.brokers import get_broker

    broker = get_broker()
    queued = broker.queue_size()
    response = staff_client.post(
        f"{LIST}sync/", {"source": "kite", "filter": "nifty"}, content_type="application/json"
    )
    assert response.status_code == 202 and response.json()["task_id"]
    assert broker.queue_size() == queued + 1
    broker.purge_queue()
    assert (
        staff_client.post(f"{LIST}sync/", {"source": "nse"}, content_type="application/json").status_code
        == 400
    )


def test_openapi_schema_and_docs(trader_client):
    schema = trader_client.get("/api/schema/")
    assert schema.status_code == 200
    assert b"/api/instruments/activate/" in schema.content
    docs = trader_client.get("/api/docs/")
    assert docs.status_code == 200 and b"swagger" in docs.content.lower()


def test_list_rows_are_exactly_what_the_serializer_gives(trader_client):
    from instruments.api.serializers import InstrumentSerializer

    InstrumentFactory(last_price="2400.5", tick_size="0.05", strike="0", delisted_at=None)
    NiftyOptionFactory(strike="24050.25", is_listed=False, delisted_at="2026-01-02T03:04:05Z")
    for listed in ("true", "false"):
        row = trader_client.get(LIST, {"listed": listed}).json()["results"][0]
        instrument = Instrument.objects.get(pk=row["id"])
        assert row == InstrumentSerializer(instrument).data
