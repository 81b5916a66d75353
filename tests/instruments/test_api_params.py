"""Whatever a user types into the instrument API's query parameters is answered with 200
or 400, never a 500 (property-based: hypothesis picks the parameters and values)."""

import pytest
from django.test import override_settings
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.factories import InstrumentFactory, NiftyOptionFactory

pytestmark = pytest.mark.django_db

PARAMETERS = (
    "exchange", "segment", "instrument_type", "name", "expiry_from", "expiry_to", "is_active", "listed",
    "source", "search", "page", "page_size",
)  # fmt: skip
# Anything typeable (no lone surrogates: they cannot be sent in a URL), with extra weight
# on what parsers trip over: digits of every script, huge numbers, dates, NUL, commas.
TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=40)
TRICKY = st.one_of(
    TEXT,
    st.sampled_from(
        [
            "²",
            "٣",
            "Ⅻ",
            "\x00",
            "NIFTY\x00",
            ",",
            ",,NSE,",
            "true",
            "false",
            "2099-12-31",
            "2024-02-30",
            "0",
            "-1",
            "1e9",
            "NaN",
            "%",
            "_",
            "\\",
            "'",
            "NIFTY 50",
        ]
    ),  # fmt: skip
    st.integers(min_value=-(2**70), max_value=2**70).map(str),
    st.integers(min_value=1, max_value=6000).map(lambda n: "7" * n),
    st.dates().map(str),
)
QUERIES = st.dictionaries(st.sampled_from(PARAMETERS), TRICKY, max_size=5)


@pytest.fixture
def seeded():
    InstrumentFactory(tradingsymbol="NIFTY 50", name="NIFTY 50", segment="INDICES")
    InstrumentFactory(tradingsymbol="RELIANCE", name="RELIANCE INDUSTRIES", is_active=True)
    NiftyOptionFactory.create_batch(3)
    InstrumentFactory(tradingsymbol="GONE", is_listed=False)


# The per-user API throttle (1200/min by default) would answer 429 to a long run.
@override_settings(API_THROTTLE_USER="1000000/min")
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(query=QUERIES)
def test_any_query_is_200_or_400(trader_client, seeded, query):
    response = trader_client.get("/api/instruments/", query)
    assert response.status_code in (200, 400), (query, response.status_code, response.content[:300])
    body = response.json()
    if response.status_code == 200:
        assert isinstance(body["results"], list) and body["count"] >= len(body["results"])
    else:
        assert body  # says which parameter and why


@override_settings(API_THROTTLE_USER="1000000/min")
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(term=TRICKY)
def test_any_admin_search_is_answered(staff_client, seeded, term):
    response = staff_client.get("/admin/instruments/instrument/", {"q": term})
    assert response.status_code in (200, 302, 400), (term, response.status_code)
