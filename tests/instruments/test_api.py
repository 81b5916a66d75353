import pytest
from django.test import override_settings
from rest_framework.authtoken.models import Token

from instruments.models import Instrument
from tests.factories import InstrumentFactory, NiftyOptionFactory

pytestmark = pytest.mark.django_db
LIST = "/api/instruments/"


def test_anonymous_is_refused_everywhere_with_401(client):
    """Settings put token authentication first: an anonymous call is a 401 that says how
    to authenticate (``WWW-Authenticate: Token``), never a bare 403."""
    InstrumentFactory(instrument_token=738561)
    responses = [client.get(url) for url in ("/api/", LIST, f"{LIST}738561/", f"{LIST}stats/")]
    responses += [
        client.post(url, {"tokens": [738561]}, content_type="application/json")
        for url in (f"{LIST}activate/", f"{LIST}deactivate/", f"{LIST}sync/")
    ]
    for response in responses:
        assert response.status_code == 401, response.request["PATH_INFO"]
        assert response["WWW-Authenticate"] == "Token"
    assert not Instrument.objects.filter(is_active=True).exists()


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


def test_staff_can_queue_a_sync(staff_client, django_capture_on_commit_callbacks):
    from django_q.brokers import get_broker

    broker = get_broker()
    broker.purge_queue()
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        response = staff_client.post(
            f"{LIST}sync/", {"source": "kite", "filter": "nifty"}, content_type="application/json"
        )
    assert response.status_code == 202 and response.json()["task_name"] == "sync kite by operator"
    assert len(callbacks) == 1 and broker.queue_size() == 1  # enqueued once the request's work committed
    broker.purge_queue()
    for payload in ({"source": "nse"}, {"filter": "midcap"}, {"url": "not a url"}):
        response = staff_client.post(f"{LIST}sync/", payload, content_type="application/json")
        assert response.status_code == 400, payload
    assert broker.queue_size() == 0


# --- permissions: the admin's rules --------------------------------------------------------------


@pytest.fixture
def staff_without_permissions(client, django_user_model):
    user = django_user_model.objects.create_user(username="clerk", password="clerk-pass-123", is_staff=True)
    client.force_login(user)
    return client


def grant(user, *codenames):
    from django.contrib.auth.models import Permission

    user.user_permissions.add(
        *Permission.objects.filter(content_type__app_label="instruments", codename__in=codenames)
    )


def test_staff_status_alone_grants_nothing(staff_without_permissions, django_capture_on_commit_callbacks):
    InstrumentFactory(instrument_token=738561, is_active=True)
    InstrumentFactory(instrument_token=101)
    for action, payload in (
        ("activate", {"tokens": [101]}),
        ("deactivate", {"tokens": [738561]}),
        ("sync", {}),
    ):
        with django_capture_on_commit_callbacks(execute=True) as callbacks:
            response = staff_without_permissions.post(
                f"{LIST}{action}/", payload, content_type="application/json"
            )
        assert response.status_code == 403, action
        assert callbacks == []
    assert set(Instrument.objects.filter(is_active=True).values_list("instrument_token", flat=True)) == {
        738561
    }
    # As in the admin, where the same user cannot use the actions either.
    assert staff_without_permissions.get("/admin/instruments/syncrun/start/").status_code == 403


def test_the_model_permissions_grant_what_they_say(
    client, django_user_model, django_capture_on_commit_callbacks
):
    InstrumentFactory(instrument_token=101)
    user = django_user_model.objects.create_user(
        username="strategy", password="strategy-pass-123"
    )  # not staff
    client.force_login(user)
    grant(user, "change_instrument")
    assert (
        client.post(f"{LIST}activate/", {"tokens": [101]}, content_type="application/json").status_code == 200
    )
    assert (
        client.post(f"{LIST}deactivate/", {"tokens": [101]}, content_type="application/json").status_code
        == 200
    )
    assert client.post(f"{LIST}sync/", {}, content_type="application/json").status_code == 403
    grant(user, "run_sync")
    user = django_user_model.objects.get(pk=user.pk)  # permissions are cached per user object
    client.force_login(user)
    with django_capture_on_commit_callbacks(execute=True):
        assert client.post(f"{LIST}sync/", {}, content_type="application/json").status_code == 202
    from django_q.brokers import get_broker

    get_broker().purge_queue()


def test_a_superuser_has_every_permission(staff_client):
    InstrumentFactory(instrument_token=101)
    assert (
        staff_client.post(f"{LIST}activate/", {"tokens": [101]}, content_type="application/json").status_code
        == 200
    )


# --- search: ranking, and input that must never be a 500 ------------------------------------------


def test_search_ranks_exact_matches_first_then_prefixes(trader_client):
    etfs = [InstrumentFactory(tradingsymbol=f"{s}NIFTY", name=f"{n} NIFTY 50 ETF")
            for s, n in (("A", "AXIS"), ("H", "HDFC"), ("N", "NIPPON"), ("I", "ICICI"))]  # fmt: skip
    index = InstrumentFactory(tradingsymbol="NIFTY 50", name="NIFTY 50", segment="INDICES", exchange="NSE")
    prefixed = InstrumentFactory(
        tradingsymbol="NIFTY 50 EQUAL WEIGHT", name="NIFTY50 EQL WGT", segment="INDICES"
    )
    named = InstrumentFactory(tradingsymbol="ZNIFTY", name="NIFTY 50 VALUE 20")
    symbols = [r["tradingsymbol"] for r in trader_client.get(LIST, {"search": "nifty 50"}).json()["results"]]
    assert symbols[0] == index.tradingsymbol
    assert set(symbols[1:3]) == {prefixed.tradingsymbol, named.tradingsymbol}
    assert symbols[3:] == sorted(e.tradingsymbol for e in etfs)
    token = trader_client.get(LIST, {"search": str(index.instrument_token)}).json()["results"]
    assert [r["tradingsymbol"] for r in token] == ["NIFTY 50"]


@pytest.mark.parametrize(
    "term",
    ["²", "١٢٣", "1" * 5000, "9" * 19, str(2**63), "\x00", "NIFTY\x00 50", "%", "_", "'; DROP TABLE x; --"],
)
def test_search_input_that_used_to_break_is_answered(trader_client, term):
    InstrumentFactory(tradingsymbol="RELIANCE")
    response = trader_client.get(LIST, {"search": term})
    assert response.status_code in (200, 400), response.content[:200]


def test_tokens_beyond_a_bigint_are_a_404_or_a_400(trader_client, staff_client):
    for token in (str(2**63), "9" * 19, "9" * 25, "9" * 5000):
        assert trader_client.get(f"{LIST}{token}/").status_code == 404, token[:30]
    for token in (2**63, 10**30):
        response = staff_client.post(f"{LIST}activate/", {"tokens": [token]}, content_type="application/json")
        assert response.status_code == 400 and "tokens" in response.json()


def test_an_impossible_page_is_a_400_that_says_why(trader_client):
    InstrumentFactory.create_batch(3)
    assert trader_client.get(LIST, {"page_size": 2, "page": 2}).json()["count"] == 3
    for page in ("3", "0", "-1", "abc", "1.5", "9" * 40):
        response = trader_client.get(LIST, {"page_size": 2, "page": page})
        assert response.status_code == 400 and "Invalid page" in response.json()["page"][0], page
    assert len(trader_client.get(LIST, {"page_size": 2}).json()["results"]) == 2
    assert trader_client.get(LIST, {"page_size": 100000}).status_code == 200  # capped at 1000


# --- the API's root ---------------------------------------------------------------------------------


def test_the_api_root_describes_the_api(trader_client):
    body = trader_client.get("/api/", HTTP_ACCEPT="application/json").json()
    assert body["instruments"].endswith("/api/instruments/")
    assert body["ticks_latest"].endswith("/api/ticks/latest/")
    assert body["schema"].endswith("/api/schema/") and body["docs"].endswith("/api/docs/")
    assert "Authorization: Token <key>" in body["authentication"]
    page = trader_client.get("/api/", HTTP_ACCEPT="text/html").content.decode()
    assert "Authorization: Token &lt;key&gt;" in page
    assert "/api/ticks/latest/" in page and "max_age" in page
    assert "The default basic root view" not in page


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
